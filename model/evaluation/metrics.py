"""Pure metrics of proposals against a labelled dataset: IoU, RefCOCO-style accuracy, COCO box AP (pycocotools) and
labeller acceptance. No model and no torch here; `model.evaluation.runner` asks the model and scores with these.

Conventions (all rates are fractions in [0, 1], not percentages):

* A rate whose denominator is zero (no items, no proposals, no ground truth) is ``None``, not 0: "not measured"
  must not read as "always wrong".
* Boxes are continuous pixel coordinates. `iou` is the standard continuous IoU; `iou_official` reproduces the
  official RefCOCO eval, which treats corners as inclusive integer pixels ("+1": width = x1 - x0 + 1).
* Images are identified by their index in ``dataset.images``; labels are category *names*.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from pydantic import BaseModel, ConfigDict, Field

from ..annotations import Box, Dataset, Task
from ..errors import MiniGPTError

if TYPE_CHECKING:  # the metrics must stay importable without torch; only the runner needs the model
    pass


IOU_THRESHOLD = 0.5
EVALUATED_TASKS: tuple[Task, ...] = (Task.refer, Task.detection)
CategoryMode = Literal["all", "present"]


class EvaluationError(MiniGPTError, ValueError):
    """The dataset or the predictions cannot be scored as given (the message says which item and why)."""


# --- IoU -------------------------------------------------------------------------------------------------------------
def iou(a: Box, b: Box) -> float:
    """Standard IoU on continuous coordinates (COCO's convention)."""
    return a.iou(b)


def iou_official(a: Box, b: Box) -> float:
    """IoU as the official RefCOCO eval computes it: corners are inclusive pixels, so every width and height
    (of both boxes and of the intersection) gets +1. It is higher than `iou` for small overlapping boxes."""
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0) + 1)
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0) + 1)
    inter = ix * iy
    union = (a.width + 1) * (a.height + 1) + (b.width + 1) * (b.height + 1) - inter
    return inter / union


