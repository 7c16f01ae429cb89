"""The order in which a reviewer goes through the images: the folder's, or riskiest first.

An image's risk is its weakest proposal: the lowest score among the proposals still waiting on it. With a calibrated
model (``calibration.json``, see :mod:`model.calibration`) that score is the probability that a person keeps the
box, so the image listed first is the one most likely to hold a wrong box. Images without proposals come after,
in folder order. Qt-free, so the file list and the "next riskiest" shortcut share one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from .records import ImageRow

__all__ = ["next_riskiest", "riskiest_first"]


def riskiest_first(rows: Sequence[ImageRow]) -> list[ImageRow]:
    """Images with proposals by their lowest proposal score (ties in folder order), then the others as given."""
    scored = [row for row in rows if row.lowest_score is not None]
    others = [row for row in rows if row.lowest_score is None]
    return sorted(scored, key=lambda row: row.lowest_score or 0.0) + others  # sorted() is stable


def next_riskiest(rows: Sequence[ImageRow], current: int | None) -> int | None:
    """The riskiest image still to review (proposals waiting, readable, not marked reviewed), other than the current
    one; None when none is left."""
    for row in riskiest_first(rows):
        if row.lowest_score is not None and not row.reviewed and row.error is None and row.id != current:
            return row.id
    return None
