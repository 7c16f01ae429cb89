"""How good are the model's proposals on a labelled dataset? The runner: ask a `Proposer` for `[refer]` and
`[detection]` answers on a `Dataset` and score them (with `model.evaluation.metrics`) into one JSON-serialisable
`EvaluationReport`. The official benchmark protocol it follows: MiniGPT-v2 paper, RefCOCO Acc@0.5 and COCO AP.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ..annotations import Box, Dataset, ImageRecord, Task
from ..dataset_files import check_image_files, image_path
from ..images import MODEL_FIT_PIXELS, load_image
from .metrics import (
    EVALUATED_TASKS,
    IOU_THRESHOLD,
    Acceptance,
    CategoryAP,
    CategoryMode,
    Detection,
    DetectionMetrics,
    EvaluationError,
    ReferAccuracy,
    acceptance,
    category_ids,
    coco_detection_metrics,
    iou,
    iou_official,
    kept_detections,
    rate_or_none,
    refer_accuracy,
)
from .score_quality import ScoreQuality, score_quality

if TYPE_CHECKING:  # the metrics must stay importable without torch; only the runner needs the model
    from ..proposer import GenerationOptions, Proposer, ProposeRequest


# --- running the model -----------------------------------------------------------------------------------------------
class ReferPrediction(BaseModel):
    """One referring expression asked of the model, with its answer and the box it refers to."""

    image_index: int
    annotation_index: int
    query: str
    predicted: Box | None = Field(description="the first proposed box; None when the answer had no box")
    score: float | None
    raw_score: float | None = None  # the score before the model's calibration, when it has one
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
    total)`` counts requests. Every image asked about is checked against its file before the first model call
    (:func:`model.dataset_files.check_image_files`)."""
    from ..proposer import ProposeRequest  # torch is only needed here

    wanted = evaluated_tasks(tasks)
    if categories not in ("all", "present"):
        raise EvaluationError(f"categories must be 'all' or 'present', got {categories!r}")
    if images_per_chunk < 1:
        raise EvaluationError(f"images_per_chunk must be at least 1, got {images_per_chunk}")
    category_ids(dataset)  # fail on unknown labels before any model work

    plans = []
    skipped = 0
    for record in dataset.images:
        refer, ambiguous = refer_queries(record) if Task.refer in wanted else ([], 0)
        detect = detection_queries(dataset, record, categories) if Task.detection in wanted else []
        plans.append((refer, detect))
        skipped += ambiguous
    total = sum(len(r) + len(d) for r, d in plans)
    check_image_files(dataset, images_dir=images_dir, indices=[i for i, (r, d) in enumerate(plans) if r or d])

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
            image = load_image(image_path(dataset.images[i], images_dir), fit_pixels=MODEL_FIT_PIXELS)  # checked above
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
                    Detection(image_index=i, label=query, box=p.box, score=p.score, raw_score=p.raw_score)
                    for p in result.proposals
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
                    raw_score=first.raw_score if first else None,
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


class ScoreReport(BaseModel):
    """How well the proposals' scores tell kept from rejected ones (:mod:`model.evaluation.score_quality`)."""

    detection: ScoreQuality | None = None
    refer: ScoreQuality | None = None
    overall: ScoreQuality


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
    scores: ScoreReport | None = None  # None in reports written before scores were measured
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
        for task, quality in (
            ("refer", self.scores.refer if self.scores else None),
            ("detection", self.scores.detection if self.scores else None),
            ("overall", self.scores.overall if self.scores else None),
        ):
            if quality is None:
                continue
            rows += [
                (task, "score ROC AUC (kept vs rejected)", _num(quality.roc_auc), f"{quality.n} proposals"),
                (task, "score calibration error (ECE)", _num(quality.ece), ""),
            ]
            rows += [
                (task, f"wrong found in lowest {p.reviewed:.0%}", _num(p.caught), f"{p.n_reviewed} reviewed")
                for p in quality.triage
            ]
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
    refer_scores = detection_scores = None
    proposals = kept = 0
    pairs = score_pairs(dataset, predictions, wanted)  # (score, kept) of every proposal, for the score's quality
    if Task.refer in wanted:
        accuracy = refer_accuracy((p.predicted, p.truth) for p in predictions.refer)
        refer = ReferReport(**accuracy.model_dump(), skipped_ambiguous=predictions.refer_skipped)
        proposals, kept = proposals + refer.n_proposals, kept + refer.n_kept
        refer_scores = score_quality(*_unzip(pairs[Task.refer]))
    if Task.detection in wanted:
        metrics = coco_detection_metrics(dataset, predictions.detections)
        accepted = acceptance(dataset, predictions.detections)
        detection_scores = score_quality(*_unzip(pairs[Task.detection]))
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
        overall=OverallAcceptance(n_proposals=proposals, n_kept=kept, acceptance_rate=rate_or_none(kept, proposals)),
        scores=ScoreReport(
            detection=detection_scores,
            refer=refer_scores,
            overall=score_quality(*_unzip([pair for task_pairs in pairs.values() for pair in task_pairs])),
        ),
        seconds=seconds,
    )


def score_pairs(
    dataset: Dataset, predictions: Predictions, tasks: Sequence[Task], *, raw: bool = False
) -> dict[Task, list[tuple[float, bool]]]:
    """(score, kept) per proposal of each task: the scores as served, or with ``raw`` those before calibration (what
    :meth:`model.calibration.Calibration.fit` fits on). A refer proposal is kept at IoU >= 0.5 with the referred box;
    a detection as :func:`~model.evaluation.metrics.acceptance` matches it."""
    pairs: dict[Task, list[tuple[float, bool]]] = {}
    if Task.refer in tasks:
        pairs[Task.refer] = [
            (_served(p.score, p.raw_score, raw), iou(p.predicted, p.truth) >= IOU_THRESHOLD)
            for p in predictions.refer
            if p.predicted is not None and p.score is not None
        ]
    if Task.detection in tasks:
        flags = kept_detections(dataset, predictions.detections)
        pairs[Task.detection] = [
            (_served(d.score, d.raw_score, raw), k) for d, k in zip(predictions.detections, flags, strict=True)
        ]
    return pairs


def _served(score: float, raw_score: float | None, raw: bool) -> float:
    return raw_score if raw and raw_score is not None else score


def _unzip(pairs: Sequence[tuple[float, bool]]) -> tuple[list[float], list[bool]]:
    return [score for score, _ in pairs], [kept for _, kept in pairs]


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
    "ScoreReport",
    "acceptance",
    "coco_detection_metrics",
    "collect_predictions",
    "evaluate_model",
    "iou",
    "iou_official",
    "refer_accuracy",
    "score_pairs",
    "score_predictions",
]
