"""The package structure holds: import-linter's contracts (pyproject.toml, [tool.importlinter]), and the two entry
points that must stay light start without torch: the command line's help, and the desktop app on a remote model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_process import running_backend, serve_command
from ls_harness import free_port
from patience import HANG_S

from model.synthetic.shapes import make_shapes

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "ray")  # ray: the scale extra, imported only by --engine ray


def test_import_contracts_hold() -> None:
    """The layers (minigpt_annotate over ml_backend | annotator | autolabel over label_studio_access over model), a
    Qt-free annotator.core, no imports between surfaces, and a model core without GUI or web-server imports.
    Function-level imports count."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.is_file(), f"{lint_imports} is missing: install the dev extra (pip install -e '.[dev]')"
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _imported_modules(stderr: str) -> set[str]:
    """Module names from `python -X importtime` output: 'import time: self | cumulative | name'."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


@pytest.mark.parametrize(
    "args", [["--help"], ["gui", "--help"], ["serve", "--help"], ["autolabel", "--help"]], ids=" ".join
)
def test_command_line_help_imports_no_torch(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "minigpt_annotate", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage:" in done.stdout
    imported = _imported_modules(done.stderr)
    assert "minigpt_annotate.cli" in imported  # the parse found the real imports
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`minigpt-annotate serve` with the shipped shapes model: a process of its own, which does import torch."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_backend(serve_command(port), port, log, dict(os.environ)) as url:
        yield url


# The desktop process as a labeller without a GPU runs it: the window on a folder, the Model menu's server source,
# one [detection] run whose boxes land in the project. Runs in a fresh interpreter, so nothing pytest or the other
# tests imported counts.
_DESKTOP = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from PySide6.QtWidgets import QApplication
    from annotator.core.sources import ModelSource
    from annotator.gui.app import create_window

    folder, store, url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = create_window(folder, store=store, source=ModelSource("server", url))
    window.show()

    def wait_idle():
        app.processEvents()
        while window.ai.busy:
            app.processEvents()
            time.sleep(0.01)

    wait_idle()
    status = window.model_status.text()
    window.ai_panel.query.setText("circle, square, triangle")
    window.run_model()
    wait_idle()
    boxes = window.session.boxes(window.session.current_id)
    window.close()
    heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers"))
    print(json.dumps({"status": status, "boxes": len(boxes), "heavy": heavy}))
    """
)


def test_the_desktop_on_a_remote_model_never_imports_torch(server_url: str, tmp_path: Path) -> None:
    make_shapes(tmp_path / "shapes", images=3, seed=5, max_shapes=2)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("MINIGPT_SERVER_USER", None)
    done = subprocess.run(
        [sys.executable, "-c", _DESKTOP, str(tmp_path / "shapes" / "images"), str(tmp_path / "p.sqlite"), server_url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"].startswith(f"Ready: server {server_url}"), report
    assert report["boxes"] >= 1, report  # the run really went through the server and back into the project
    assert report["heavy"] == [], report
