"""How sure is the model of one box? The raw score of a proposal, from what the model said while writing it.

While generating, :func:`token_stats` keeps two numbers per answer position (not the logits): the log-probability
of the token chosen, and, where that token is a number, the *expected error* of the coordinate digit it writes: the
mean ``|value - chosen|`` under the model's distribution over the number tokens at that position (the spread of its
probability mass over neighbouring grid values). :func:`box_evidence` gathers, for one parsed box, the positions
that spell it, its ``<p>phrase</p>`` and the token that follows it (``<delim>``, ``</s>`` or other text), and each
entry of :data:`CANDIDATES` turns that evidence into a score in [0, 1]:

* ``mean``: the geometric mean of the box tokens' probabilities (the score before issue 16);
* ``min``: the lowest box token probability;
* ``phrase``: the geometric mean of the phrase tokens' probabilities (1 without a phrase);
* ``end``: the probability of the token after the box (1 when generation stopped inside the answer);
* ``phrase_end``: their product;
* ``coord``: ``1 / (1 + e)`` with ``e`` the mean expected error of the four coordinates, in grid cells;
  ``coord_max`` the same with the largest of the four;
* ``mean_x_end``, ``mean_x_coord``, ``coord_x_end``: products of two of the above.

:data:`DEFAULT_SCORE` is the one `Proposer` serves as the raw score (before calibration); `bench/scores.py` measures
them all on held-out shapes (README, "Behaviour worth knowing").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "CANDIDATES",
    "DEFAULT_SCORE",
    "BoxEvidence",
    "NumberTokens",
    "TokenStats",
    "box_evidence",
    "check_score_name",
    "number_tokens",
    "token_stats",
]

MAX_GRID = 100  # coordinates are written on a 0-100 grid (model.grammar)


@dataclass(frozen=True)
class NumberTokens:
    """The vocabulary's number tokens: ids, their values, and how many digits each writes."""

    ids: torch.Tensor  # (K,) token ids
    values: torch.Tensor  # (K,) float values
    digits: dict[int, int]  # token id -> digits it writes (for place values of split numbers)


def number_tokens(pieces: Sequence[str]) -> NumberTokens:
    """Number tokens among ``pieces`` (the vocabulary, by id): every piece that is 1-3 digits (after SentencePiece's
    leading ``▁``) with a value up to 100. The tiny shapes tokenizer has one per grid value; LLaMA's splits numbers
    into single digits, so there each coordinate token is one digit and its place value is applied later."""
    ids, values, digits = [], [], {}
    for token_id, piece in enumerate(pieces):
        text = piece.lstrip("\u2581")
        if 1 <= len(text) <= 3 and text.isascii() and text.isdigit() and int(text) <= MAX_GRID:
            ids.append(token_id)
            values.append(float(int(text)))
            digits[token_id] = len(text)
    return NumberTokens(torch.tensor(ids, dtype=torch.long), torch.tensor(values), digits)


@dataclass(frozen=True)
class TokenStats:
    """Per generated position: log-probability of the chosen token and, for number tokens, the expected error
    (NaN elsewhere). One entry more than the answer's tokens when the model ended with ``</s>``."""

    logprobs: list[float]
    errors: list[float]


def token_stats(step_logits: Sequence[torch.Tensor], tokens: torch.Tensor, numbers: NumberTokens) -> list[TokenStats]:
    """Per row of ``tokens`` (B, T), the stats of every position, from the raw logits of each step ((B, V) each).

    Computed one step at a time, so only (B, T) numbers and a (B, K) slice per step are kept, not (B, T, V) logits.
    """
    logprobs, errors = [], []
    ids = numbers.ids.to(tokens.device)
    values = numbers.values.to(tokens.device)
    value_of = torch.full((int(ids.max()) + 1 if len(ids) else 1,), math.nan, device=tokens.device)
    if len(ids):
        value_of[ids] = values
    for step, logits in enumerate(step_logits):
        logits = logits.float()  # raw model logits, before any sampling warper
        chosen = tokens[:, step]
        logprobs.append(torch.log_softmax(logits, dim=-1).gather(-1, chosen[:, None])[:, 0])
        if len(ids):
            probs = torch.softmax(logits[:, ids], dim=-1)  # the distribution among the number tokens only
            in_range = chosen < len(value_of)
            chosen_value = torch.where(in_range, value_of[chosen.clamp(max=len(value_of) - 1)], math.nan)
            errors.append((probs * (values[None, :] - chosen_value[:, None]).abs()).sum(-1))
        else:
            errors.append(torch.full_like(logprobs[-1], math.nan))
    if not logprobs:
        return [TokenStats([], []) for _ in range(tokens.shape[0])]
    lp = torch.stack(logprobs, dim=1).tolist()
    err = torch.stack(errors, dim=1).tolist()
    return [TokenStats(lp[row], err[row]) for row in range(tokens.shape[0])]


