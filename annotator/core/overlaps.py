"""Finding the box that overlaps a given box the most (IoU at least a threshold) without comparing every pair.

Two boxes whose IoU is at least ``t`` (0 < t < 1) are alike in size and in place. The intersection is at least ``t``
times the larger area, and it is at most one box's width times the other box's height, so:

* their widths differ by a factor of at most ``1/t``, and so do their heights;
* their left edges lie at most ``(1 - t)`` times the larger width apart, and their top edges likewise.

So boxes are filed by label, by size class (``floor(log(width) / log(1/t))``, the same for heights) and by the
grid cell of their top-left corner, the cell's side being the largest size of the class. A query looks only in the
neighbouring size classes and, in each, the cells its corner can reach: a constant number of places (9 class pairs,
at most 2 x 2 cells each for ``t = 0.9``). Boxes with exactly the same coordinates share one entry, so a pile of
identical boxes costs one overlap, not one per box. The work is then proportional to the boxes filed and asked for,
plus the boxes that really crowd the same spot at the same size (each query compares those only).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field

from model.annotations import Box

__all__ = ["OverlapIndex"]

# The bounds above are applied with a threshold this much lower, so that a pair exactly at the threshold is never
# lost to the rounding of log() or of a division.
_SLACK = 1e-9


@dataclass
class _Entry:
    box: Box
    items: list[int] = field(default_factory=list)  # in the order added; the last is the largest


class OverlapIndex:
    """Boxes filed by a key (a label), each carrying an item number; :meth:`take_best` finds and removes the best
    match of a box, so that each filed box matches at most once.

    ``comparisons`` counts the overlaps computed, the work tests and benchmarks watch.
    """

    def __init__(self, threshold: float):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"the IoU threshold must lie strictly between 0 and 1, got {threshold}")
        self.threshold = threshold
        low = threshold * (1.0 - _SLACK)
        self._spread = 1.0 - low  # how far apart (in larger widths) the corners of a match can be
        self._log_base = -math.log(low)  # one size class: sizes within a factor 1/low
        self._cells: dict[tuple[Hashable, int, int, int, int], dict[tuple[float, ...], _Entry]] = {}
        self._classes: set[tuple[Hashable, int, int]] = set()  # (key, width class, height class) that hold boxes
        self.comparisons = 0

    def add(self, key: Hashable, box: Box, item: int) -> None:
        """File ``box`` under ``key``; items must be added in increasing order (ties go to the largest)."""
        if not _measurable(box):
            return  # its area overflows, so its IoU with anything is 0: it can never match
        kw, kh = self._size_class(box.width), self._size_class(box.height)
        self._classes.add((key, kw, kh))
        cell = (key, kw, kh, math.floor(box.x0 / self._side(kw)), math.floor(box.y0 / self._side(kh)))
        entries = self._cells.setdefault(cell, {})
        entries.setdefault(box.xyxy, _Entry(box)).items.append(item)

    def take_best(self, key: Hashable, box: Box) -> int | None:
        """Remove and return the item whose box overlaps ``box`` the most with IoU >= the threshold (on a tie, the
        largest item), or None when no filed box under ``key`` overlaps it that much."""
        if not _measurable(box):
            return None
        kw, kh = self._size_class(box.width), self._size_class(box.height)
        # The cells a match can lie in: 3 width classes x 3 height classes, and in each the cells its corner reaches.
        columns = [(cw, self._reach(box.x0, box.width, cw)) for cw in (kw - 1, kw, kw + 1)]
        rows = [(ch, self._reach(box.y0, box.height, ch)) for ch in (kh - 1, kh, kh + 1)]
        best: tuple[float, int, dict[tuple[float, ...], _Entry], tuple[float, ...]] | None = None
        for cw, xs in columns:
            for ch, ys in rows:
                if (key, cw, ch) not in self._classes:
                    continue
                for x in xs:
                    for y in ys:
                        entries = self._cells.get((key, cw, ch, x, y))
                        if not entries:
                            continue
                        for xyxy, entry in entries.items():
                            self.comparisons += 1
                            iou = box.iou(entry.box)
                            if iou >= self.threshold and (best is None or (iou, entry.items[-1]) > best[:2]):
                                best = (iou, entry.items[-1], entries, xyxy)
        if best is None:
            return None
        _, item, entries, xyxy = best
        entry = entries[xyxy]
        entry.items.pop()
        if not entry.items:
            del entries[xyxy]
        return item

    def _size_class(self, size: float) -> int:
        return math.floor(math.log(size) / self._log_base)

    def _side(self, size_class: int) -> float:
        """The grid cell side for a size class: the largest size in it (infinite past the largest float, where every
        box of the class falls in cell 0)."""
        try:
            return math.exp((size_class + 1) * self._log_base)
        except OverflowError:
            return math.inf

    def _reach(self, start: float, size: float, size_class: int) -> range:
        """The cells (of ``size_class``) along one axis that a matching box's near edge can fall in."""
        side = self._side(size_class)
        if math.isinf(side):
            return range(1)
        reach = self._spread * max(size, side)  # the larger of the two sizes bounds the distance of the edges
        return range(math.floor((start - reach) / side), math.floor((start + reach) / side) + 1)


def _measurable(box: Box) -> bool:
    """Whether the box's area is a finite number (coordinates near the float limits can overflow its width)."""
    return math.isfinite(box.area)
