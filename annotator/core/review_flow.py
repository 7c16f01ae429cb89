"""The rules of reviewing a folder, Qt-free: which proposals the model may make again, which of several overlapping
proposals an accept keeps, what marking an image reviewed should warn about, which images a batch runs on, and how
long a batch has left.

* A proposal a person rejected is remembered (the store's ``rejections``); a later run or batch does not propose a
  box of the same label overlapping it with IoU >= ``REJECTED_IOU`` again.
* "One label per object" (off by default) is class-agnostic NMS at accept time: of overlapping proposals of
  different labels (IoU >= ``ONE_PER_OBJECT_IOU``), the best-scoring one is accepted and the others are rejected;
  a proposal overlapping an annotation is rejected, since the person's box already names that object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from model.annotations import Box

from .records import BoxRow, ImageRow

__all__ = [
    "ONE_PER_OBJECT_IOU",
    "REJECTED_IOU",
    "BatchClock",
    "batch_images",
    "drop_rejected",
    "one_label_per_object",
    "pending_warning",
]

REJECTED_IOU = 0.7  # a new proposal this close to a rejected one of its label is that proposal again
ONE_PER_OBJECT_IOU = 0.5  # two boxes of any labels overlapping this much frame one object (merging.DUPLICATE_IOU)


def drop_rejected(
    rows: Sequence[BoxRow], rejected: Sequence[tuple[str, Box]], iou: float = REJECTED_IOU
) -> tuple[list[BoxRow], int]:
    """``rows`` (new proposals) without those repeating a rejected (label, box), and how many were dropped."""
    kept = [row for row in rows if not any(label == row.label and row.box.iou(box) >= iou for label, box in rejected)]
    return kept, len(rows) - len(kept)


def one_label_per_object(
    proposals: Sequence[BoxRow], annotations: Sequence[BoxRow], iou: float = ONE_PER_OBJECT_IOU
) -> tuple[list[BoxRow], list[BoxRow]]:
    """Greedy class-agnostic NMS over the ``proposals`` a person accepts: (to accept, to reject).

    Best score first, a proposal is accepted unless it overlaps an ``annotation`` or an already accepted proposal
    by ``iou`` or more, whatever their labels. Ties keep the list's order.
    """
    taken: list[Box] = [row.box for row in annotations]
    keep: list[BoxRow] = []
    drop: list[BoxRow] = []
    for row in sorted(proposals, key=lambda r: -(r.score or 0.0)):
        if any(row.box.iou(box) >= iou for box in taken):
            drop.append(row)
        else:
            keep.append(row)
            taken.append(row.box)
    return keep, drop


def pending_warning(image: ImageRow) -> str | None:
    """What to tell a person who marks ``image`` reviewed while proposals on it wait for a decision, or None."""
    if image.reviewed or not image.proposals:
        return None
    noun = "proposal" if image.proposals == 1 else "proposals"
    return (
        f"{image.path} still has {image.proposals} {noun} nobody accepted or rejected. Exports leave proposals "
        "out, so a reviewed image with pending proposals may be missing objects. Mark it reviewed anyway?"
    )


def batch_images(images: Sequence[ImageRow], *, unreviewed_only: bool) -> list[ImageRow]:
    """The images a batch runs on: readable ones, and only those not reviewed yet when ``unreviewed_only``."""
    return [row for row in images if row.error is None and not (unreviewed_only and row.reviewed)]


@dataclass
class BatchClock:
    """How far a run is and how long it has left, from when it started (``started``, seconds on any clock)."""

    started: float

    def text(self, done: int, total: int, now: float) -> str:
        """ "n / N" and, once an image is done, the time left at the pace so far."""
        head = f"{done} / {total}"
        if done <= 0 or done >= total:
            return head
        left = (now - self.started) / done * (total - done)
        return f"{head}, about {_duration(left)} left"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