@dataclass(frozen=True)
class BoxEvidence:
    """What the model said about one box: the log-probabilities of its tokens, of its phrase's tokens (None without
    a phrase) and of the token after it (None when the answer was cut off there), and each coordinate's expected
    error in grid cells."""

    box: list[float]
    phrase: list[float] | None
    end: float | None
    coord_errors: list[float]


_PHRASE = re.compile(r"<p>.*?</p>", re.DOTALL)


def box_evidence(
    text: str,
    span: tuple[int, int],
    has_phrase: bool,
    ends: Sequence[int],
    stats: TokenStats,
    digits: Callable[[int], int | None],
    tokens: Sequence[int],
) -> BoxEvidence:
    """The evidence for the box at ``span`` of ``text``; ``ends[i]`` is where token ``i``'s characters end in
    ``text``, ``digits(token_id)`` how many digits a number token writes (None for other tokens)."""
    start, end = span
    inside = _overlapping(ends, start, end)
    phrase = None
    if has_phrase:
        before = list(_PHRASE.finditer(text, 0, start))
        if before:  # boxes joined by <delim> share the phrase before the first of them
            phrase = [stats.logprobs[i] for i in _overlapping(ends, *before[-1].span())]
    after = next((i for i in range(len(ends)) if (ends[i - 1] if i else 0) >= end), len(ends))
    end_logprob = stats.logprobs[after] if after < len(stats.logprobs) else None
    return BoxEvidence(
        box=[stats.logprobs[i] for i in inside],
        phrase=phrase,
        end=end_logprob,
        coord_errors=_coordinate_errors(inside, stats, digits, tokens),
    )


def _overlapping(ends: Sequence[int], start: int, end: int) -> list[int]:
    """Indices of the tokens whose characters overlap [start, end)."""
    return [i for i, token_end in enumerate(ends) if token_end > start and (ends[i - 1] if i else 0) < end]


def _coordinate_errors(
    inside: Sequence[int], stats: TokenStats, digits: Callable[[int], int | None], tokens: Sequence[int]
) -> list[float]:
    """Expected error of each coordinate: a run of number tokens is one coordinate, and a digit's error counts at
    its place value (the tens digit of ``<37>`` split as ``3``, ``7`` errs in tens)."""
    runs: list[list[int]] = []
    previous = None
    for i in inside:
        if digits(tokens[i]) is None or math.isnan(stats.errors[i]):
            previous = None
            continue
        if previous is not None and previous == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
        previous = i
    errors = []
    for run in runs:
        total, place = 0.0, 0
        for i in reversed(run):
            total += stats.errors[i] * 10**place
            place += digits(tokens[i]) or 0
        errors.append(total)
    return errors


def _geometric_mean(logprobs: Sequence[float] | None) -> float:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 1.0


def _mean(evidence: BoxEvidence) -> float:
    return _geometric_mean(evidence.box) if evidence.box else 0.0


def _min(evidence: BoxEvidence) -> float:
    return math.exp(min(evidence.box)) if evidence.box else 0.0


def _phrase(evidence: BoxEvidence) -> float:
    return _geometric_mean(evidence.phrase)


def _end(evidence: BoxEvidence) -> float:
    return math.exp(evidence.end) if evidence.end is not None else 1.0


def _coord(evidence: BoxEvidence) -> float:
    if not evidence.coord_errors:
        return 0.0
    return 1.0 / (1.0 + sum(evidence.coord_errors) / len(evidence.coord_errors))


def _coord_max(evidence: BoxEvidence) -> float:
    return 1.0 / (1.0 + max(evidence.coord_errors)) if evidence.coord_errors else 0.0


CANDIDATES: dict[str, Callable[[BoxEvidence], float]] = {
    "mean": _mean,
    "min": _min,
    "phrase": _phrase,
    "end": _end,
    "phrase_end": lambda e: _phrase(e) * _end(e),
    "coord": _coord,
    "coord_max": _coord_max,
    "mean_x_end": lambda e: _mean(e) * _end(e),
    "mean_x_coord": lambda e: _mean(e) * _coord(e),
    "coord_x_end": lambda e: _coord(e) * _end(e),
}
DEFAULT_SCORE = "coord_x_end"  # the best ROC AUC on [detection] of held-out shapes (README)


def check_score_name(name: str) -> str:
    if name not in CANDIDATES:
        raise ValueError(f"unknown score {name!r}; use one of {', '.join(CANDIDATES)}")
    return name
