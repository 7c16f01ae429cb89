"""The suite's Hypothesis profile (conftest.py) checks no wall-clock time: a slow example is not a failure."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st


def test_a_slow_example_is_not_a_failure() -> None:
    # With Hypothesis' default 200 ms deadline this raises DeadlineExceeded, as any example can on a busy machine.
    @settings(max_examples=2, database=None)
    @given(st.integers())
    def slow(_: int) -> None:
        time.sleep(0.25)

    slow()
    assert settings.default.deadline is None
