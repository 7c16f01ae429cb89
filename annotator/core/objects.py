"""What the desktop's object list, canvas toggles and status bar show, Qt-free (issue 17, "Add": the object list,
canvas basics and labels).

* Each box's review *state* comes from its record: a proposal, or an annotation whose ``Origin`` says whether a
  person drew it (manual), accepted it unchanged (accepted) or changed the model's box (edited).
* Visibility is a view filter like the score threshold: hiding a box or a label never changes the store.
* Copy, paste and duplicate make new boxes a person placed: ``manual`` annotations, whatever they were copied from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from model.annotations import Box, Origin

from . import geometry
from .records import BoxRow, BoxState, LabelRow

PASTE_OFFSET = 10.0  # image pixels: a copy pasted (or duplicated) onto its own image is shifted so both show


class ObjectState(str, Enum):
    proposal = "proposal"  # model output awaiting review
    accepted = "accepted"  # a proposal accepted unchanged
    edited = "edited"  # a model box a person moved, resized or relabelled
    manual = "manual"  # drawn (pasted, imported) by a person


def object_state(row: BoxRow) -> ObjectState:
    if row.is_proposal:
        return ObjectState.proposal
    if row.origin is Origin.accepted:
        return ObjectState.accepted
    if row.origin is Origin.edited:
        return ObjectState.edited
    return ObjectState.manual  # Origin.manual, or a box stored before provenance existed


@dataclass(frozen=True)
class LabelCount:
    """How many boxes of one label the image shows, and how many of them still await review."""

    label: str
    total: int
    proposals: int

    @property
    def text(self) -> str:
        pending = f" ({self.proposals} proposed)" if self.proposals else ""
        return f"{self.label}: {self.total}{pending}"


def label_counts(rows: Iterable[BoxRow], labels: Sequence[LabelRow] = ()) -> list[LabelCount]:
    """Counts per label, in the project's label order (labels without boxes on this image are left out)."""
    rows = list(rows)
    totals = Counter(row.label for row in rows)
    proposed = Counter(row.label for row in rows if row.is_proposal)
    order = {label.name: i for i, label in enumerate(labels)}
    names = sorted(totals, key=lambda name: (order.get(name, len(order)), name))
    return [LabelCount(name, totals[name], proposed[name]) for name in names]


@dataclass
class Visibility:
    """Boxes and labels the person hid from the canvas; box ids are the store's, unique across images."""

    hidden_boxes: set[int] = field(default_factory=set)
    hidden_labels: set[str] = field(default_factory=set)

    def shows(self, row: BoxRow) -> bool:
        return row.id not in self.hidden_boxes and row.label not in self.hidden_labels

    def set_box(self, box_id: int, shown: bool) -> None:
        (self.hidden_boxes.discard if shown else self.hidden_boxes.add)(box_id)

    def set_label(self, label: str, shown: bool) -> None:
        (self.hidden_labels.discard if shown else self.hidden_labels.add)(label)


@dataclass(frozen=True)
class DisplayOptions:
    """The canvas's show/hide toggles for all boxes, their label tags and the scores in the tags."""

    boxes: bool = True
    labels: bool = True
    scores: bool = True

    def toggled(self, name: str) -> DisplayOptions:
        return replace(self, **{name: not getattr(self, name)})


def tag_text(row: BoxRow, options: DisplayOptions) -> str | None:
    """The text above a box, or None for no tag. A score shows only while the box is still a proposal: accepting
    keeps the score in the record but it no longer needs judging."""
    if not options.labels:
        return None
    if options.scores and row.is_proposal and row.score is not None:
        return f"{row.label} {row.score:.2f}"
    return row.label


def pasted(rows: Sequence[BoxRow], image_id: int, width: float, height: float, *, shift: bool) -> list[BoxRow]:
    """New manual annotations for ``image_id`` copying ``rows``' labels and boxes.

    ``shift``: offset them by :data:`PASTE_OFFSET` (a paste onto the image they came from, or a duplicate) so the
    copy does not hide under its original. Boxes are kept inside the image; one left smaller than a drawable box
    (copied from a larger image, far outside this one) is dropped.
    """
    made = []
    for row in rows:
        box = row.box
        if shift:
            box = geometry.translate(box, PASTE_OFFSET, PASTE_OFFSET, width, height)
        clipped = geometry.drawn_box(box.x0, box.y0, box.x1, box.y1, width, height)
        if clipped is None:
            continue
        made.append(BoxRow(image_id, row.label, clipped, state=BoxState.annotation, origin=Origin.manual))
    return made


def label_for_digit(labels: Sequence[LabelRow], digit: int) -> str | None:
    """The label a digit key 1-9 selects: the ``digit``-th in the project's label order, if there is one."""
    return labels[digit - 1].name if 1 <= digit <= len(labels) else None


def matching_labels(names: Iterable[str], text: str) -> list[str]:
    """The names a search for ``text`` keeps: those containing it, case-insensitively, names starting with it first."""
    needle = text.strip().casefold()
    kept = [name for name in names if needle in name.casefold()]
    return sorted(kept, key=lambda name: not name.casefold().startswith(needle)) if needle else kept


def common_label(rows: Iterable[BoxRow]) -> str | None:
    """The one label every selected box shares (the label list follows the selection), else None."""
    labels = {row.label for row in rows}
    return labels.pop() if len(labels) == 1 else None


def image_position(image_ids: Sequence[int], current: int | None) -> str:
    """ "image 3 / 17" for the status bar (1-based, in the folder's order)."""
    if current is None or current not in image_ids:
        return f"no image / {len(image_ids)}"
    return f"image {image_ids.index(current) + 1} / {len(image_ids)}"


def cursor_text(x: float, y: float, width: float, height: float) -> str:
    """The cursor in image pixels, or nothing when it is off the image."""
    if not (0 <= x < width and 0 <= y < height):
        return ""
    return f"x {int(x)}, y {int(y)}"


def box_text(boxes: Sequence[Box]) -> str:
    """The selected box as x, y, w, h in image pixels (the COCO convention), or how many are selected."""
    if len(boxes) != 1:
        return f"{len(boxes)} boxes selected" if boxes else ""
    box = boxes[0]
    return f"box x {box.x0:.0f}, y {box.y0:.0f}, w {box.width:.0f}, h {box.height:.0f}"


def zoom_text(scale: float) -> str:
    """Screen pixels per image pixel as a percentage: 100% shows the image pixel for pixel."""
    return f"{scale * 100:.0f}%"
