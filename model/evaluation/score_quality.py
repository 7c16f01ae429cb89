"""Does a proposal's score say whether a person keeps it? Separation, calibration and triage of (score, kept) pairs.

A proposal is *kept* when a labeller would accept it: for ``[detection]`` it matches a ground-truth box of its label
at IoU >= 0.5 (one-to-one, :func:`model.evaluation.metrics.acceptance`); for ``[refer]`` its box overlaps the
referred box at IoU >= 0.5. Three views of how well the score predicts that:

* ``roc_auc``: the probability that a kept proposal scores above a rejected one (ties count one half); 0.5 is a
  score that knows nothing, 1.0 one that separates perfectly.
* ``ece``: expected calibration error over 10 equal-width bins of the score, the proposal-weighted mean gap between
  a bin's mean score and its kept rate; 0 when a score of 0.7 means "kept 70% of the time". With the ``reliability``
  table per bin.
* ``triage``: the share of the wrong (rejected) proposals a reviewer finds by checking only the lowest-scoring k%
  of proposals (k = 10, 20, 50); checking at random finds k% of them.

No model and no torch here; values that need both kinds of proposal (or any proposal) are None without them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

__all__ = ["TRIAGE_SHARES", "ReliabilityBin", "ScoreQuality", "TriagePoint", "roc_auc", "score_quality"]

TRIAGE_SHARES = (0.1, 0.2, 0.5)
CURVE_SHARES = tuple(round(k / 20, 2) for k in range(21))  # 0%, 5%, ... 100%: the triage curve a plot draws
BINS = 10


class ReliabilityBin(BaseModel):
    low: float
    high: float
    n: int
    mean_score: float | None = Field(description="mean score of the bin's proposals; None when empty")
    kept_rate: float | None = Field(description="share of the bin's proposals kept; None when empty")


class TriagePoint(BaseModel):
    reviewed: float = Field(description="share of all proposals reviewed, lowest scores first")
    n_reviewed: int
    caught: float | None = Field(description="share of the rejected proposals among those reviewed; None: none wrong")


class ScoreQuality(BaseModel):
    n: int = Field(description="proposals scored")
    n_kept: int
    roc_auc: float | None = Field(description="None unless there are both kept and rejected proposals")
    ece: float | None = Field(description="expected calibration error, 10 bins; None without proposals")
    reliability: list[ReliabilityBin]
    triage: list[TriagePoint] = Field(description="at 10%, 20% and 50% of the proposals reviewed")
    triage_curve: list[TriagePoint] = Field(description="every 5%, for plots")


def roc_auc(scores: Sequence[float], kept: Sequence[bool]) -> float | None:
    """Mann-Whitney AUC with ties counted one half; None unless both classes are present."""
    values = np.asarray(scores, dtype=float)
    positive = np.asarray(kept, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(values) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(values)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_quality(scores: Sequence[float], kept: Sequence[bool], *, bins: int = BINS) -> ScoreQuality:
    """All three views of (score, kept) pairs; scores outside [0, 1] are refused."""
    values = np.asarray(scores, dtype=float)
    positive = np.asarray(kept, dtype=bool)
    if len(values) != len(positive):
        raise ValueError(f"{len(values)} scores for {len(positive)} kept flags")
    if len(values) and (not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1):
        raise ValueError("scores must be finite and within [0, 1]")
    reliability = _reliability(values, positive, bins)
    wrong_by_score = ~positive[np.argsort(values, kind="mergesort")]  # rejected or not, lowest score first
    n = len(values)
    ece = sum(b.n / n * abs((b.mean_score or 0.0) - (b.kept_rate or 0.0)) for b in reliability) if n else None
    return ScoreQuality(
        n=n,
        n_kept=int(positive.sum()),
        roc_auc=roc_auc(values, positive),
        ece=float(ece) if ece is not None else None,
        reliability=reliability,
        triage=[_triage(wrong_by_score, share) for share in TRIAGE_SHARES],
        triage_curve=[_triage(wrong_by_score, share) for share in CURVE_SHARES],
    )


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _reliability(values: np.ndarray, positive: np.ndarray, bins: int) -> list[ReliabilityBin]:
    # a score of exactly 1.0 belongs to the last bin, not to an eleventh
    index = np.minimum((values * bins).astype(int), bins - 1) if len(values) else np.zeros(0, dtype=int)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(
            ReliabilityBin(
                low=b / bins,
                high=(b + 1) / bins,
                n=count,
                mean_score=float(values[members].mean()) if count else None,
                kept_rate=float(positive[members].mean()) if count else None,
            )
        )
    return rows


def _triage(wrong_by_score: np.ndarray, share: float) -> TriagePoint:
    """Review the ceil(share * n) lowest-scoring proposals (ties in the given order): which share of the wrong ones?
    ``wrong_by_score``: whether each proposal was rejected, lowest score first."""
    reviewed = min(len(wrong_by_score), math.ceil(share * len(wrong_by_score) - 1e-9))
    wrong = int(wrong_by_score.sum())
    caught = int(wrong_by_score[:reviewed].sum()) / wrong if wrong else None
    return TriagePoint(reviewed=share, n_reviewed=reviewed, caught=caught)
