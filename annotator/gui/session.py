"""The open project as the widgets see it: the store, the undo stack and the current image, with signals.

The session is the only code of the desktop that talks to the store. Widgets push edits here, so every change is
undoable, saved at once, and announced (by the session's own signals) to every view that shows it; what is not an
edit (what reading a file found, a batch's proposals as they arrive, the settings to resume with) goes through a
method named for what happened. tests/test_annotator_layers.py holds the rule.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from annotator.core.edits import BatchProposals, DeleteLabel, Edit, RenameLabel
from annotator.core.exchange import Corners, ExportReport, ImportPlan, ImportReport, apply_import, export_coco
from annotator.core.formats import FORMATS
from annotator.core.records import BoxRow, ImageRow, LabelRow
from annotator.core.review_order import next_riskiest
from annotator.core.sources import ModelSource
from annotator.core.store import ProjectStore
from model.annotations import Box, Task
from model.errors import MiniGPTError

log = logging.getLogger(__name__)
T = TypeVar("T")


class EditCommand(QUndoCommand):
    """One undo step. ``applied``: the edit already happened (a batch run saved as it went); skip the first redo."""

    def __init__(self, session: Session, edit: Edit, *, applied: bool = False):
        super().__init__(edit.text)
        self.session = session
        self.edit = edit
        self._skip_redo = applied

    def redo(self) -> None:
        if self._skip_redo:
            self._skip_redo = False
            return
        self.session.apply(self.edit, undo=False)

    def undo(self) -> None:
        self.session.apply(self.edit, undo=True)


@dataclass(frozen=True)
class RunSettings:
    """The AI panel's state, saved as it changes so that reopening the project resumes where the user left off."""

    task: Task = Task.detection
    query: str = ""
    threshold: float = 0.0  # the minimum score a proposal needs to be shown


