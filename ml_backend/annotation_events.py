"""Label Studio's annotation webhooks (ANNOTATION_CREATED/UPDATED/DELETED, ANNOTATIONS_DELETED), checked with pydantic.

Only what the corrections store uses is typed; everything else Label Studio sends is allowed and ignored. A payload
of the wrong shape (a `result` that is not a list, an item that is not an object, a rotation that is a string, a
label list that is a string, a task id that is `true` or negative) raises pydantic's `ValidationError`, which the
server answers with a 400 naming the field. A well-formed annotation whose label the project's config does not
define is refused as a whole (`MiniGPTError`, a 422): storing it would add a category no one configured, and storing
the rest without it would teach the model that the object is background.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from label_studio_access.label_config import ProjectLabels
from model.errors import MiniGPTError

# Strict: JSON `true` is not task 1, and "12" is not a coordinate. Label Studio's ids count from 1; an id also names
# the image copy (images/task-<id>.png), so zero and negative ids are refused too.
LabelStudioId = Annotated[int, Field(strict=True, gt=0)]
Percent = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # Python's JSON parser accepts `Infinity`


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class RectangleValue(_Lenient):
    """A `rectanglelabels` region's value: percent of the original image, top-left corner and size."""

    x: Percent
    y: Percent
    width: Percent
    height: Percent
    rotation: Percent | None = 0.0
    rectanglelabels: list[str] = Field(min_length=1)


class RectangleItem(_Lenient):
    type: str
    from_name: str | None = None
    value: RectangleValue
    # Where Label Studio says the region came from: "manual", "prediction" (kept as predicted) or
    # "prediction-changed" (a predicted region the annotator moved, resized or relabelled). Any text is kept.
    origin: str | None = None
    score: Percent | None = None  # a prediction's per-region score


class OtherItem(_Lenient):
    """A result item of another kind (a typed prompt, a choice): not ours to check."""

    type: Any = None
    from_name: Any = None


def _item_kind(item: Any) -> str | None:
    if not isinstance(item, dict | BaseModel):
        return None  # → "each result item must be a JSON object"
    kind = item.get("type") if isinstance(item, dict) else getattr(item, "type", None)
    return "rectanglelabels" if kind == "rectanglelabels" else "other"


ResultItem = Annotated[
    Annotated[RectangleItem, Tag("rectanglelabels")] | Annotated[OtherItem, Tag("other")],
    Discriminator(
        _item_kind, custom_error_type="not_an_object", custom_error_message="each result item must be a JSON object"
    ),
]


class PredictionBody(_Lenient):
    """A prediction as Label Studio serializes it. Label Studio 1.23 puts the one the annotator saw in the
    annotation's ``prediction`` field when the annotation is saved, but only when the task has a prediction of the
    project's model version, which is the ML backend's *title* after connecting it, not the version its
    predictions carry: so this is often ``{}``, and the store falls back on what the backend served for the task."""

    result: list[ResultItem] | None = None
    model_version: str | None = None
    score: Percent | None = None


class AnnotationBody(_Lenient):
    id: LabelStudioId
    task: LabelStudioId | None = None
    result: list[ResultItem] | None = None
    was_cancelled: bool = False
    prediction: PredictionBody | None = None


class TaskBody(_Lenient):
    id: LabelStudioId | None = None
    project: int | str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class ProjectBody(_Lenient):
    id: int | str | None = None
    label_config: str | None = None


class AnnotationEvent(_Lenient):
    """ANNOTATION_CREATED, ANNOTATION_UPDATED or ANNOTATION_DELETED."""

    action: str
    annotation: AnnotationBody
    task: TaskBody | None = None
    project: ProjectBody | None = None

    @property
    def task_id(self) -> int | None:
        return (self.task.id if self.task else None) or self.annotation.task

    @property
    def project_id(self) -> int | str | None:
        return (self.project.id if self.project else None) or (self.task.project if self.task else None)

    @property
    def label_config(self) -> str | None:
        return self.project.label_config if self.project else None

    def image_reference(self, key: str) -> str | None:
        reference = self.task.data.get(key) if self.task else None
        return reference if isinstance(reference, str) and reference else None

    def regions(self, labels: ProjectLabels) -> list[tuple[str, dict]]:
        """(label, percent value) of each box drawn with the project's RectangleLabels control, in order.

        Raises MiniGPTError when a box carries a label the config does not define.
        """
        return [(label, item.value.model_dump()) for label, item in self._rectangles(self.annotation.result, labels)]

    def region_origins(self, labels: ProjectLabels) -> list[str | None]:
        """Label Studio's ``origin`` of each of :meth:`regions`, in the same order (None where it sent none)."""
        return [item.origin for _, item in self._rectangles(self.annotation.result, labels)]

    def predicted_regions(self, labels: ProjectLabels) -> tuple[str | None, list[PredictedRegion]]:
        """The model version and boxes of the prediction Label Studio says the annotator saw (see
        :class:`PredictionBody`); (None, []) when it sent none."""
        if self.annotation.prediction is None:
            return None, []
        return prediction_regions(self.annotation.prediction, labels)

    def _rectangles(self, items: list[Any] | None, labels: ProjectLabels) -> list[tuple[str, RectangleItem]]:
        try:
            return _rectangles(items, labels, strict=True)
        except _UnknownLabel as err:
            known = {spec.value for spec in labels.labels}
            raise MiniGPTError(
                f"annotation {self.annotation.id}: label {err.label!r} is not one of the project's labels "
                f"({', '.join(sorted(known))}); add it to the RectangleLabels '{labels.from_name}' in the "
                "labeling config, or relabel the box, and submit again"
            ) from None


PredictedRegion = tuple[str, dict, float | None]  # label, Label Studio percent value, score


def prediction_regions(prediction: PredictionBody, labels: ProjectLabels) -> tuple[str | None, list[PredictedRegion]]:
    """The model version and the (label, percent value, score) boxes of a prediction; boxes of labels the config
    does not define are left out (an annotator could not keep them)."""
    boxes = [
        (label, item.value.model_dump(), item.score if item.score is not None else prediction.score)
        for label, item in _rectangles(prediction.result, labels, strict=False)
    ]
    return prediction.model_version or None, boxes


class _UnknownLabel(Exception):
    def __init__(self, label: str):
        self.label = label


def _rectangles(items: list[Any] | None, labels: ProjectLabels, *, strict: bool) -> list[tuple[str, RectangleItem]]:
    """(label, item) of each box of the project's RectangleLabels control; a label the config does not define
    raises _UnknownLabel (``strict``) or leaves the box out."""
    known = {spec.value for spec in labels.labels}
    regions = []
    for item in items or []:
        if not isinstance(item, RectangleItem) or item.from_name != labels.from_name:
            continue  # another control's result: not a box for this dataset
        unknown = [label for label in item.value.rectanglelabels if label not in known]
        if unknown and strict:
            raise _UnknownLabel(unknown[0])
        if not unknown:
            # COCO holds one category per box: the first label, as Label Studio shows it
            regions.append((item.value.rectanglelabels[0], item))
    return regions


class AnnotationRef(_Lenient):
    id: LabelStudioId


class AnnotationsDeleted(_Lenient):
    """ANNOTATIONS_DELETED: Label Studio 1.23 lists the deleted ids (and no task)."""

    action: str
    annotations: list[AnnotationRef] | None = None

    @property
    def ids(self) -> list[int]:
        return [ref.id for ref in self.annotations or []]
