"""The open project as the widgets see it: the store, the undo stack and the current image, with signals.

Widgets never write to the store themselves; they push edits here, so every change is undoable, saved at once,
and announced to every view that shows it.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from annotator.core.edits import Edit
from annotator.core.records import BoxRow, ImageRow, LabelRow
from annotator.core.store import ProjectStore
from model.errors import MiniGPTError


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