class Session(QObject):
    images_changed = Signal()  # statuses, sizes or counts changed
    boxes_changed = Signal(int)  # image id
    labels_changed = Signal()
    current_changed = Signal(int)  # image id, -1 for none
    error = Signal(str)  # something could not be saved; the message says why

    def __init__(self, store: ProjectStore, folder: Path, parent: QObject | None = None):
        super().__init__(parent)
        self.store = store  # the desktop's widgets go through the methods below; tests may read it directly
        self.folder = folder
        self.undo_stack = QUndoStack(self)
        self.current_id: int | None = None
        self._closed = False

    # --- edits -----------------------------------------------------------------------------------------------------
    def push(self, edit: Edit, *, applied: bool = False) -> None:
        self.undo_stack.push(EditCommand(self, edit, applied=applied))

    def apply(self, edit: Edit, *, undo: bool) -> None:
        images = edit.image_ids
        if self.current_id not in images and len(images) == 1:
            self.set_current(next(iter(images)))  # show what undo/redo changes
        try:
            edit.undo(self.store) if undo else edit.redo(self.store)
        except MiniGPTError as err:
            self.error.emit(str(err))
        images = images | edit.image_ids  # a rename knows its images only once it ran
        for image_id in images:
            self.boxes_changed.emit(image_id)
        self.images_changed.emit()
        self.labels_changed.emit()

    # --- queries ---------------------------------------------------------------------------------------------------
    # What the views show. The store was checked on opening; if another program damages or edits it meanwhile, the
    # view shows nothing and the error signal says what is wrong and how to fix it, instead of a traceback.
    def images(self) -> list[ImageRow]:
        return self._shown(self.store.images)

    def image(self, image_id: int) -> ImageRow:
        return self.store.image(image_id)

    def boxes(self, image_id: int) -> list[BoxRow]:
        return self._shown(lambda: self.store.boxes(image_id))

    def labels(self) -> list[LabelRow]:
        return self._shown(self.store.labels)

    def _shown(self, read: Callable[[], list[T]]) -> list[T]:
        try:
            return read()
        except MiniGPTError as err:
            self.error.emit(str(err))
            return []

    @property
    def store_path(self) -> Path:
        """Where the project store is: with the folder, what reopens this project."""
        return self.store.path

    def path_of(self, image: ImageRow) -> Path:
        return self.folder / image.path

    def add_label(self, name: str) -> LabelRow:
        label = self.store.ensure_label(name)
        self.labels_changed.emit()
        return label

    # --- labels ----------------------------------------------------------------------------------------------------
    def rename_label(self, old: str, new: str) -> bool:
        """Rename (or merge onto an existing label) as one undo step; False when there is nothing to do."""
        new = new.strip()
        if not new or new == old:
            return False
        self.push(RenameLabel(f"Rename label {old} → {new}", old, new))
        return True

    def delete_label(self, name: str) -> bool:
        """Delete an unused label as one undo step; a used one is refused with the reason (the error signal)."""
        used = len(self.store.box_ids_with_label(name))
        position = self.store.label_position(name)
        label = next((label for label in self.labels() if label.name == name), None)
        if used or label is None or position is None:
            self.error.emit(f"{used} box(es) use the label {name!r}; relabel or delete them first")
            return False
        self.push(DeleteLabel(f"Delete label {name}", label, position))
        return True

    def set_label_prompt(self, name: str, prompt: str | None) -> None:
        self.store.set_label_prompt(name, prompt)
        self.labels_changed.emit()

    # --- exchange --------------------------------------------------------------------------------------------------
    def export_coco(self, path: Path, *, reviewed_only: bool = False) -> ExportReport:
        report = export_coco(self.store, self.folder, path, reviewed_only=reviewed_only)
        for item in report.skipped:
            log.warning("export skipped %s", item)
        return report

    def export_format(self, kind: str, path: Path, *, reviewed_only: bool = False) -> ExportReport:
        """Export as ``kind`` (a key of :data:`annotator.core.formats.FORMATS`: YOLO or Pascal VOC) into the folder
        ``path``."""
        report = FORMATS[kind](self.store, self.folder, path, reviewed_only=reviewed_only)
        for item in report.skipped:
            log.warning("export skipped %s", item)
        return report

    def import_snapshot(self, plan: ImportPlan) -> tuple[dict[int, list[Corners]], tuple[int, int]]:
        """A copy of the annotations an import must not repeat (those of the images the file names), and the
        store's generation it was taken at, for a worker to match against."""
        return self.store.annotation_corners(plan.image_ids), self.store.generation

    def apply_import(self, plan: ImportPlan) -> ImportReport | None:
        """Write what a COCO import found (:class:`annotator.gui.importer.CocoImporter` reads and matches it in
        workers), in one transaction; None when the project was closed meanwhile. The boxes it added are one undo
        step (labels and images it added stay); it adds nothing twice, and an import that adds nothing is no step.

        Raises:
            MiniGPTError: it could not be saved; nothing was.
        """
        if self._closed:
            return None
        report = apply_import(self.store, plan)
        if report.added:
            text = f"Import {report.annotations_added} boxes on {len(report.image_ids)} images"
            self.push(BatchProposals(text, report.added), applied=True)
        for image_id in sorted(report.image_ids):
            self.boxes_changed.emit(image_id)
        self.images_changed.emit()
        self.labels_changed.emit()
        return report

    # --- what happened to image files ------------------------------------------------------------------------------
    def record_probes(self, results: Sequence[tuple[int, tuple[int, int] | str]]) -> None:
        """Save what reading the files' headers found: each image's upright size, or why it cannot be read."""
        if self._closed:  # sent by the probe before the project was closed, delivered after
            return
        with self._saving(), self.store.batch():
            for image_id, result in results:
                if isinstance(result, str):
                    self.store.set_image_error(image_id, result)
                else:
                    self.store.set_image_size(image_id, *result)
        self.images_changed.emit()

    def record_shown(self, image_id: int, width: int, height: int) -> None:
        """The image was decoded at this upright size: remember it, and that it is readable (the file may have
        been fixed or replaced since it was last read)."""
        row = self.store.image(image_id)
        if (row.width, row.height) == (width, height) and row.error is None:
            return
        with self._saving():
            self.store.set_image_size(image_id, width, height)
        self.images_changed.emit()

    def mark_unreadable(self, image_id: int, message: str) -> None:
        """The file cannot be decoded (``message`` says why): marked in the file list and skipped by batches."""
        if self._closed:  # a model run's late report
            return
        with self._saving():
            self.store.set_image_error(image_id, message)
        self.images_changed.emit()

    def save_batch_proposals(self, image_id: int, rows: Sequence[BoxRow]) -> list[BoxRow]:
        """Save one image's proposals as a batch run delivers them, so a cancel or a crash keeps them; the batch
        becomes one undo step when it ends (``push(BatchProposals(...), applied=True)``).

        Raises:
            MiniGPTError: they could not be saved (e.g. the disk is full); the caller stops the batch.
        """
        if self._closed:  # delivered after the project was closed (the batch was cancelled): nowhere to save
            return []
        stored = self.store.put_boxes(rows)
        self.boxes_changed.emit(image_id)
        self.images_changed.emit()
        return stored

    # --- where the user left off -----------------------------------------------------------------------------------
    def run_settings(self) -> RunSettings:
        """The AI panel's state as last saved (defaults for a new project, or for a value that no longer parses)."""
        saved, default = self.store.setting, RunSettings()
        try:
            threshold = float(saved("threshold") or default.threshold)
        except ValueError:
            threshold = default.threshold
        try:
            task = Task(saved("task") or default.task.value)
        except ValueError:
            task = default.task
        return RunSettings(task=task, query=saved("query") or "", threshold=threshold)

    def save_run_settings(self, settings: RunSettings) -> None:
        with self._saving(), self.store.batch():
            self.store.set_setting("threshold", f"{settings.threshold:.2f}")
            self.store.set_setting("task", settings.task.value)
            self.store.set_setting("query", settings.query)

    def rejections(self, image_id: int) -> list[tuple[str, Box]]:
        """The (label, box) of the proposals a person rejected on ``image_id``: not to be proposed again."""
        return self._shown(lambda: self.store.rejections(image_id))

    def flag(self, name: str) -> bool:
        """A project option that is on or off (off unless set), e.g. ``one_label_per_object``."""
        return self.store.setting(name) == "1"

    def set_flag(self, name: str, on: bool) -> None:
        with self._saving():
            self.store.set_setting(name, "1" if on else "0")

    def model_source(self) -> ModelSource | None:
        """The model the project used last, to load again on opening.

        Raises:
            MiniGPTError: the saved source cannot be understood; the message says to choose a model again.
        """
        saved = self.store.setting("model_source")
        return ModelSource.from_setting(saved) if saved else None

    def remember_model_source(self, source: ModelSource) -> None:
        if self._closed:  # a load that finished after the project was closed
            return
        with self._saving():
            self.store.set_setting("model_source", source.to_setting())

    def close(self) -> None:
        """Close the store (the session is done: the window drops it). Workers' reports still queued are dropped."""
        self._closed = True
        self.store.close()

    @contextlib.contextmanager
    def _saving(self) -> Iterator[None]:
        # A failed save (a full disk, a file opened elsewhere) is told to the user; the app keeps running.
        try:
            yield
        except MiniGPTError as err:
            self.error.emit(str(err))

    # --- navigation ------------------------------------------------------------------------------------------------
    def set_current(self, image_id: int | None) -> None:
        if image_id == self.current_id:
            return
        self.current_id = image_id
        if image_id is not None:
            self.store.set_setting("current_image", self.store.image(image_id).path)
        self.current_changed.emit(-1 if image_id is None else image_id)

    def restore_current(self) -> None:
        """Go back to where the user left off, else to the first image."""
        path = self.store.setting("current_image")
        image_id = self.store.image_id(path) if path else None
        if image_id is None:
            images = self.store.images()
            image_id = images[0].id if images else None
        self.set_current(image_id)

    def riskiest(self) -> int | None:
        """The riskiest image still to review (:func:`annotator.core.review_order.next_riskiest`), or None."""
        return next_riskiest(self.store.images(), self.current_id)

    def neighbour(self, step: int, *, unreviewed: bool = False) -> int | None:
        """The image ``step`` places away in the file order (wrapping for unreviewed search), or None."""
        images = self.store.images()
        ids = [row.id for row in images]
        if not ids:
            return None
        here = ids.index(self.current_id) if self.current_id in ids else -1
        if not unreviewed:
            target = here + step
            return ids[target] if 0 <= target < len(ids) else None
        for offset in range(1, len(ids) + 1):
            row = images[(here + step * offset) % len(ids)]
            if not row.reviewed and row.error is None and row.id != self.current_id:
                return row.id
        return None
