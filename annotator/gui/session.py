"""The open project as the widgets see it: the store, the undo stack and the current image, with signals.

Widgets never write to the store themselves; they push edits here, so every change is undoable, saved at once,
and announced to every view that shows it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from annotator.core.edits import DeleteLabel, Edit, RenameLabel
from annotator.core.exchange import ExportReport, ImportReport, export_coco, import_coco
from annotator.core.records import BoxRow, ImageRow, LabelRow
from annotator.core.store import ProjectStore
from model.errors import MiniGPTError

log = logging.getLogger(__name__)


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


class Session(QObject):
    images_changed = Signal()  # statuses or counts changed
    boxes_changed = Signal(int)  # image id
    labels_changed = Signal()
    current_changed = Signal(int)  # image id, -1 for none
    error = Signal(str)  # something could not be saved; the message says why

    def __init__(self, store: ProjectStore, folder: Path, parent: QObject | None = None):
        super().__init__(parent)
        self.store = store
        self.folder = folder
        self.undo_stack = QUndoStack(self)
        self.current_id: int | None = None

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
    def images(self) -> list[ImageRow]:
        return self.store.images()

    def image(self, image_id: int) -> ImageRow:
        return self.store.image(image_id)

    def boxes(self, image_id: int) -> list[BoxRow]:
        return self.store.boxes(image_id)

    def labels(self) -> list[LabelRow]:
        return self.store.labels()

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

    def import_coco(self, path: Path) -> ImportReport:
        """Add another person's boxes (not an undo step: it reports what it added, and adds nothing twice)."""
        report = import_coco(self.store, self.folder, path)
        self.images_changed.emit()
        self.labels_changed.emit()
        if self.current_id is not None:
            self.boxes_changed.emit(self.current_id)
        return report

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
