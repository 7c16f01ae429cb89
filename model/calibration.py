"""Calibration that travels with the model: raw box score → the probability that a person keeps the box.

``evaluate --calibrate`` (and training at its end, on its held-out split) fits one monotone map per task from the
(raw score, kept) pairs of an evaluation and saves it as ``calibration.json`` in the model folder, with the data size,
the date and a fingerprint of the weights it was measured on. :class:`~model.proposer.Proposer` applies it when the
file is there and belongs to these weights; a proposal then carries the calibrated ``score`` and its ``raw_score``.
A malformed file, or one made for other weights, is ignored with a warning: the scores stay raw, nothing fails.

The map is isotonic regression (pool adjacent violators, a few lines of numpy rather than scikit-learn for one
function), read between the pooled blocks' mean scores by linear interpolation and clamped at the ends, so it is
monotone and continuous. Isotonic rather than Platt: the raw scores cluster (0.6-0.7 for right and wrong boxes alike)
and a logistic curve cannot bend around such a cluster; isotonic follows the data and stays monotone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .annotations import Task
from .files import write_text_atomic

__all__ = [
    "CALIBRATION_NAME",
    "Calibration",
    "TaskCalibration",
    "fit_isotonic",
    "load_calibration",
    "weights_fingerprint",
]

log = logging.getLogger(__name__)

CALIBRATION_NAME = "calibration.json"
FORMAT = 1
_SAMPLED_BYTES = 1 << 20  # the fingerprint reads this much of each end of each weights file, not gigabytes
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class TaskCalibration(BaseModel):
    """One task's map: ``y`` at the raw scores ``x`` (both non-decreasing), linear between, clamped outside."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    x: list[float] = Field(min_length=1)
    y: list[float] = Field(min_length=1)
    n: int = Field(ge=1, description="proposals it was fitted on")
    n_kept: int = Field(ge=0)

    @model_validator(mode="after")
    def _monotone(self) -> TaskCalibration:
        if len(self.x) != len(self.y):
            raise ValueError("x and y differ in length")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)) or any(
            b < a for a, b in zip(self.y, self.y[1:], strict=False)
        ):
            raise ValueError("x and y must be non-decreasing")
        if min(self.x + self.y) < 0 or max(self.x + self.y) > 1:
            raise ValueError("x and y must lie within [0, 1]")
        return self

    def __call__(self, score: float) -> float:
        return float(np.interp(score, self.x, self.y))


class Calibration(BaseModel):
    """What ``calibration.json`` holds."""

    model_config = ConfigDict(frozen=True)

    format: int = FORMAT
    fingerprint: str = Field(description="weights_fingerprint() of the model folder it was measured on")
    model_version: str = ""
    # which raw score it maps (model.scoring); a file from before the field existed mapped the geometric mean
    score: str = "mean"
    created: str = Field(description="UTC date and time of the fit, ISO 8601")
    source: str = Field(default="", description="what it was fitted on, e.g. the evaluated dataset")
    tasks: dict[Task, TaskCalibration]

    def apply(self, task: Task, score: float) -> float | None:
        """The calibrated score, or None when this task has no map."""
        mapping = self.tasks.get(task)
        return mapping(score) if mapping is not None else None

    def save(self, folder: str | os.PathLike[str]) -> Path:
        path = Path(folder) / CALIBRATION_NAME
        write_text_atomic(path, self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def fit(
        cls,
        pairs: Mapping[Task, Sequence[tuple[float, bool]]],
        *,
        fingerprint: str,
        score: str,
        model_version: str = "",
        source: str = "",
    ) -> Calibration:
        """One isotonic map per task that has proposals of both kinds (a task without is left uncalibrated)."""
        tasks = {}
        for task, task_pairs in pairs.items():
            kept = [k for _, k in task_pairs]
            if not any(kept) or all(kept):
                continue  # nothing to tell apart: a map would be a constant
            x, y = fit_isotonic([s for s, _ in task_pairs], kept)
            tasks[task] = TaskCalibration(x=x, y=y, n=len(task_pairs), n_kept=sum(kept))
        return cls(
            fingerprint=fingerprint,
            model_version=model_version,
            score=score,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            source=source,
            tasks=tasks,
        )


def fit_isotonic(scores: Sequence[float], kept: Sequence[bool]) -> tuple[list[float], list[float]]:
    """Pool adjacent violators: the non-decreasing step fit of ``kept`` over ``scores`` closest in squared error;
    returned as (mean score, kept rate) per pooled block, for linear interpolation between blocks."""
    values = np.asarray(scores, dtype=float)
    # equal scores form one group from the start: one score, one calibrated value
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    kept_sums = np.bincount(inverse, weights=np.asarray(kept, dtype=float))
    blocks: list[list[float]] = []  # [sum of scores, sum of kept, count], in increasing score
    for x, k, n in zip(unique, kept_sums, counts, strict=True):
        blocks.append([float(x) * n, float(k), float(n)])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            for i in range(3):
                blocks[-1][i] += last[i]
    x_out = [min(1.0, max(0.0, b[0] / b[2])) for b in blocks]
    y_out = [b[1] / b[2] for b in blocks]
    return x_out, y_out


def weights_fingerprint(folder: str | os.PathLike[str]) -> str:
    """What identifies a model folder's weights, cheaply: its config and, per weights file, its name, size and first
    and last MiB (a fine-tune changes them; reading a 14 GB checkpoint whole would take minutes)."""
    root = Path(folder)
    digest = hashlib.sha256()
    config = root / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for path in sorted(p for p in root.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(_SAMPLED_BYTES))
            if size > _SAMPLED_BYTES:
                fh.seek(max(_SAMPLED_BYTES, size - _SAMPLED_BYTES))
                digest.update(fh.read(_SAMPLED_BYTES))
    return "sha256:" + digest.hexdigest()[:24]


def load_calibration(folder: str | os.PathLike[str], *, score: str) -> Calibration | None:
    """The folder's calibration when it is valid and made for these weights and this raw ``score`` (a name of
    :data:`model.scoring.CANDIDATES`); otherwise None, with a warning."""
    path = Path(folder) / CALIBRATION_NAME
    if not path.is_file():
        return None
    try:
        calibration = Calibration.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, ValidationError) as err:
        cause = " ".join(str(err).split())[:200]
        log.warning("ignoring %s: not a valid calibration (%s); scores stay raw, run evaluate --calibrate", path, cause)
        return None
    if calibration.format != FORMAT:
        log.warning("ignoring %s: format %s is not %s; scores stay raw", path, calibration.format, FORMAT)
        return None
    if calibration.score != score:
        log.warning(
            "ignoring %s: it maps the %r score, and this model is scored by %r; scores stay raw. Run evaluate "
            "--calibrate again",
            path,
            calibration.score,
            score,
        )
        return None
    if calibration.fingerprint != weights_fingerprint(folder):
        log.warning(
            "ignoring %s: it was fitted on other weights (%s); scores stay raw. Run evaluate --calibrate again",
            path,
            calibration.model_version or calibration.fingerprint,
        )
        return None
    return calibration
