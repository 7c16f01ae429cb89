"""What the README's screenshot scripts share: the real main window, offscreen, on a folder of generated shapes scenes
with the shipped tiny model loaded, and the waits between steps. Settings go to a temporary folder, so taking the
shots leaves the user's recent folders and layout alone. Imported by ``scripts/*.py`` (run as scripts, so this
folder is on the path)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["MINIGPT_ANNOTATE_CONFIG"] = tempfile.mkdtemp(prefix="annotator-shot-config-")  # never the user's
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ("square", "circle", "triangle")


@dataclass
class Shot:
    app: Any  # QApplication
    window: Any  # annotator.gui.main_window.MainWindow
    session: Any  # annotator.gui.session.Session
    work: Path  # the generated scenes: images/ and the project store

    def settle(self, until: Callable[[], bool] | None = None, seconds: float = 600) -> None:
        """Process events until `until()` holds (default: no model job running) or `seconds` pass."""
        done = until or (lambda: self.window.ai is None or not self.window.ai.busy)
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            self.app.processEvents()
            time.sleep(0.01)
        self.app.processEvents()

    def busiest_image(self, candidates: int = 8) -> int:
        """Run [detection] of every label on the first `candidates` images; the id of the one with the most boxes."""
        best: tuple[int, int] | None = None
        for image in self.session.images()[:candidates]:
            self.window.go_to(image.id)
            self.window.ai_panel.query.setText("")
            self.window.run_model()
            self.settle()
            count = len(self.session.boxes(image.id))
            if best is None or count > best[1]:
                best = (image.id, count)
        assert best is not None, "no images"
        return best[0]


def shapes_window(
    images: int, size: tuple[int, int] = (1500, 900), before_open: Callable[[Path], None] | None = None
) -> Shot:
    """The window on `images` generated scenes (3-4 shapes each), its labels made and the shipped model loaded.
    `before_open(images_folder)` may add files first."""
    from PySide6.QtWidgets import QApplication

    from annotator.core.sources import ModelSource
    from annotator.gui.main_window import MainWindow
    from model.synthetic.shapes import make_shapes
    from model.synthetic.shapes_model import SHIPPED_DIR

    work = Path(tempfile.mkdtemp(prefix="annotator-shot-"))
    make_shapes(work, images=images, seed=5, min_shapes=3, max_shapes=4)
    if before_open is not None:
        before_open(work / "images")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    window.resize(*size)
    window.open_folder(work / "images", work / "shot.minigpt.sqlite")
    window.show()
    session = window.session
    assert session is not None and window.ai is not None
    for label in LABELS:
        session.add_label(label)
    window.load_model(ModelSource("local", str(SHIPPED_DIR), device="cpu"))
    shot = Shot(app, window, session, work)
    shot.settle()
    return shot
