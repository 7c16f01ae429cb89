"""Score a model folder on held-out data and save its calibration there: what `evaluate --calibrate` does, and what
`finetune`/`train --heldout COCO` do at the end of a run, so a freshly trained model ships with scores a labeller
can read as probabilities (:mod:`model.calibration`).

One place for "answers → (raw score, kept) pairs → calibration.json", so the evaluation and the trainers cannot fit
it two different ways.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..annotations import Dataset, Task
from ..calibration import Calibration, weights_fingerprint
from ..files import write_text_atomic
from ..proposer import Proposer
from .runner import (
    CategoryMode,
    EvaluationReport,
    Predictions,
    collect_predictions,
    evaluated_tasks,
    score_pairs,
    score_predictions,
)

__all__ = ["HELDOUT_REPORT", "calibrate_on_heldout", "save_calibration"]

HELDOUT_REPORT = "heldout-evaluation.json"  # beside the trained model: what its calibration was fitted on


def save_calibration(
    model_dir: str | os.PathLike,
    proposer: Proposer,
    dataset: Dataset,
    predictions: Predictions,
    tasks: Sequence[Task],
    *,
    source: str,
) -> tuple[Calibration, Path]:
    """Fit the calibration of `proposer`'s raw scores on its `predictions` for `dataset` and save it in
    `model_dir` (the folder `proposer` was loaded from)."""
    calibration = Calibration.fit(
        score_pairs(dataset, predictions, tasks, raw=True),
        fingerprint=weights_fingerprint(model_dir),
        score=proposer.score,
        model_version=proposer.model_version,
        source=source,
    )
    return calibration, calibration.save(model_dir)


def calibrate_on_heldout(
    model_dir: str | os.PathLike,
    heldout: Dataset,
    *,
    source: str,
    device: str = "auto",
    batch_size: int = 8,
    tasks: Sequence[Task | str] = (Task.refer, Task.detection),
    categories: CategoryMode = "all",
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[EvaluationReport, Calibration, Path]:
    """Evaluate the trained model in `model_dir` on `heldout`, save the report there (HELDOUT_REPORT) and fit and
    save its calibration; the report, the calibration and its path."""
    chosen = evaluated_tasks(list(tasks))
    proposer = Proposer.from_pretrained(model_dir, device=device)
    started = time.perf_counter()
    predictions = collect_predictions(
        proposer, heldout, tasks=chosen, batch_size=batch_size, categories=categories, on_progress=on_progress
    )
    report = score_predictions(
        heldout, predictions, tasks=chosen, categories=categories, model_version=proposer.model_version,
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    write_text_atomic(Path(model_dir) / HELDOUT_REPORT, report.to_json() + "\n")
    calibration, path = save_calibration(model_dir, proposer, heldout, predictions, chosen, source=source)
    return report, calibration, path
