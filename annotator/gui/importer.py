"""Importing a COCO file without freezing the window.

A worker thread does the slow part (reading and checking the file, matching its images, reading their sizes) while
a progress dialog offers Cancel; then the session writes what it found in one transaction, on the GUI thread that
owns the store, with duplicates found against the store as it is at that moment (the person may go on working
meanwhile). As before, an import is not an undo step: it adds nothing twice and says what it added, and the undo
stack keeps the person's own edits.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QProgressDialog, QWidget

from model.errors import MiniGPTError

from .session import Session
from .workers import ImportWorker

SHOW_AFTER_MS = 500  # an import that is done sooner never flashes a dialog


class CocoImporter(QObject):
    done = Signal(str)  # the one-line outcome, for the status bar
    failed = Signal(str)  # why nothing was imported
    progress = Signal(int, int)  # images of the file read, total

    def __init__(self, session: Session, window: QWidget):
        super().__init__(window)
        self.session = session
        self.window = window
        self._worker: ImportWorker | None = None
        self._dialog: QProgressDialog | None = None

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def start(self, path: Path) -> bool:
        """Start importing ``path``; False (with ``failed``) when another import is still running."""
        if self._worker is not None:
            self.failed.emit(f"an import of {self._worker.path.name} is still running; wait for it or cancel it")
            return False
        worker = ImportWorker(self.session.images(), self.session.folder, path, self)
        worker.progress.connect(self.progress)
        worker.progress.connect(self._show_progress)
        worker.finished.connect(self._finished)
        dialog = QProgressDialog(f"Importing {path.name}…", "Cancel", 0, 0, self.window)
        dialog.setWindowTitle("Import COCO")
        dialog.setMinimumDuration(SHOW_AFTER_MS)
        dialog.canceled.connect(self.cancel)
        self._worker, self._dialog = worker, dialog
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop reading; nothing is written, even if the worker had already finished reading."""
        if self._worker is not None:
            self._worker.cancel()

    def wait(self, ms: int = 60_000) -> bool:
        """Block until the worker ends (tests); the result is written, or dropped, when its ``finished`` arrives."""
        return self._worker.wait(ms) if self._worker is not None else True

    def shutdown(self) -> None:
        """The project is closing: stop reading, drop what was read, and go."""
        self.cancel()
        self.wait()
        self._finished()
        self.deleteLater()

    def _show_progress(self, done: int, total: int) -> None:
        if self._dialog is not None:
            self._dialog.setMaximum(total)
            self._dialog.setValue(done)

    def _finished(self) -> None:
        worker, self._worker = self._worker, None
        dialog, self._dialog = self._dialog, None
        if dialog is not None:
            dialog.canceled.disconnect(self.cancel)  # closing it below must not count as a cancel
            dialog.close()
            dialog.deleteLater()
        if worker is None:
            return
        worker.deleteLater()
        name = worker.path.name
        if worker.cancelled:
            self.done.emit(f"Import of {name} cancelled: nothing was changed")
        elif worker.error is not None:
            self.failed.emit(f"Import failed, nothing was changed: {worker.error}")
        elif worker.plan is not None:
            try:
                report = self.session.apply_import(worker.plan)
            except MiniGPTError as err:  # e.g. the disk is full: the transaction left the store as it was
                self.failed.emit(f"Import failed, nothing was changed: {err}")
                return
            if report is not None:
                self.done.emit(f"Imported {name}: {report}")
