"""The raw score candidates (model.scoring): each one's arithmetic on hand-made token distributions, and the
shipped shapes model served through the chosen default."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from model.annotations import Task
from model.proposer import Proposer
from model.scoring import (
    CANDIDATES,
    DEFAULT_SCORE,
    BoxEvidence,
    TokenStats,
    box_evidence,
    number_tokens,
    token_stats,
)
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

LOG = math.log


def test_number_tokens_are_the_pieces_that_write_0_to_100() -> None:
    pieces = ["<s>", "\u2581", "<", "5", "50", "100", "101", "\u25817", "abc", "\u0663", "007", "1000"]
    numbers = number_tokens(pieces)
    assert numbers.ids.tolist() == [3, 4, 5, 7, 10]
    assert numbers.values.tolist() == [5.0, 50.0, 100.0, 7.0, 7.0]
    assert numbers.digits == {3: 1, 4: 2, 5: 3, 7: 1, 10: 3}


def test_token_stats_keep_the_chosen_log_probability_and_the_expected_coordinate_error() -> None:
    # vocabulary: 0 "<", 1 "10", 2 "11", 3 "12", 4 ">"
    numbers = number_tokens(["<", "10", "11", "12", ">"])
    step0 = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0]])  # "<" chosen
    # among the number tokens 10, 11, 12 the probabilities are 1/4, 1/2, 1/4 (logits ln1, ln2, ln1); "11" chosen
    step1 = torch.tensor([[0.0, 0.0, LOG(2.0), 0.0, 0.0]])
    step2 = torch.tensor([[0.0, 0.0, 0.0, 5.0, 0.0]])  # "12" chosen, its neighbours 1 and 2 cells away
    [stats] = token_stats([step0, step1, step2], torch.tensor([[0, 2, 3]]), numbers)
    assert stats.logprobs[0] == pytest.approx(2.0 - LOG(math.exp(2.0) + 4))
    assert stats.logprobs[1] == pytest.approx(LOG(2.0 / 6.0))
    assert math.isnan(stats.errors[0])  # not a number token
    assert stats.errors[1] == pytest.approx(0.25 * 1 + 0.5 * 0 + 0.25 * 1)
    p10, p11 = 1 / (2 + math.exp(5.0)), 1 / (2 + math.exp(5.0))
    assert stats.errors[2] == pytest.approx(p10 * 2 + p11 * 1)


# The tiny shapes tokenizer's way of writing "<p>circle</p> {<9><5><37><39>}<delim>{<1><2><3><4>}", one piece per
# token (the leading "▁" decodes to nothing here, so the pieces' characters are the text's).
PIECES = ["<", "p", ">", "circle", "<", "/", "p", ">", " ", "{"]
PIECES += ["<", "9", ">", "<", "5", ">", "<", "37", ">", "<", "39", ">", "}"]
PIECES += ["<", "delim", ">", "{", "<", "1", ">", "<", "2", ">", "<", "3", ">", "<", "4", ">", "}"]
TEXT = "".join(PIECES)
NUMBERS = {"9", "5", "37", "39", "1", "2", "3", "4"}


def _answer(logprobs: list[float], errors: list[float]):
    ends = [len("".join(PIECES[: i + 1])) for i in range(len(PIECES))]
    tokens = list(range(len(PIECES)))  # token i is piece i
    digits = {i: len(piece) for i, piece in enumerate(PIECES) if piece in NUMBERS}.get
    return ends, tokens, digits, TokenStats(logprobs, errors)


def test_box_evidence_gathers_the_box_its_phrase_the_token_after_it_and_its_coordinates() -> None:
    n = len(PIECES)
    logprobs = [-0.01 * (i + 1) for i in range(n + 1)]  # one more: the </s> the model ended with
    errors = [float(i) if PIECES[i] in NUMBERS else math.nan for i in range(n)] + [math.nan]
    ends, tokens, digits, stats = _answer(logprobs, errors)
    first = (TEXT.index("{"), TEXT.index("}") + 1)
    second = (TEXT.rindex("{"), len(TEXT))
    a = box_evidence(TEXT, first, True, ends, stats, digits, tokens)
    assert a.box == logprobs[9:23]  # "{" … "}"
    assert a.phrase == logprobs[0:8]  # "<p>circle</p>", not the space after it
    assert a.end == logprobs[23]  # the "<" of <delim>
    assert a.coord_errors == [11.0, 14.0, 17.0, 20.0]  # the expected error at each number token
    b = box_evidence(TEXT, second, True, ends, stats, digits, tokens)
    assert b.phrase == a.phrase  # boxes joined by <delim> share the phrase
    assert b.end == logprobs[n]  # </s>
    assert b.coord_errors == [28.0, 31.0, 34.0, 37.0]
    bare = box_evidence(TEXT, second, False, ends, stats, digits, tokens)
    assert bare.phrase is None
    cut = box_evidence(TEXT, second, False, ends, TokenStats(logprobs[:n], errors[:n]), digits, tokens)
    assert cut.end is None  # generation stopped at max_new_tokens: nothing followed the box


def test_a_coordinate_split_into_digits_errs_at_each_digits_place_value() -> None:
    # LLaMA writes <37> as "<", "3", "7", ">": an expected error of 0.2 at the tens digit is 2 grid cells
    pieces = ["{", "<", "3", "7", ">", "<", "5", ">", "<", "6", "0", ">", "<", "9", "9", ">", "}"]
    text = "".join(pieces)
    ends = [len("".join(pieces[: i + 1])) for i in range(len(pieces))]
    errors = [math.nan] * len(pieces)
    errors[2], errors[3], errors[6], errors[9], errors[10], errors[13], errors[14] = 0.2, 0.5, 1.0, 0.1, 0.0, 0, 0
    digits = {i: 1 for i, p in enumerate(pieces) if p.isdigit()}.get
    evidence = box_evidence(
        text, (0, len(text)), False, ends, TokenStats([0.0] * len(pieces), errors), digits, list(range(len(pieces)))
    )
    assert evidence.coord_errors == pytest.approx([0.2 * 10 + 0.5, 1.0, 0.1 * 10 + 0.0, 0.0])


EVIDENCE = BoxEvidence(
    box=[LOG(0.9), LOG(0.4), LOG(1.0)], phrase=[LOG(0.5), LOG(0.5)], end=LOG(0.8), coord_errors=[1.0, 3.0, 0.0, 0.0]
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mean", (0.9 * 0.4 * 1.0) ** (1 / 3)),
        ("min", 0.4),
        ("phrase", 0.5),
        ("end", 0.8),
        ("phrase_end", 0.5 * 0.8),
        ("coord", 1 / (1 + 1.0)),  # mean expected error (1 + 3 + 0 + 0) / 4 = 1 cell
        ("coord_max", 1 / (1 + 3.0)),
        ("mean_x_end", (0.36 ** (1 / 3)) * 0.8),
        ("mean_x_coord", (0.36 ** (1 / 3)) * 0.5),
        ("coord_x_end", 0.5 * 0.8),
    ],
)
def test_each_candidate_on_a_hand_made_box(name: str, expected: float) -> None:
    assert CANDIDATES[name](EVIDENCE) == pytest.approx(expected)


def test_candidates_without_a_phrase_an_ending_or_coordinates() -> None:
    bare = BoxEvidence(box=[LOG(0.5)], phrase=None, end=None, coord_errors=[])
    assert CANDIDATES["phrase"](bare) == 1.0 and CANDIDATES["end"](bare) == 1.0  # nothing said: no doubt added
    assert CANDIDATES["coord"](bare) == 0.0  # a box without readable coordinates is not trusted
    assert CANDIDATES["mean"](BoxEvidence(box=[], phrase=None, end=None, coord_errors=[])) == 0.0


def test_an_unknown_score_name_says_which_exist() -> None:
    with pytest.raises(ValueError, match="unknown score 'best'; use one of mean, min"):
        Proposer.from_pretrained(SHIPPED_DIR, device="cpu", score="best")


def test_the_shipped_model_serves_the_default_score_in_0_1_and_other_scores_change_only_the_score(
    tmp_path: Path,
) -> None:
    make_shapes(tmp_path, images=2, seed=12345)
    images = sorted((tmp_path / "images").iterdir())
    default = Proposer.from_pretrained(SHIPPED_DIR, device="cpu")
    assert default.score == DEFAULT_SCORE == "coord_x_end"  # chosen by bench/scores.py (README)
    other = Proposer(default.model, default.processor, model_version=default.model_version, score="mean")
    served_scores, other_scores = [], []
    for image in images:
        for task, query in ((Task.detection, "circle"), (Task.refer, "the circle")):
            served = default.propose(image, task, query)
            plain = other.propose(image, task, query)
            assert plain.text == served.text
            assert [p.box for p in plain.proposals] == [p.box for p in served.proposals]
            served_scores += [p.score for p in served.proposals]
            other_scores += [p.score for p in plain.proposals]
    assert len(served_scores) >= 4  # these scenes get boxes for both tasks (the model can also answer nothing)
    assert all(0.0 <= s <= 1.0 for s in served_scores)
    assert all(a != b for a, b in zip(served_scores, other_scores, strict=True))
