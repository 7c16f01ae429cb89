"""How good are the model's proposals on a labelled dataset? (reference/minigptv2-spec.md §7)

Pure metrics first (IoU, RefCOCO-style accuracy, COCO box AP via pycocotools, labeller acceptance), then a runner
that asks a `Proposer` for `[refer]` and `[detection]` answers on a `Dataset` and scores them into one
JSON-serialisable `EvaluationReport`.

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
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from pydantic import BaseModel, ConfigDict, Field

from .annotations import Box, Dataset, ImageRecord, Task
from .errors import MiniGPTError
from .images import LoadedImage, load_image

if TYPE_CHECKING:  # the metrics must stay importable without torch; only the runner needs the model
    from .proposer import GenerationOptions, Proposer, ProposeRequest

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


def _rate(numerator: int, denominator: int) -> float | None:
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
        acc_official=_rate(hits_official, n),
        acc_iou50=_rate(hits_iou50, n),
        n_proposals=proposals,
        n_kept=hits_iou50,
        acceptance_rate=_rate(hits_iou50, proposals),
    )


# --- detection -------------------------------------------------------------------------------------------------------
class Detection(BaseModel):
    """One detected box: which image (index into ``dataset.images``), which category name, where, how sure."""

    model_config = ConfigDict(frozen=True)

    image_index: int = Field(ge=0)
    label: str
    box: Box
    score: float


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


def _category_ids(dataset: Dataset) -> dict[str, int]:
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
    ids = _category_ids(dataset)
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
    ids = _category_ids(dataset)
    _check_detections(dataset, detections, ids)
    unmatched: dict[tuple[int, str], list[Box]] = {}
    for i, record in enumerate(dataset.images):
        for a in record.annotations:
            unmatched.setdefault((i, a.label), []).append(a.box)
    n_gt = sum(len(boxes) for boxes in unmatched.values())
    kept = 0
    for d in sorted(detections, key=lambda d: -d.score):  # stable: equal scores keep their given order
        candidates = unmatched.get((d.image_index, d.label), [])
        overlaps = [iou(d.box, box) for box in candidates]
        if overlaps and max(overlaps) >= iou_threshold:
            candidates.pop(int(np.argmax(overlaps)))
            kept += 1
    return Acceptance(
        n_proposals=len(detections),
        n_kept=kept,
        n_gt=n_gt,
        n_matched=kept,
        acceptance_rate=_rate(kept, len(detections)),
        coverage=_rate(kept, n_gt),
    )


# --- running the model -----------------------------------------------------------------------------------------------
class ReferPrediction(BaseModel):
    """One referring expression asked of the model, with its answer and the box it refers to."""

    image_index: int
    annotation_index: int
    query: str
    predicted: Box | None = Field(description="the first proposed box; None when the answer had no box")
    score: float | None
    truth: Box


class Predictions(BaseModel):
    """Everything the model answered, before scoring; can be saved and re-scored with `score_predictions`."""

    refer: list[ReferPrediction] = Field(default_factory=list)
    detections: list[Detection] = Field(default_factory=list)
    refer_skipped: int = Field(default=0, description="annotations without a phrase whose label is not unique")
    n_requests: int = 0


def refer_queries(record: ImageRecord) -> tuple[list[tuple[int, str]], int]:
    """(annotation index, query) for each annotation that can be referred to unambiguously, and how many could not.

    The query is the annotation's phrase, else its label when no other box in the image has that label.
    """
    counts = Counter(a.label for a in record.annotations)
    queries: list[tuple[int, str]] = []
    for j, annotation in enumerate(record.annotations):
        phrase = (annotation.phrase or "").strip()
        if phrase:
            queries.append((j, phrase))
        elif counts[annotation.label] == 1:
            queries.append((j, annotation.label))
    return queries, len(record.annotations) - len(queries)


def detection_queries(dataset: Dataset, record: ImageRecord, categories: CategoryMode) -> list[str]:
    """All categories by default, so false positives on images without that category count."""
    if categories == "all":
        return [c.name for c in dataset.categories]
    present = {a.label for a in record.annotations}
    return [c.name for c in dataset.categories if c.name in present]


def _resolve(path: Path, images_dir: str | os.PathLike | None) -> Path:
    return path if images_dir is None or path.is_absolute() else Path(images_dir) / path


def collect_predictions(
    proposer: Proposer,
    dataset: Dataset,
    *,
    tasks: Sequence[Task | str] = EVALUATED_TASKS,
    batch_size: int = 8,
    categories: CategoryMode = "all",
    images_per_chunk: int = 32,
    images_dir: str | os.PathLike | None = None,
    options: GenerationOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Predictions:
    """Ask the model every refer/detection question the dataset supports. Images are decoded once each and
    processed ``images_per_chunk`` at a time, so memory stays bounded on large datasets. ``on_progress(done,
    total)`` counts requests."""
    from .proposer import ProposeRequest  # torch is only needed here

    wanted = evaluated_tasks(tasks)
    if categories not in ("all", "present"):
        raise EvaluationError(f"categories must be 'all' or 'present', got {categories!r}")
    if images_per_chunk < 1:
        raise EvaluationError(f"images_per_chunk must be at least 1, got {images_per_chunk}")
    _category_ids(dataset)  # fail on unknown labels before any model work

    plans = []
    skipped = 0
    for record in dataset.images:
        refer, ambiguous = refer_queries(record) if Task.refer in wanted else ([], 0)
        detect = detection_queries(dataset, record, categories) if Task.detection in wanted else []
        plans.append((refer, detect))
        skipped += ambiguous
    total = sum(len(r) + len(d) for r, d in plans)

    predictions = Predictions(refer_skipped=skipped, n_requests=total)
    done = 0
    for start in range(0, len(dataset.images), images_per_chunk):
        chunk = range(start, min(start + images_per_chunk, len(dataset.images)))
        requests: list[ProposeRequest] = []
        asked: list[tuple[int, int | None]] = []  # (image, annotation index for refer; None for detection)
        for i in chunk:
            refer, detect = plans[i]
            if not refer and not detect:
                continue  # nothing to ask: do not even decode the image
            image = _load(dataset.images[i], i, images_dir)
            for j, query in refer:
                requests.append(ProposeRequest(image=image, task=Task.refer, query=query))
                asked.append((i, j))
            for name in detect:
                requests.append(ProposeRequest(image=image, task=Task.detection, query=name))
                asked.append((i, None))
        if not requests:
            continue

        def progress(n: int, _total: int, offset: int = done) -> None:
            if on_progress is not None:
                on_progress(offset + n, total)

        results = proposer.propose_batch(requests, options=options, batch_size=batch_size, on_progress=progress)
        done += len(requests)
        for (i, j), request, result in zip(asked, requests, results, strict=True):
            query = request.query or ""
            if j is None:  # detection: every box becomes a detection of the asked category
                predictions.detections.extend(
                    Detection(image_index=i, label=query, box=p.box, score=p.score) for p in result.proposals
                )
                continue
            first = result.proposals[0] if result.proposals else None  # refer answers with one box
            predictions.refer.append(
                ReferPrediction(
                    image_index=i,
                    annotation_index=j,
                    query=query,
                    predicted=first.box if first else None,
                    score=first.score if first else None,
                    truth=dataset.images[i].annotations[j].box,
                )
            )
    return predictions


def evaluated_tasks(tasks: Sequence[Task | str]) -> tuple[Task, ...]:
    """The tasks, deduplicated; EvaluationError unless each is refer or detection."""
    wanted = tuple(dict.fromkeys(Task(t) for t in tasks))
    other = [t.value for t in wanted if t not in EVALUATED_TASKS]
    if other or not wanted:
        raise EvaluationError(
            f"only refer and detection can be evaluated against boxes, got {', '.join(other) or 'no task'}"
        )
    return wanted


def _load(record: ImageRecord, index: int, images_dir: str | os.PathLike | None) -> LoadedImage:
    image = load_image(_resolve(record.path, images_dir))
    if (image.width, image.height) != (record.width, record.height):
        # Boxes would be compared across two pixel grids; usually an EXIF rotation or a replaced file.
        raise EvaluationError(
            f"image {index} ({record.path}) is {image.width}x{image.height} upright, but the dataset says "
            f"{record.width}x{record.height}; fix the dataset's width/height (boxes are in upright pixels)"
        )
    return image


# --- the report ------------------------------------------------------------------------------------------------------
class ReferReport(ReferAccuracy):
    skipped_ambiguous: int = Field(description="annotations not asked: no phrase and a label shared in the image")


class DetectionReport(DetectionMetrics):
    n_proposals: int
    n_kept: int
    n_matched: int
    acceptance_rate: float | None
    coverage: float | None


class OverallAcceptance(BaseModel):
    n_proposals: int
    n_kept: int
    acceptance_rate: float | None = Field(description="n_kept / n_proposals over both tasks; None when 0")


class EvaluationReport(BaseModel):
    model_version: str
    n_images: int
    n_annotations: int
    categories: list[str]
    category_mode: CategoryMode
    tasks: list[Task]
    n_requests: int
    refer: ReferReport | None = None
    detection: DetectionReport | None = None
    overall: OverallAcceptance
    seconds: float

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> EvaluationReport:
        return cls.model_validate_json(text)

    def format_table(self) -> str:
        """A plain-text table for terminals and logs."""
        rows: list[tuple[str, str, str, str]] = []
        if self.refer is not None:
            r = self.refer
            rows += [
                ("refer", "accuracy (official, IoU+1 > 0.5)", _num(r.acc_official), f"{r.hits_official}/{r.n}"),
                ("refer", "accuracy (IoU >= 0.5)", _num(r.acc_iou50), f"{r.hits_iou50}/{r.n}"),
                ("refer", "answers without a box", "", str(r.parse_failures)),
                ("refer", "skipped (ambiguous)", "", str(r.skipped_ambiguous)),
                ("refer", "acceptance", _num(r.acceptance_rate), f"{r.n_kept}/{r.n_proposals}"),
            ]
        if self.detection is not None:
            d = self.detection
            rows += [
                ("detection", "AP (IoU 0.50:0.95)", _num(d.ap), ""),
                ("detection", "AP50", _num(d.ap50), ""),
                ("detection", "AP75", _num(d.ap75), ""),
                ("detection", "AR@1", _num(d.ar1), ""),
                ("detection", "AR@10", _num(d.ar10), ""),
                ("detection", "AR@100", _num(d.ar100), ""),
                ("detection", "acceptance", _num(d.acceptance_rate), f"{d.n_kept}/{d.n_proposals}"),
                ("detection", "coverage", _num(d.coverage), f"{d.n_matched}/{d.n_gt}"),
            ]
            rows += [
                ("detection", f"AP50 {name}", _num(c.ap50), f"{c.n_gt} gt, {c.n_detections} det")
                for name, c in d.per_category.items()
            ]
        o = self.overall
        rows.append(("overall", "acceptance", _num(o.acceptance_rate), f"{o.n_kept}/{o.n_proposals}"))
        title = (
            f"model {self.model_version or '?'}: {self.n_images} images, {self.n_annotations} annotations, "
            f"{self.n_requests} requests, {self.seconds:.1f} s"
        )
        return title + "\n" + _render(("task", "metric", "value", "count"), rows, right={2, 3})


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _render(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if k in right else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def score_predictions(
    dataset: Dataset,
    predictions: Predictions,
    *,
    tasks: Sequence[Task | str] = EVALUATED_TASKS,
    categories: CategoryMode = "all",
    model_version: str = "",
    seconds: float = 0.0,
) -> EvaluationReport:
    """Turn collected predictions into the report (no model needed)."""
    wanted = evaluated_tasks(tasks)
    refer = detection = None
    proposals = kept = 0
    if Task.refer in wanted:
        accuracy = refer_accuracy((p.predicted, p.truth) for p in predictions.refer)
        refer = ReferReport(**accuracy.model_dump(), skipped_ambiguous=predictions.refer_skipped)
        proposals, kept = proposals + refer.n_proposals, kept + refer.n_kept
    if Task.detection in wanted:
        metrics = coco_detection_metrics(dataset, predictions.detections)
        accepted = acceptance(dataset, predictions.detections)
        detection = DetectionReport(
            **metrics.model_dump(),
            n_proposals=accepted.n_proposals,
            n_kept=accepted.n_kept,
            n_matched=accepted.n_matched,
            acceptance_rate=accepted.acceptance_rate,
            coverage=accepted.coverage,
        )
        proposals, kept = proposals + accepted.n_proposals, kept + accepted.n_kept
    return EvaluationReport(
        model_version=model_version,
        n_images=len(dataset.images),
        n_annotations=sum(len(r.annotations) for r in dataset.images),
        categories=[c.name for c in dataset.categories],
        category_mode=categories,
        tasks=list(wanted),
        n_requests=predictions.n_requests,
        refer=refer,
        detection=detection,
        overall=OverallAcceptance(n_proposals=proposals, n_kept=kept, acceptance_rate=_rate(kept, proposals)),
        seconds=seconds,
    )


def evaluate_model(
    proposer: Proposer,
    dataset: Dataset,
    *,
    tasks: Sequence[Task | str] = EVALUATED_TASKS,
    batch_size: int = 8,
    categories: CategoryMode = "all",
    max_images: int | None = None,
    images_per_chunk: int = 32,
    images_dir: str | os.PathLike | None = None,
    options: GenerationOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """Run the model on (the first ``max_images`` images of) the dataset and score refer and detection."""
    started = time.perf_counter()
    if max_images is not None:
        if max_images < 1:
            raise EvaluationError(f"max_images must be at least 1, got {max_images}")
        dataset = dataset.model_copy(update={"images": dataset.images[:max_images]})
    predictions = collect_predictions(
        proposer,
        dataset,
        tasks=tasks,
        batch_size=batch_size,
        categories=categories,
        images_per_chunk=images_per_chunk,
        images_dir=images_dir,
        options=options,
        on_progress=on_progress,
    )
    return score_predictions(
        dataset,
        predictions,
        tasks=tasks,
        categories=categories,
        model_version=proposer.model_version,
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "Acceptance",
    "CategoryAP",
    "Detection",
    "DetectionMetrics",
    "DetectionReport",
    "EvaluationError",
    "EvaluationReport",
    "Predictions",
    "ReferAccuracy",
    "ReferPrediction",
    "ReferReport",
    "acceptance",
    "coco_detection_metrics",
    "collect_predictions",
    "evaluate_model",
    "iou",
    "iou_official",
    "refer_accuracy",
    "score_predictions",
]
