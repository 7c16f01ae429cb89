"""Which data each micro-batch of a stage holds: first a dataset, drawn by its ratio, then the next micro-batch of that
dataset's own stream. Both depend only on (seed, micro-batch index), so a run resumed at any step reads exactly what
the uninterrupted run would have.

- *The dataset draw.* Micro-batch m takes dataset `d` where a uniform number u(seed, m) falls in d's slice of the
  cumulative ratios. The numbers come in blocks of 4,096 from a NumPy generator seeded with (seed, block), so any
  position is reached without replaying the run; how many draws each dataset had before m (its stream position) is
  the sum over earlier blocks, counted once and cached.
- *The stream within a dataset.* Epoch e of a dataset is its instruction samples, templated and shuffled by
  ``random.Random(f"{seed}-{e}")`` (the dataset listed first) or ``f"{seed}-{position}-{e}"`` (the others), cut into
  micro-batches of `batch_size` (the last one of an epoch may be shorter). The first dataset's stream is therefore
  the order `finetune` has always used, so a one-dataset stage trains exactly as `finetune` did before recipes.

A micro-batch comes from one dataset, as in the official MultiIterLoader (one dataset per step); gradient
accumulation mixes several in one optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

BLOCK = 4096
_DRAW_TAG = 0x5A3D1E  # keeps the dataset-draw generator apart from every other use of the seed


@dataclass(frozen=True)
class Draw:
    """Micro-batch `index` of the stage: dataset `dataset`, its `position`-th micro-batch (epoch, batch in epoch)."""

    index: int
    dataset: int
    position: int


class MixtureSampler:
    """Random access to a stage's sequence of (dataset, position) draws. `sizes` are micro-batches per epoch."""

    def __init__(self, ratios: Sequence[float], seed: int) -> None:
        if not ratios or any(not (r > 0 and math.isfinite(r)) for r in ratios):
            raise ValueError(f"ratios must be positive and finite, got {list(ratios)}")
        total = math.fsum(ratios)
        self.ratios = [r / total for r in ratios]
        self.seed = seed
        cumulative = np.cumsum(self.ratios)
        cumulative[-1] = 1.0  # rounding must never leave a sliver past the last dataset
        self._edges = cumulative
        # _before[b]: draws per dataset in blocks 0 … b-1, extended in order as positions further on are asked for.
        self._before: list[np.ndarray] = [np.zeros(len(self.ratios), dtype=np.int64)]
        self._cached_block: tuple[int, np.ndarray] | None = None

    def _block(self, block: int) -> np.ndarray:
        """The dataset index of each micro-batch in one block."""
        if self._cached_block is not None and self._cached_block[0] == block:
            return self._cached_block[1]
        if len(self.ratios) == 1:
            choice = np.zeros(BLOCK, dtype=np.int64)
        else:
            uniform = np.random.default_rng([self.seed, _DRAW_TAG, block]).random(BLOCK)
            choice = np.searchsorted(self._edges, uniform, side="right").astype(np.int64)
        self._cached_block = (block, choice)
        return choice

    def counts_before(self, index: int) -> np.ndarray:
        """How many of micro-batches 0 … index-1 each dataset had: each dataset's stream position at `index`."""
        block, offset = divmod(index, BLOCK)
        while len(self._before) <= block:
            done = len(self._before) - 1
            self._before.append(self._before[-1] + np.bincount(self._block(done), minlength=len(self.ratios)))
        total = self._before[block].copy()
        if offset:
            total += np.bincount(self._block(block)[:offset], minlength=len(self.ratios))
        return total

    def draw(self, index: int) -> Draw:
        dataset = int(self._block(index // BLOCK)[index % BLOCK])
        return Draw(index, dataset, int(self.counts_before(index)[dataset]))

    def draws(self, start: int, stop: int) -> list[Draw]:
        """Draws start … stop-1, computed in one pass (what a statistical test or a long run wants)."""
        positions = self.counts_before(start).copy()
        out = []
        for index in range(start, stop):
            dataset = int(self._block(index // BLOCK)[index % BLOCK])
            out.append(Draw(index, dataset, int(positions[dataset])))
            positions[dataset] += 1
        return out


def stream_seed(seed: int, dataset: int, epoch: int) -> str:
    """The seed of one epoch of one dataset's stream (see the module docstring for why the first is special)."""
    return f"{seed}-{epoch}" if dataset == 0 else f"{seed}-{dataset}-{epoch}"


class EpochStream:
    """One dataset's micro-batches: epoch after epoch of its samples, each epoch built and shuffled by `build`."""

    def __init__(self, build: Callable[[int], list], batch_size: int) -> None:
        self._build = build
        self.batch_size = batch_size
        self._epoch: tuple[int, list] | None = None
        first = self.samples(0)
        self.epoch_size = len(first)
        self.micro_per_epoch = max(1, math.ceil(len(first) / batch_size))

    def samples(self, epoch: int) -> list:
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self._build(epoch))
        return self._epoch[1]

    def micro_batch(self, position: int) -> list:
        epoch, within = divmod(position, self.micro_per_epoch)
        start = within * self.batch_size
        return self.samples(epoch)[start : start + self.batch_size]
