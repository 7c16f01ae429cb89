"""The review flow of the window: mark reviewed and go on in one key, a warning before marking an image reviewed
that still has proposals, "one label per object" on accept, the batch's image count and time left, and the YOLO
and Pascal VOC exports. The rules are Qt-free (:mod:`annotator.core.review_flow`, :mod:`annotator.core.formats`);
this only asks the person and wires the window's menus and signals to them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMessageBox

from annotator.core import edits
from annotator.core.exchange import ExportReport
from annotator.core.records import BoxRow, ImageRow
from annotator.core.review_flow import BatchClock, batch_images, one_label_per_object, pending_warning
from model.errors import MiniGPTError

from .session import Session
from .window_basics import menu_named

if TYPE_CHECKING:
    from .main_window import MainWindow

ONE_PER_OBJECT = "one_label_per_object"  # the project option (Session.flag)
EXPORTS = {"yolo": "YOLO (txt + data.yaml)", "voc": "Pascal VOC XML"}


class ReviewFlow(QObject):
    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self._clock: BatchClock | None = None
        self.one_per_object = QAction("One label per object (accepting rejects overlapping other labels)", window)
        self.one_per_object.setCheckable(True)
        self.one_per_object.toggled.connect(self._one_per_object_toggled)
        self.exports = {kind: QAction(f"Export {text}…", window) for kind, text in EXPORTS.items()}
        for kind, action in self.exports.items():
            action.triggered.connect(lambda _=False, kind=kind: self._choose_export(kind))
        window.project_opened.connect(self._opened)

    def handlers(self) -> dict[str, Callable[[], object]]:
        return {"review_next": self.review_next}

    def install(self) -> None:
        """Add the flow's actions to the window's menus (after the window made them)."""
        window = self.window
        menu_named(window, "&Review").addAction(self.one_per_object)
        file_menu = menu_named(window, "&File")
        file_menu.insertActions(window.actions_by_name["export_reviewed"], list(self.exports.values()))
        window.actions_by_name |= {f"export_{kind}": action for kind, action in self.exports.items()}
        window.actions_by_name["one_label_per_object"] = self.one_per_object

    def _opened(self, session: Session) -> None:
        self.one_per_object.setChecked(session.flag(ONE_PER_OBJECT))
        assert self.window.ai is not None  # made with the session
        self.window.ai.busy_changed.connect(self._busy)
        self.window.ai.progress.connect(self._progress)

    # --- marking reviewed ------------------------------------------------------------------------------------------
    def confirm_reviewed(self, image: ImageRow) -> bool:
        """Whether to go on marking ``image`` reviewed: asks first when proposals on it still wait for a decision."""
        warning = pending_warning(image)
        if warning is None:
            return True
        box = QMessageBox(QMessageBox.Icon.Warning, "Proposals still pending", warning, parent=self.window)
        mark = box.addButton("Mark reviewed", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        self.window.activateWindow()  # the keys go on to the window (some platforms leave none active)
        return box.clickedButton() is mark

    def review_next(self) -> None:
        """Mark this image reviewed (one undo step) and go to the next image still to review."""
        session = self.window.session
        if session is None or session.current_id is None:
            return
        image = session.image(session.current_id)
        if not image.reviewed:
            if not self.confirm_reviewed(image):
                return
            session.push(edits.ReviewedChange("Mark reviewed", image.id, True, False))
        target = session.neighbour(1, unreviewed=True)
        if target is None:
            self.window.statusBar().showMessage("Every image is reviewed")
        else:
            session.set_current(target)

    # --- accepting -------------------------------------------------------------------------------------------------
    def accept_edit(self, rows: Sequence[BoxRow]) -> edits.BoxChange:
        """The edit that accepts the proposals among ``rows`` (at least one): with "one label per object" on, the
        best-scoring of overlapping proposals is accepted and the others rejected, in the same undo step."""
        proposals = [row for row in rows if row.is_proposal]
        if not self.one_per_object.isChecked():
            return edits.accept(proposals)
        annotations = [row for row in self.window.current_rows() if not row.is_proposal]
        keep, drop = one_label_per_object(proposals, annotations)
        if drop:
            self.window.statusBar().showMessage(
                f"Accepted {len(keep)}, rejected {len(drop)} overlapping proposal(s): one label per object", 15_000
            )
        return edits.accept(keep, rejecting=drop)

    def _one_per_object_toggled(self, on: bool) -> None:
        if self.window.session is not None:
            self.window.session.set_flag(ONE_PER_OBJECT, on)

    # --- batches ---------------------------------------------------------------------------------------------------
    def batch_images(self, *, unreviewed_only: bool) -> list[ImageRow]:
        session = self.window.session
        return batch_images(session.images(), unreviewed_only=unreviewed_only) if session is not None else []

    def batch_counts(self) -> tuple[int, int]:
        """How many images a batch runs on: (unreviewed only, all)."""
        return len(self.batch_images(unreviewed_only=True)), len(self.batch_images(unreviewed_only=False))

    def _busy(self, busy: bool, _: str) -> None:
        if not busy:
            self._clock = None
        elif self._clock is None:  # "Cancelling…" is the same run going on
            self._clock = BatchClock(time.monotonic())
            self.window.ai_panel.show_progress_text("starting…")

    def _progress(self, done: int, total: int) -> None:
        clock = self._clock or BatchClock(time.monotonic())
        self.window.ai_panel.show_progress_text(clock.text(done, total, time.monotonic()))

    # --- exports ---------------------------------------------------------------------------------------------------
    def _choose_export(self, kind: str) -> None:
        session = self.window.session
        if session is None:
            return
        default = str(session.folder.with_name(f"{session.folder.name}-{kind}"))
        path, _ = QFileDialog.getSaveFileName(self.window, f"Export {EXPORTS[kind]} into a new folder", default)
        if path:
            self.export_to(kind, Path(path))

    def export_to(self, kind: str, path: Path, *, reviewed_only: bool = False) -> ExportReport | None:
        """Export as ``kind`` ("yolo" or "voc") into the folder ``path``; the status bar says what was written."""
        session = self.window.session
        if session is None:
            return None
        try:
            report = session.export_format(kind, path, reviewed_only=reviewed_only)
        except MiniGPTError as err:
            self.window.show_error(f"Export failed, nothing was written: {err}")
            return None
        self.window.statusBar().showMessage(f"Exported {report}", 15_000)
        return report
