"""`minigpt-annotate gui [FOLDER]`: start the desktop annotator."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

from annotator.core.sources import ModelSource

from .main_window import MainWindow


def create_window(
    folder: Path | None = None,
    *,
    store: Path | None = None,
    source: ModelSource | None = None,
) -> MainWindow:
    """The main window with ``folder`` (or the project at ``store``) open and ``source`` loading in the background."""
    window = MainWindow()
    if folder is not None or store is not None:
        window.open_folder(folder, store, source)  # the command line's source instead of the remembered one
    return window


def run(folder: Path | None = None, *, store: Path | None = None, source: ModelSource | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("minigpt-annotate")
    window = create_window(folder, store=store, source=source)
    window.show()
    return app.exec()
