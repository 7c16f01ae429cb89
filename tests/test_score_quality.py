"""How well a proposal's score tells kept from rejected proposals: ROC AUC, calibration error (ECE, reliability
bins) and the triage curve, against hand-computed cases, hypothesis invariants, and inside `evaluate`'s report."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Task
from model.evaluation.metrics import Detection, kept_detections
from model.evaluation.runner import Predictions, ReferPrediction, score_predictions
from model.evaluation.score_quality import roc_auc, score_quality


def test_auc_by_hand() -> None:
    # kept 0.9, 0.4; rejected 0.6, 0.1: pairs (0.9>0.6) (0.9>0.1) (0.4<0.6) (0.4>0.1) -> 3 of 4
    assert roc_auc([0.9, 0.6, 0.4, 0.1], [True, False, True, False]) == pytest.approx(0.75)
    # a tie between a kept and a rejected proposal counts one half: (0.5 = 0.5) -> 0.5 of 1
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert roc_auc([0.8, 0.5, 0.5, 0.2], [True, True, False, False]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert roc_auc([0.3, 0.7], [True, True]) is None  # no rejected proposal: nothing to separate
    assert roc_auc([], []) is None


def test_ece_and_reliability_by_hand() -> None:
    # bin [0.2, 0.3): scores 0.2, 0.2, kept 1 of 2 -> gap |0.2 - 0.5| = 0.3, weight 2/4
    # bin [0.9, 1.0]: scores 0.9, 1.0 (1.0 belongs to the last bin), kept 2 of 2 -> gap |0.95 - 1| = 0.05, weight 2/4
    quality = score_quality([0.2, 0.2, 0.9, 1.0], [True, False, True, True])
    assert quality.ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.05)
    bins = {round(b.low, 1): b for b in quality.reliability}
    assert len(quality.reliability) == 10 and sum(b.n for b in quality.reliability) == 4
    assert (bins[0.2].n, bins[0.2].mean_score, bins[0.2].kept_rate) == (2, pytest.approx(0.2), 0.5)
    assert (bins[0.9].n, bins[0.9].mean_score, bins[0.9].kept_rate) == (2, pytest.approx(0.95), 1.0)
    assert bins[0.5].n == 0 and bins[0.5].mean_score is None and bins[0.5].kept_rate is None
    assert score_quality([], []).ece is None


def test_triage_by_hand() -> None:
    # 10 proposals, 4 wrong; the lowest scores are 0.05 (wrong), 0.1 (kept), 0.2 (wrong), 0.3 (wrong), 0.4 (kept) ...
    scores = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.95]
    kept = [False, True, False, False, True, True, True, False, True, True]
    triage = {p.reviewed: p for p in score_quality(scores, kept).triage}
    assert (triage[0.1].n_reviewed, triage[0.1].caught) == (1, 0.25)  # reviewing 1 finds 1 of the 4 wrong
    assert (triage[0.2].n_reviewed, triage[0.2].caught) == (2, 0.25)
    assert (triage[0.5].n_reviewed, triage[0.5].caught) == (5, 0.75)
    curve = score_quality(scores, kept).triage_curve
    assert curve[0].caught == 0 and curve[-1].caught == 1 and len(curve) == 21
    assert score_quality([0.5], [True]).triage[0].caught is None  # nothing wrong to find


def test_scores_outside_zero_one_are_refused() -> None:
    with pytest.raises(ValueError, match="within"):
        score_quality([1.5], [True])
    with pytest.raises(ValueError, match="kept flags"):
        score_quality([0.5, 0.2], [True])


# scores on a 1/1000 grid: 1 - s is then exact, so reversing the order reverses it exactly (ties included)
_pairs = st.lists(st.tuples(st.integers(0, 1000).map(lambda n: n / 1000), st.booleans()), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(pairs=_pairs)
def test_invariants(pairs: list[tuple[float, bool]]) -> None:
    scores = [s for s, _ in pairs]
    kept = [k for _, k in pairs]
    quality = score_quality(scores, kept)
    if quality.roc_auc is not None:
        assert 0 <= quality.roc_auc <= 1
        # a score that says the opposite has the complementary AUC
        assert roc_auc([1 - s for s in scores], kept) == pytest.approx(1 - quality.roc_auc)
        # a perfect score (kept above every rejected) has AUC 1
        assert roc_auc([0.5 + 0.5 * k - 0.25 * s for s, k in pairs], kept) == pytest.approx(1.0)
    assert 0 <= (quality.ece or 0) <= 1
    caught = [p.caught for p in quality.triage_curve]
    if all(c is not None for c in caught):
        assert caught == sorted(caught) and caught[-1] == 1  # reviewing more never finds fewer; all finds all


def test_a_shuffled_score_separates_nothing() -> None:
    rng = random.Random(7)
    kept = [rng.random() < 0.5 for _ in range(4000)]
    assert roc_auc([rng.random() for _ in kept], kept) == pytest.approx(0.5, abs=0.03)


def _dataset() -> Dataset:
    square = Annotation(box=Box(x0=10, y0=10, x1=50, y1=50), label="square", phrase="the square")
    circle = Annotation(box=Box(x0=60, y0=60, x1=90, y1=90), label="circle", phrase="the circle")
    return Dataset(
        categories=[Category(id=1, name="square"), Category(id=2, name="circle")],
        images=[ImageRecord(path="a.png", width=100, height=100, annotations=[square, circle])],
    )


def test_kept_detections_follow_the_acceptance_matching() -> None:
    dataset = _dataset()
    detections = [
        Detection(image_index=0, label="square", box=Box(x0=12, y0=11, x1=50, y1=49), score=0.6),  # kept
        Detection(image_index=0, label="square", box=Box(x0=10, y0=10, x1=50, y1=50), score=0.9),  # kept first
        Detection(image_index=0, label="circle", box=Box(x0=0, y0=0, x1=20, y1=20), score=0.8),  # no overlap
    ]
    # the 0.9 box takes the square; the 0.6 duplicate then has nothing left to match
    assert kept_detections(dataset, detections) == [False, True, False]


def test_the_report_scores_the_scores() -> None:
    dataset = _dataset()
    detections = [
        Detection(image_index=0, label="square", box=Box(x0=10, y0=10, x1=50, y1=50), score=0.9),
        Detection(image_index=0, label="circle", box=Box(x0=0, y0=0, x1=20, y1=20), score=0.3),
    ]
    refer = [
        ReferPrediction(
            image_index=0,
            annotation_index=1,
            query="the circle",
            predicted=Box(x0=60, y0=60, x1=90, y1=90),
            score=0.7,
            truth=Box(x0=60, y0=60, x1=90, y1=90),
        )
    ]
    report = score_predictions(
        dataset, Predictions(refer=refer, detections=detections, n_requests=3), tasks=[Task.refer, Task.detection]
    )
    assert report.scores is not None and report.scores.detection is not None and report.scores.refer is not None
    assert (report.scores.detection.n, report.scores.detection.n_kept, report.scores.detection.roc_auc) == (2, 1, 1.0)
    assert (report.scores.refer.n, report.scores.refer.n_kept, report.scores.refer.roc_auc) == (1, 1, None)
    assert (report.scores.overall.n, report.scores.overall.n_kept) == (3, 2)
    assert report.scores.overall.roc_auc == 1.0  # kept 0.9 and 0.7 above the rejected 0.3
    table = report.format_table()
    assert "score ROC AUC" in table and "wrong found in lowest 20%" in table
    assert type(report).from_json(report.to_json()) == report


def test_the_plot_draws_each_task_in_its_colour_on_both_panels(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from model.evaluation.runner import ScoreReport
    from model.evaluation.score_plots import plot_path_for, write_score_plot

    rng = np.random.default_rng(0)
    scores = rng.uniform(size=200)
    quality = score_quality(scores, rng.uniform(size=200) < scores)
    report = ScoreReport(detection=quality, refer=None, overall=quality)
    path = write_score_plot(report, plot_path_for(tmp_path / "report.json"), title="a model on shapes")
    assert path == tmp_path / "report.png" and not list(tmp_path.glob(".*.tmp"))
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
        width = image.width
    blue = np.array([31, 119, 180])  # matplotlib's tab:blue, the detection colour; refer (orange) is absent
    orange = np.array([255, 127, 14])
    near = lambda colour: np.abs(pixels - colour).sum(axis=1) < 30  # noqa: E731
    columns = np.flatnonzero(near(blue)) % width
    assert (columns < width / 2).any() and (columns > width / 2).any()  # on the reliability and the triage panel
    assert not near(orange).any()
