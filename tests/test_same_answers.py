"""The tests' notion of "the same answer" (tests/same_answers.py): exact boxes and labels, scores within the drift
that batch composition and threads explain, and nothing looser."""

from __future__ import annotations

import pytest
from same_answers import SCORE_TOLERANCE, assert_same_proposals

from model.annotations import Box, Proposal, Task
from model.results import ProposalResult


def _region(score: float, x: float = 17.0, label: str = "square", region_id: str = "a") -> dict:
    value = {"x": x, "y": 20.0, "width": 30.0, "height": 25.0, "rotation": 0, "rectanglelabels": [label]}
    return {"id": region_id, "type": "rectanglelabels", "value": value, "score": score}


def _prediction(*regions: dict) -> dict:
    scores = [r["score"] for r in regions]
    return {"result": list(regions), "score": sum(scores) / len(scores), "model_version": "shapes"}


def _result(score: float, xyxy: tuple[float, ...] = (4.0, 16.0, 24.0, 64.0), label: str = "circle") -> ProposalResult:
    proposal = Proposal(box=Box.from_xyxy(xyxy), label=label, score=score, task=Task.refer, prompt="[refer] circle")
    return ProposalResult(
        image="a.png", width=40, height=80, task=Task.refer, query="circle", prompt="[refer] circle",
        text="{<10><20><60><80>}", proposals=[proposal],
    )  # fmt: skip


def test_a_score_moved_by_batch_composition_is_the_same_answer() -> None:
    # Seen on a CI-class machine: one task scored 0.608522 alone and 0.608523 next to another task (at six
    # decimals). Around a rounding half, values 6e-10 apart are enough to round apart.
    alone, batched = 0.6085224997, 0.6085225003
    assert round(alone, 6) != round(batched, 6)  # why rounding was the wrong notion of equal
    assert_same_proposals(_prediction(_region(batched)), _prediction(_region(alone)))
    assert_same_proposals(_prediction(_region(0.608523)), _prediction(_region(0.608522)))
    assert_same_proposals([_result(0.6001300619174857)], [_result(0.6001303634121059)])  # measured: 3e-7 apart


def test_a_real_difference_is_refused() -> None:
    want = _prediction(_region(0.6), _region(0.4, x=50.0, label="circle", region_id="b"))
    for got in (
        _prediction(_region(0.7), _region(0.4, x=50.0, label="circle", region_id="b")),  # another score
        _prediction(_region(0.6 + 2 * SCORE_TOLERANCE), _region(0.4, x=50.0, label="circle", region_id="b")),
        _prediction(_region(0.6, x=18.0), _region(0.4, x=50.0, label="circle", region_id="b")),  # another box
        _prediction(_region(0.6, x=17.000001), _region(0.4, x=50.0, label="circle", region_id="b")),  # boxes: exact
        _prediction(_region(0.6), _region(0.4, x=50.0, label="triangle", region_id="b")),  # another label
        _prediction(_region(0.6)),  # a region missing
        _prediction(_region(0.4, x=50.0, label="circle", region_id="b"), _region(0.6)),  # another order
    ):
        with pytest.raises(AssertionError):
            assert_same_proposals(got, want)
    with pytest.raises(AssertionError):
        assert_same_proposals([_result(0.6)], [_result(0.7)])
    with pytest.raises(AssertionError):
        assert_same_proposals([_result(0.6, xyxy=(4.0, 16.0, 24.0, 65.0))], [_result(0.6)])
    with pytest.raises(AssertionError):
        assert_same_proposals([_result(0.6).model_copy(update={"text": "{<10><20><60><81>}"})], [_result(0.6)])


def test_ignored_keys_are_not_compared() -> None:
    got = _prediction(_region(0.6, region_id="x1"))
    want = _prediction(_region(0.6, region_id="y2"))
    with pytest.raises(AssertionError):
        assert_same_proposals(got, want)
    assert_same_proposals(got, want, ignore={"id"})
