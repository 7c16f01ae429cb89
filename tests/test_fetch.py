"""The thin download step of `fetch-official`, against a real HTTP server on localhost."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.errors import MiniGPTError
from model.weights.fetch import download_url, fetch_official


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "eva_vit_g.pth").write_bytes(b"x" * 3_000_000)
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_streams_to_the_final_name(server: str, tmp_path: Path) -> None:
    target = download_url(f"{server}/eva_vit_g.pth", tmp_path / "eva_vit_g.pth")
    assert target.read_bytes() == b"x" * 3_000_000
    assert not list(tmp_path.glob("*.partial"))


def test_a_failed_download_leaves_no_file_and_says_which_url(server: str, tmp_path: Path) -> None:
    out = tmp_path / "downloads"
    out.mkdir()
    with pytest.raises(MiniGPTError, match=r"cannot download .*/missing\.pth"):
        download_url(f"{server}/missing.pth", out / "missing.pth")
    assert list(out.iterdir()) == []


def test_unknown_checkpoint_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MiniGPTError, match="unknown checkpoint"):
        fetch_official(tmp_path, checkpoint="stage9")