def rate_or_none(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


# --- referring expressions -------------------------------------------------------------------------------------------
class ReferAccuracy(BaseModel):
    """Referring-expression accuracy, both conventions, and how many refer proposals a labeller would keep.

    ``acc_official``: iou_official > 0.5 (strict), as the official eval. ``acc_iou50``: standard IoU >= 0.5.
    A missing prediction (no box in the answer) counts as a miss in both, and is not a proposal.
    """

    n: int = Field(description="referring expressions asked")
    hits_official: int
    hits_iou50: int
    parse_failures: int = Field(description="answers without a box")
    acc_official: float | None = Field(description="hits_official / n; None when n == 0")
    acc_iou50: float | None = Field(description="hits_iou50 / n; None when n == 0")
    n_proposals: int = Field(description="answers with a box")
    n_kept: int = Field(description="proposals with IoU >= 0.5 against the referred box")
    acceptance_rate: float | None = Field(description="n_kept / n_proposals; None when there are no proposals")


def refer_accuracy(pairs: Iterable[tuple[Box | None, Box]]) -> ReferAccuracy:
    """Score (predicted box or None, ground-truth box) pairs. Empty input gives n=0 and None rates."""
    n = hits_official = hits_iou50 = failures = 0
    for predicted, truth in pairs:
        n += 1
        if predicted is None:
            failures += 1
            continue
        hits_official += int(iou_official(predicted, truth) > IOU_THRESHOLD)  # strict, as the official eval
        hits_iou50 += int(iou(predicted, truth) >= IOU_THRESHOLD)
    proposals = n - failures
    return ReferAccuracy(
        n=n,
        hits_official=hits_official,
        hits_iou50=hits_iou50,
        parse_failures=failures,
        acc_official=rate_or_none(hits_official, n),
        acc_iou50=rate_or_none(hits_iou50, n),
        n_proposals=proposals,
        n_kept=hits_iou50,
        acceptance_rate=rate_or_none(hits_iou50, proposals),
    )


# --- detection -------------------------------------------------------------------------------------------------------
class Detection(BaseModel):
    """One detected box: which image (index into ``dataset.images``), which category name, where, how sure."""

    model_config = ConfigDict(frozen=True)

    image_index: int = Field(ge=0)
    label: str
    box: Box
    score: float
    raw_score: float | None = None  # the score before the model's calibration, when it has one


class CategoryAP(BaseModel):
    ap: float | None = Field(description="AP over IoU 0.50:0.95; None when the category has no ground truth")
    ap50: float | None
    n_gt: int
    n_detections: int


class DetectionMetrics(BaseModel):
    """COCO box metrics (pycocotools COCOeval, area 'all'). A metric is None when there is no ground-truth box.

    COCO conventions apply: AP averages over categories that have ground truth, so detections of a category
    without any ground-truth box in the whole dataset do not count; duplicates of a matched box are false
    positives; AP uses the 100 highest-scored detections per image and category.
    """

    ap: float | None = Field(description="AP at IoU 0.50:0.95")
    ap50: float | None
    ap75: float | None
    ar1: float | None = Field(description="AR with at most 1 detection per image and category")
    ar10: float | None
    ar100: float | None
    n_images: int
    n_gt: int
    n_detections: int
    per_category: dict[str, CategoryAP] = Field(default_factory=dict)


def category_ids(dataset: Dataset) -> dict[str, int]:
    """Category name → id, after checking that every annotation's label is one of the categories."""
    ids = {c.name: c.id for c in dataset.categories}
    for index, record in enumerate(dataset.images):
        for annotation in record.annotations:
            if annotation.label not in ids:
                raise EvaluationError(
                    f"image {index} ({record.path}) has an annotation labelled {annotation.label!r}, which is not "
                    f"one of the dataset's categories ({', '.join(ids) or 'none'}); add the category or fix the label"
                )
    return ids


def _check_detections(dataset: Dataset, detections: Sequence[Detection], ids: dict[str, int]) -> None:
    """Unknown labels raise rather than being dropped: a typo would otherwise silently improve precision."""
    unknown = sorted({d.label for d in detections} - ids.keys())
    if unknown:
        raise EvaluationError(
            f"detections labelled {', '.join(map(repr, unknown))} are not dataset categories "
            f"({', '.join(ids) or 'none'}); map them to a category name or leave them out"
        )
    for d in detections:
        if d.image_index >= len(dataset.images):
            raise EvaluationError(
                f"a detection refers to image {d.image_index}, but the dataset has only {len(dataset.images)} images"
            )


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _coco_box(annotation_id: int, image_index: int, category_id: int, box: Box) -> dict:
    return {
        "id": annotation_id,
        "image_id": image_index + 1,
        "category_id": category_id,
        "bbox": list(box.xywh),
        "area": box.area,
        "iscrowd": 0,
    }


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]  # COCOeval marks "no ground truth" with -1
    return _clean(float(np.mean(valid))) if valid.size else None


def _clean(value: float) -> float:
    """Drop COCOeval's epsilon (precision = tp / (tp + fp + eps)) so that a perfect score reads exactly 1.0."""
    return round(value, 12)


