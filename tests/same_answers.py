"""What "the same answer" means when one request runs in two different ways: alone and inside a batch, in this
process and in a server process, in one chunk and in another.

Labels, boxes and text must be equal exactly. Greedy decoding picks the same tokens, and a box is a grid cell
(0-100) mapped to pixels by the same arithmetic, so any difference there is a real one (the tiny test models run
in fp32, where a near-tie between two tokens is far rarer than the drift below).

Scores need not be. A score is computed in fp32 from the model's probabilities while it wrote the answer
(model.scoring), and the order in which the matrix products sum depends on the batch (its size, the left padding of
its longest prompt), on the number of threads and on the CPU's kernels. Measured with the shipped shapes model, the
same task scored alone and next to another task differs by up to 3e-7 on one machine; on another, 0.608522 against
0.608523 at six decimals (the geometric-mean score of before issue 16; the default score since then drifts by up to
3.7e-7 between alone and a batch of 8, measured on 22 proposals). SCORE_TOLERANCE is a hundred times that drift,
and still a hundred times smaller than a real difference (another token, a row mixed up with its neighbour, padding
leaking into attention all move a score by 1e-2 or more). Rounding is no substitute: two scores 1e-9 apart round
to different sixth decimals when they straddle a half.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

SCORE_TOLERANCE = 1e-4
SCORE_KEYS = frozenset({"score"})


def assert_same_proposals(got: Any, want: Any, *, ignore: Iterable[str] = ()) -> None:
    """Assert that `got` and `want` are the same answers: equal everywhere except the values under a "score"
    key, which may differ by SCORE_TOLERANCE.

    Takes what the tests compare: ProposalResult objects (or lists of them), Label Studio predictions (dicts
    with "result" regions) or plain lists. Keys named in `ignore` (e.g. a region's random "id") are not compared.
    """
    ignored = frozenset(ignore)
    got_shape, got_scores = _split(_plain(got), ignored)
    want_shape, want_scores = _split(_plain(want), ignored)
    assert got_shape == want_shape, "the answers differ beyond their scores"
    assert len(got_scores) == len(want_scores)  # implied by the shapes; kept for a clear message
    for index, (a, b) in enumerate(zip(got_scores, want_scores, strict=True)):
        if a is None or b is None:
            assert a is b, f"score {index}: {a} vs {b}"
        else:
            assert abs(a - b) <= SCORE_TOLERANCE, f"score {index}: {a} vs {b} (tolerance {SCORE_TOLERANCE})"


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _split(value: Any, ignored: frozenset[str]) -> tuple[Any, list[float | None]]:
    """(the value with every score replaced by a marker, the scores in document order)."""
    scores: list[float | None] = []

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for key in sorted(v, key=str):
                if key in ignored:
                    continue
                if key in SCORE_KEYS:
                    scores.append(v[key])
                    out[key] = "<score>"
                else:
                    out[key] = walk(v[key])
            return out
        if isinstance(v, list):
            return [walk(item) for item in v]
        return v

    return walk(value), scores
