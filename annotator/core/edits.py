"""Undoable edits, Qt-free. The GUI wraps each in a ``QUndoCommand``; tests drive them against a real store.

Every change a person or the model makes to boxes is one :class:`BoxChange`: the rows before and after, keyed by
id. Adding, deleting, moving, relabelling, accepting and rejecting are all the same operation, so undo and redo are
exact, and one AI run (all its proposals) is one step. Removing a proposal is rejecting it: the store remembers it
(:meth:`ProjectStore.add_rejections`) so that the model does not propose the same box again, and undo forgets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .records import BoxRow, LabelRow
from .store import ProjectStore


@dataclass
class BoxChange:
    """Replace ``before`` by ``after`` on one image. New rows (id None) get their ids on the first redo.
    ``rejected``: proposals among ``before`` that a person rejected, remembered while the change is done."""

    text: str
    image_id: int
    before: Sequence[BoxRow]
    after: Sequence[BoxRow]
    rejected: Sequence[BoxRow] = ()
    _rejection_ids: list[int] = field(default_factory=list)

    def redo(self, store: ProjectStore) -> None:
        with store.batch():
            kept = {row.id for row in self.after}
            store.delete_boxes(row.id for row in self.before if row.id is not None and row.id not in kept)
            self.after = store.put_boxes(self.after)  # fills in the ids of new rows; later redos reuse them
            self._rejection_ids = store.add_rejections(self.rejected)

    def undo(self, store: ProjectStore) -> None:
        with store.batch():
            kept = {row.id for row in self.before}
            store.delete_boxes(row.id for row in self.after if row.id is not None and row.id not in kept)
            store.put_boxes(self.before)
            store.delete_rejections(self._rejection_ids)

    @property
    def image_ids(self) -> set[int]:
        return {self.image_id}


@dataclass
class ReviewedChange:
    """Mark an image reviewed or not."""

    text: str
    image_id: int
    reviewed: bool
    was: bool

    def redo(self, store: ProjectStore) -> None:
        store.set_reviewed(self.image_id, self.reviewed)

    def undo(self, store: ProjectStore) -> None:
        store.set_reviewed(self.image_id, self.was)

    @property
    def image_ids(self) -> set[int]:
        return {self.image_id}


def add_boxes(text: str, image_id: int, rows: Sequence[BoxRow]) -> BoxChange:
    return BoxChange(text, image_id, before=[], after=list(rows))


def remove_boxes(text: str, rows: Sequence[BoxRow]) -> BoxChange:
    """Delete ``rows``; the proposals among them are rejected (remembered, so they are not proposed again)."""
    rejected = [row for row in rows if row.is_proposal]
    return BoxChange(text, _one_image(rows), before=list(rows), after=[], rejected=rejected)


def replace_boxes(text: str, before: Sequence[BoxRow], after: Sequence[BoxRow]) -> BoxChange:
    return BoxChange(text, _one_image([*before, *after]), before=list(before), after=list(after))


def accept(rows: Sequence[BoxRow], *, rejecting: Sequence[BoxRow] = ()) -> BoxChange:
    """Turn proposals into annotations (the ids stay, so the canvas keeps its selection), and reject the proposals
    ``rejecting`` in the same step (one label per object: :func:`annotator.core.review_flow.one_label_per_object`)."""
    proposals = [row for row in rows if row.is_proposal]
    dropped = [row for row in rejecting if row.is_proposal]
    noun = "proposal" if len(proposals) == 1 else f"{len(proposals)} proposals"
    text = f"Accept {noun}" + (f", reject {len(dropped)} overlapping" if dropped else "")
    before = [*proposals, *dropped]
    return BoxChange(text, _one_image(before), before, [row.accepted() for row in proposals], rejected=dropped)


def reject(rows: Sequence[BoxRow]) -> BoxChange:
    proposals = [row for row in rows if row.is_proposal]
    noun = "proposal" if len(proposals) == 1 else f"{len(proposals)} proposals"
    return remove_boxes(f"Reject {noun}", proposals)


def _one_image(rows: Sequence[BoxRow]) -> int:
    images = {row.image_id for row in rows}
    if len(images) != 1:
        raise ValueError(f"an edit changes the boxes of exactly one image, got images {sorted(images)}")
    return images.pop()


@dataclass
class BatchProposals:
    """Boxes stored already, over many images, as one undo step: the proposals of a folder-wide batch run, or the
    annotations a COCO import added.

    A batch's rows are saved as they arrive (so a crash or cancel keeps what was done) while the person goes on
    working, possibly accepting some of them. Undo therefore removes only the rows that are still untouched: it
    never takes away a box someone accepted or edited in the meantime.
    """

    text: str
    rows: list[BoxRow]  # as stored, with ids

    def redo(self, store: ProjectStore) -> None:
        present = {row.id for rows in store.all_boxes().values() for row in rows}
        store.put_boxes([row for row in self.rows if row.id not in present])

    def undo(self, store: ProjectStore) -> None:
        untouched = set(self.rows)
        current = store.all_boxes()
        store.delete_boxes(
            row.id for rows in current.values() for row in rows if row in untouched and row.id is not None
        )

    @property
    def image_ids(self) -> set[int]:
        return {row.image_id for row in self.rows}


@dataclass
class RenameLabel:
    """Rename a label on every box that has it; renaming onto an existing label merges the two.

    Undo gives exactly those boxes their old label back and restores the old label's colour, prompt and place.
    """

    text: str
    old: str
    new: str
    _boxes: list[int] = field(default_factory=list)
    _images: set[int] = field(default_factory=set)
    _old_label: LabelRow | None = None
    _old_position: int = 0
    _new_existed: bool = False

    def redo(self, store: ProjectStore) -> None:
        with store.batch():
            self._old_label = next((label for label in store.labels() if label.name == self.old), None)
            self._old_position = store.label_position(self.old) or 0
            self._new_existed = store.label_position(self.new) is not None
            self._boxes = store.box_ids_with_label(self.old)
            self._images = store.image_ids_with_label(self.old)
            if not self._new_existed and self._old_label is not None:
                store.put_label(replace(self._old_label, name=self.new), self._old_position)  # keeps colour and place
            store.set_box_labels(self._boxes, self.new)
            if self._old_label is not None:
                store.remove_label(self.old)

    def undo(self, store: ProjectStore) -> None:
        with store.batch():
            if self._old_label is not None:
                store.put_label(self._old_label, self._old_position)
            store.set_box_labels(self._boxes, self.old)
            if not self._new_existed:
                store.remove_label(self.new)

    @property
    def image_ids(self) -> set[int]:
        return set(self._images)


@dataclass
class DeleteLabel:
    """Remove a label no box uses (the store refuses a used one)."""

    text: str
    label: LabelRow
    position: int

    def redo(self, store: ProjectStore) -> None:
        store.remove_label(self.label.name)

    def undo(self, store: ProjectStore) -> None:
        store.put_label(self.label, self.position)

    @property
    def image_ids(self) -> set[int]:
        return set()


@dataclass
class RecolorLabel:
    """Give a label another colour (a person's override of the derived one); the store remembers it."""

    text: str
    name: str
    color: str  # "#rrggbb"
    _was: LabelRow | None = None
    _images: set[int] = field(default_factory=set)

    def redo(self, store: ProjectStore) -> None:
        with store.batch():
            self._was = next((label for label in store.labels() if label.name == self.name), None)
            if self._was is None:
                self._was = store.ensure_label(self.name)
            self._images = store.image_ids_with_label(self.name)
            store.put_label(replace(self._was, color=self.color), store.label_position(self.name) or 0)

    def undo(self, store: ProjectStore) -> None:
        if self._was is not None:
            store.put_label(self._was, store.label_position(self.name) or 0)

    @property
    def image_ids(self) -> set[int]:
        return set(self._images)


Edit = BoxChange | ReviewedChange | BatchProposals | RenameLabel | DeleteLabel | RecolorLabel