def coco_detection_metrics(dataset: Dataset, detections: Sequence[Detection]) -> DetectionMetrics:
    """COCO box AP/AR of ``detections`` against the dataset's annotations (built in memory, image ids 1..N in
    dataset order, the dataset's category ids). Raises EvaluationError for labels that are not categories."""
    ids = category_ids(dataset)
    _check_detections(dataset, detections, ids)
    names = {v: k for k, v in ids.items()}
    images = [
        {"id": i + 1, "width": r.width, "height": r.height, "file_name": str(r.path)}
        for i, r in enumerate(dataset.images)
    ]
    categories = [{"id": c.id, "name": c.name} for c in dataset.categories]
    truth = [(i, ids[a.label], a.box) for i, record in enumerate(dataset.images) for a in record.annotations]
    gt_counts = Counter(names[c] for _, c, _ in truth)
    dt_counts = Counter(d.label for d in detections)
    per_category = {
        name: CategoryAP(ap=None, ap50=None, n_gt=gt_counts[name], n_detections=dt_counts[name]) for name in ids
    }
    if not truth:  # nothing to find: every AP/AR is undefined (COCOeval would report -1)
        return DetectionMetrics(
            ap=None,
            ap50=None,
            ap75=None,
            ar1=None,
            ar10=None,
            ar100=None,
            n_images=len(images),
            n_gt=0,
            n_detections=len(detections),
            per_category=per_category,
        )

    gt = _coco(images, categories, [_coco_box(k + 1, i, c, box) for k, (i, c, box) in enumerate(truth)])
    dt_annotations = [
        _coco_box(k + 1, d.image_index, ids[d.label], d.box) | {"score": float(d.score)}
        for k, d in enumerate(detections)
    ]
    dt = _coco(images, categories, dt_annotations)  # not loadRes: it cannot take an empty list
    evaluator = COCOeval(gt, dt, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress and the summary table
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [None if s < 0 else _clean(float(s)) for s in evaluator.stats]

    precision = evaluator.eval["precision"]  # [IoU threshold, recall threshold, category, area range, max dets]
    params = evaluator.params
    t50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    for k, category_id in enumerate(params.catIds):
        name = names[category_id]
        per_category[name] = per_category[name].model_copy(
            update={"ap": _mean_valid(precision[:, :, k, 0, -1]), "ap50": _mean_valid(precision[t50, :, k, 0, -1])}
        )
    return DetectionMetrics(
        ap=stats[0],
        ap50=stats[1],
        ap75=stats[2],
        ar1=stats[6],
        ar10=stats[7],
        ar100=stats[8],
        n_images=len(images),
        n_gt=len(truth),
        n_detections=len(detections),
        per_category=per_category,
    )


# --- acceptance ------------------------------------------------------------------------------------------------------
def kept_detections(
    dataset: Dataset, detections: Sequence[Detection], iou_threshold: float = IOU_THRESHOLD
) -> list[bool]:
    """Per detection, in the given order: would a labeller keep it (see :class:`Acceptance` for the matching)?"""
    ids = category_ids(dataset)
    _check_detections(dataset, detections, ids)
    unmatched: dict[tuple[int, str], list[Box]] = {}
    for i, record in enumerate(dataset.images):
        for a in record.annotations:
            unmatched.setdefault((i, a.label), []).append(a.box)
    kept = [False] * len(detections)
    # stable: equal scores keep their given order
    for index in sorted(range(len(detections)), key=lambda k: -detections[k].score):
        d = detections[index]
        candidates = unmatched.get((d.image_index, d.label), [])
        overlaps = [iou(d.box, box) for box in candidates]
        if overlaps and max(overlaps) >= iou_threshold:
            candidates.pop(int(np.argmax(overlaps)))
            kept[index] = True
    return kept


class Acceptance(BaseModel):
    """What a labeller would keep: a proposal is kept when it matches a still-unmatched ground-truth box of the
    same label in the same image with IoU >= 0.5; proposals are matched one-to-one in descending score order,
    so a duplicate of an already-matched box is not kept. Rates are None when their denominator is 0."""

    n_proposals: int
    n_kept: int
    n_gt: int
    n_matched: int = Field(description="ground-truth boxes matched by a kept proposal (equals n_kept)")
    acceptance_rate: float | None = Field(description="n_kept / n_proposals")
    coverage: float | None = Field(description="n_matched / n_gt")


def acceptance(dataset: Dataset, detections: Sequence[Detection], iou_threshold: float = IOU_THRESHOLD) -> Acceptance:
    """Greedy one-to-one matching; each proposal takes the best-overlapping unmatched box of its label."""
    n_gt = sum(len(record.annotations) for record in dataset.images)
    kept = sum(kept_detections(dataset, detections, iou_threshold))
    return Acceptance(
        n_proposals=len(detections),
        n_kept=kept,
        n_gt=n_gt,
        n_matched=kept,
        acceptance_rate=rate_or_none(kept, len(detections)),
        coverage=rate_or_none(kept, n_gt),
    )
