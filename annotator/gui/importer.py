"""Importing a COCO file without freezing the window.

Worker threads do the slow parts while a progress dialog offers Cancel: first reading the file (checking it,
matching its images to the project's, reading their sizes), then finding which of its boxes the project already
has, against a copy of the matched images' annotations that the session hands over. The session then writes the
new boxes in one transaction on the GUI thread, which owns the store; if the store changed in between (the person
went on working), the duplicates are found again there, against the store as it is then.

The boxes an import adds are one undo step (Ctrl+Z right after it takes them away, not an earlier edit); it adds
nothing twice and says what it added.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QProgressDialog, QWidget

from annotator.core.exchange import ImportPlan, match_import, read_import
from model.errors import MiniGPTError

from .session import Session
from .workers import ImportStep, ImportWorker

SHOW_AFTER_MS = 500  # an import that is done sooner never flashes a dialog


class CocoImporter(QObject):
    done = Signal(str)  # the one-line outcome, for the status bar
    failed = Signal(str)  # why nothing was imported
    progress = Signal(int, int)  # images read (then matched), total

    def __init__(self, session: Session, window: QWidget):
        super().__init__(window)
        self.session = session
        self.window = window
        self._worker: ImportWorker | None = None
        self._then: Callable[[ImportPlan, Path], None] = self._matched  # what follows the running step
        self._dialog: QProgressDialog | None = None

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def start(self, path: Path) -> bool:
        """Start importing ``path``; False (with ``failed``) when another import is still running."""
        if self._worker is not None:
            self.failed.emit(f"an import of {self._worker.path.name} is still running; wait for it or cancel it")
            return False
        dialog = QProgressDialog(f"Reading {path.name}…", "Cancel", 0, 0, self.window)
        dialog.setWindowTitle("Import COCO")
        dialog.setMinimumDuration(SHOW_AFTER_MS)
        dialog.canceled.connect(self.cancel)
        self._dialog = dialog
        self._run(partial(read_import, self.session.images(), self.session.folder, path), path, self._read)
        return True

    def cancel(self) -> None:
        """Stop; nothing is written, even if the worker had already finished its part."""
        if self._worker is not None:
            self._worker.cancel()

    def wait(self, ms: int = 60_000) -> bool:
        """Block until the running step ends (tests); what it found is used, or dropped, when ``finished`` arrives."""
        return self._worker.wait(ms) if self._worker is not None else True

    def shutdown(self) -> None:
        """The project is closing: stop, drop what was found, and go."""
        self.cancel()
        self.wait()
        self._end()
        self.deleteLater()

    # --- steps -----------------------------------------------------------------------------------------------------
    def _run(self, step: ImportStep, path: Path, then: Callable[[ImportPlan, Path], None]) -> None:
        worker = ImportWorker(step, path, self)
        worker.progress.connect(self.progress)
        worker.progress.connect(self._show_progress)
        worker.finished.connect(self._step_finished)  # a method of this GUI-thread object: runs on the GUI thread
        self._worker, self._then = worker, then
        worker.start()

    def _step_finished(self) -> None:
        worker = self._worker
        if worker is None or not worker.isFinished():  # dropped by shutdown()
            return
        self._worker = None
        worker.deleteLater()
        name = worker.path.name
        if worker.cancelled:
            self._end(f"Import of {name} cancelled: nothing was changed")
        elif worker.error is not None:
            self._end(failure=f"Import failed, nothing was changed: {worker.error}")
        elif worker.plan is not None:
            self._then(worker.plan, worker.path)

    def _read(self, plan: ImportPlan, path: Path) -> None:
        """The file is read: find its duplicates in a worker too, against a copy of what the project holds now."""
        existing, generation = self.session.import_snapshot(plan)
        if self._dialog is not None:
            self._dialog.setLabelText(f"Finding the boxes of {path.name} the project already has…")
        self._run(partial(match_import, plan, existing, generation), path, self._matched)

    def _matched(self, plan: ImportPlan, path: Path) -> None:
        try:
            report = self.session.apply_import(plan)
        except MiniGPTError as err:  # e.g. the disk is full: the transaction left the store as it was
            self._end(failure=f"Import failed, nothing was changed: {err}")
            return
        self._end(f"Imported {path.name}: {report}" if report is not None else None)

    def _end(self, message: str | None = None, *, failure: str | None = None) -> None:
        if self._worker is not None:  # shutdown(): the running step is dropped
            self._worker.deleteLater()
            self._worker = None
        dialog, self._dialog = self._dialog, None
        if dialog is not None:
            dialog.canceled.disconnect(self.cancel)  # closing it must not count as a cancel
            dialog.close()
            dialog.deleteLater()
        if failure is not None:
            self.failed.emit(failure)
        elif message is not None:
            self.done.emit(message)

    def _show_progress(self, done: int, total: int) -> None:
        if self._dialog is not None:
            self._dialog.setMaximum(total)
            self._dialog.setValue(done)
