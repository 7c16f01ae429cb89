"""The pydantic data model shared by the CLI, the Label Studio backend and the desktop app.

Every box is in pixels of the *upright* image (EXIF orientation applied), as floats with x0 < x1 and y0 < y1.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Task(str, Enum):
    """MiniGPT-v2 task identifiers, plus untagged free chat."""

    detection = "detection"
    refer = "refer"
    grounding = "grounding"
    identify = "identify"
    vqa = "vqa"
    caption = "caption"
    chat = "chat"

    @property
    def identifier(self) -> str:
        """The literal tag the model was trained with, e.g. ``[refer]``; empty for chat."""
        return "" if self is Task.chat else f"[{self.value}]"

    @property
    def answers_with_boxes(self) -> bool:
        return self in (Task.detection, Task.refer, Task.grounding)


class Box(BaseModel):
    """An axis-aligned box in pixels: (x0, y0) top-left, (x1, y1) bottom-right; finite coordinates only."""

    # Infinity or NaN is never a box (a COCO x + w that overflows, `--box 0,0,inf,10`, JSON `Infinity`): refuse it
    # here, where every surface builds its boxes, instead of letting it crash the grid conversion later.
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    x0: float
    y0: float
    x1: float
    y1: float

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise ValueError(f"box must have x0 < x1 and y0 < y1, got ({self.x0}, {self.y0}, {self.x1}, {self.y1})")
        return self

    @classmethod
    def from_xyxy(cls, xyxy: tuple[float, float, float, float] | list[float]) -> Box:
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        return cls(x0=x0, y0=y0, x1=x1, y1=y1)

    @classmethod
    def from_xywh(cls, xywh: tuple[float, float, float, float] | list[float]) -> Box:
        x, y, w, h = (float(v) for v in xywh)
        return cls(x0=x, y0=y, x1=x + w, y1=y + h)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.width, self.height)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.height

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


class Proposal(BaseModel):
    """One box the model proposed, before a person has accepted it."""

    model_config = ConfigDict(frozen=True)

    box: Box
    label: str = Field(description="the category the box is for: the query, the phrase, or the chosen label")
    phrase: str | None = Field(default=None, description="the <p>phrase</p> the model attached, if any")
    score: float = Field(
        ge=0.0,
        le=1.0,
        description="the calibrated probability that a person keeps the box when the model has a calibration "
        "(model.calibration), else the raw score (model.scoring)",
    )
    raw_score: float | None = Field(default=None, ge=0.0, le=1.0, description="the raw score, when score is calibrated")
    task: Task
    prompt: str = Field(description="the instruction sent to the model, task identifier included")
    model_version: str = ""


class Origin(str, Enum):
    """Where a box came from. Values are only ever added, so every file and store written before stays readable."""

    manual = "manual"  # drawn (or imported) by a person
    proposed = "proposed"  # model output nobody has reviewed yet
    accepted = "accepted"  # a proposal accepted unchanged
    edited = "edited"  # a proposal a person moved, resized or relabelled (accepting it with changes)

    @property
    def from_model(self) -> bool:
        """The box (or what it was made from) is model output, so model_version, task and prompt describe it."""
        return self is not Origin.manual


class OriginalProposal(BaseModel):
    """The proposal as the model made it, kept beside a box a person then edited: what the edit changed.

    Fields are None where nothing is known (a project stored before provenance kept only the score).
    """

    model_config = ConfigDict(frozen=True)

    box: Box | None = None
    label: str | None = None
    score: float | None = Field(default=None, ge=0.0, le=1.0)


class Annotation(BaseModel):
    """A box a person owns (or, with ``origin`` proposed, model output to review). Model output never overwrites one.

    ``score`` and ``phrase`` are the model's words about *this* box: an edited box has no score of its own (the
    model scored the box it proposed, which ``original`` keeps).
    """

    box: Box
    label: str
    phrase: str | None = Field(default=None, description="a referring expression for this one object, if any")
    origin: Origin = Origin.manual
    score: float | None = None
    model_version: str | None = Field(default=None, description="the model that proposed it (model boxes)")
    task: Task | None = Field(default=None, description="the task that proposed it (model boxes)")
    prompt: str | None = Field(default=None, description="the instruction sent to the model (model boxes)")
    changed_at: datetime | None = Field(default=None, description="when a person or the model last changed it")
    original: OriginalProposal | None = Field(default=None, description="the proposal an edited box was made from")
    attributes: dict[str, str | float | int | bool] | None = Field(
        default=None, description="extra facts COCO exports keep per box (e.g. raw score)"
    )

    @property
    def has_provenance(self) -> bool:
        """Says anything about where it came from; a box that does not is a person's (``manual``)."""
        return self.origin is not Origin.manual or any(
            value is not None for value in (self.model_version, self.task, self.prompt, self.changed_at, self.original)
        )

    @field_validator("label")
    @classmethod
    def _label_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("label must not be blank")
        return v


class ImageRecord(BaseModel):
    path: Path
    id: int | None = Field(default=None, ge=1, description="its id in a COCO file written; None: its position")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    annotations: list[Annotation] = Field(default_factory=list)
    reviewed: bool = False


class Category(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int = Field(ge=1)
    name: str


class Dataset(BaseModel):
    categories: list[Category] = Field(default_factory=list)
    images: list[ImageRecord] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_categories(self) -> Dataset:
        ids = [c.id for c in self.categories]
        names = [c.name for c in self.categories]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise ValueError("category ids and names must be unique")
        return self
