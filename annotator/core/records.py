"""Plain records the desktop app's Qt-free core passes around: images, boxes and labels as the store keeps them.

Boxes are in pixels of the upright image (EXIF orientation applied), like everywhere in :mod:`model`.
A box row is either a *proposal* (model output, not yet owned by anyone) or an *annotation* (owned by a person).
Model output never replaces or moves an annotation; accepting a proposal turns it into one.

Every box keeps its provenance: ``origin``, and for model boxes the model version, task and prompt, plus the time
of its last change. A person who moves, resizes or relabels a proposal (or an accepted one) makes it theirs:
an ``edited`` annotation that keeps the proposal as the model made it (``original``) and no longer presents the
model's score (nor, once relabelled, its phrase) as its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum

from model.annotations import Box, Origin, OriginalProposal, Task


def now() -> datetime:
    """The time of a change, in UTC to the second: what the store keeps, so a row reads back equal to itself."""
    return datetime.now(UTC).replace(microsecond=0)


class BoxState(str, Enum):
    proposal = "proposal"  # model output awaiting review; drawn dashed
    annotation = "annotation"  # owned by a person: drawn by hand, or an accepted proposal


class ImageStatus(str, Enum):
    """What the file list shows for an image."""

    not_started = "not started"
    has_proposals = "has proposals"
    in_progress = "in progress"  # annotations, nothing pending, not marked reviewed
    reviewed = "reviewed"
    unreadable = "unreadable"


@dataclass(frozen=True)
class BoxRow:
    """One box on one image. ``id`` is None until the store has assigned one."""

    image_id: int
    label: str
    box: Box
    state: BoxState
    origin: Origin | None = None  # proposals: proposed; annotations: manual, accepted or edited
    score: float | None = None  # the model's score for this very box, kept after acceptance (not after an edit)
    task: Task | None = None  # the task that proposed it
    prompt: str | None = None  # the instruction sent to the model
    phrase: str | None = None
    model_version: str | None = None  # the model that proposed it
    changed_at: datetime | None = None  # the last change, by a person or the model (UTC)
    original: OriginalProposal | None = None  # edited boxes: the proposal as the model made it
    id: int | None = None

    @property
    def is_proposal(self) -> bool:
        return self.state is BoxState.proposal

    @property
    def from_model(self) -> bool:
        return self.is_proposal or (self.origin is not None and self.origin.from_model)

    def moved_to(self, box: Box, at: datetime | None = None) -> BoxRow:
        """The same box at a new place (moved or resized); a model box a person moves becomes their ``edited`` one."""
        return self._edited(at, box=box)

    def relabelled(self, label: str, at: datetime | None = None) -> BoxRow:
        return self._edited(at, label=label)

    def accepted(self, at: datetime | None = None) -> BoxRow:
        return replace(self, state=BoxState.annotation, origin=Origin.accepted, changed_at=at or now())

    def _edited(self, at: datetime | None, **change: object) -> BoxRow:
        changed = replace(self, changed_at=at or now(), **change)  # type: ignore[arg-type]
        # A score was for the box as it was, and a phrase named the object under its label: neither is the changed
        # box's own. This holds for a person's box that came with them too (a detector's COCO file read as manual).
        phrase = self.phrase if changed.label == self.label else None
        if not self.from_model:
            return replace(changed, score=None, phrase=phrase)  # a person's own box stays theirs (manual)
        original = self.original or OriginalProposal(box=self.box, label=self.label, score=self.score)
        return replace(
            changed, state=BoxState.annotation, origin=Origin.edited, original=original, score=None, phrase=phrase
        )


@dataclass(frozen=True)
class ImageRow:
    """One image of the project folder. ``path`` is relative to the folder, with forward slashes."""

    id: int
    path: str
    width: int | None  # upright size; None while unknown or unreadable
    height: int | None
    reviewed: bool = False
    error: str | None = None  # why the file cannot be opened, if it cannot
    annotations: int = 0
    proposals: int = 0
    lowest_score: float | None = None  # the lowest score among its proposals: how risky the image is to accept

    @property
    def status(self) -> ImageStatus:
        if self.error is not None:
            return ImageStatus.unreadable
        if self.reviewed:
            return ImageStatus.reviewed
        if self.proposals:
            return ImageStatus.has_proposals
        if self.annotations:
            return ImageStatus.in_progress
        return ImageStatus.not_started


@dataclass(frozen=True)
class LabelRow:
    name: str
    color: str  # "#rrggbb", fixed when the label is first seen so it never changes across images or sessions
    prompt: str | None = None  # what to ask the model for this label, if not its name
