"""Run the ML backend as a real process (`minigpt-annotate serve` or a WSGI server) for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import requests
from patience import HANG_S

from model.synthetic.shapes_model import SHIPPED_DIR


def serve_command(port: int, *extra: str, model: str | os.PathLike = SHIPPED_DIR) -> list[str]:
    """`minigpt-annotate serve` on 127.0.0.1:port with the shipped shapes model on CPU."""
    return [
        sys.executable,
        "-m",
        "minigpt_annotate",
        "serve",
        "--model",
        str(model),
        "--device",
        "cpu",
        "--port",
        str(port),
        *extra,
    ]


@contextlib.contextmanager
def running_backend(
    command: Sequence[str], port: int, log_path: Path, env: Mapping[str, str], timeout: float = HANG_S
) -> Iterator[str]:
    """Start `command`, wait until GET /health answers, yield the base URL; stop the process afterwards.

    A process that exits fails at once with the end of its log; one that stays silent past `timeout` (a hang: it
    starts in seconds) fails the same way.
    """
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            list(command), env={**env, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if requests.get(f"{url}/health", timeout=2).ok:
                        break
                except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still loading the model
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} did not come up:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
