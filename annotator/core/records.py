"""Plain records the desktop app's Qt-free core passes around: images, boxes and labels as the store keeps them.

Boxes are in pixels of the upright image (EXIF orientation applied), like everywhere in :mod:`model`.
A box row is either a *proposal* (model output, not yet owned by anyone) or an *annotation* (owned by a person).
Model output never replaces or moves an annotation; accepting a proposal turns it into one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from model.annotations import Box, Origin, Task


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
    origin: Origin | None = None  # annotations only: manual, accepted or edited
    score: float | None = None  # the model's score, kept after acceptance
    task: Task | None = None  # the task that proposed it
    prompt: str | None = None  # the instruction sent to the model
    phrase: str | None = None
    id: int | None = None

    @property
    def is_proposal(self) -> bool:
        return self.state is BoxState.proposal

    def moved_to(self, box: Box) -> BoxRow:
        """The same box at a new place; an accepted proposal that a person moves becomes ``edited``."""
        return replace(self, box=box, origin=_edited(self.origin))

    def relabelled(self, label: str) -> BoxRow:
        return replace(self, label=label, origin=_edited(self.origin))

    def accepted(self) -> BoxRow:
        return replace(self, state=BoxState.annotation, origin=Origin.accepted)


def _edited(origin: Origin | None) -> Origin | None:
    return Origin.edited if origin is Origin.accepted else origin


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
