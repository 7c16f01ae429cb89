"""A process-wide budget for the memory image decodes take, so concurrent decodes cannot add up without bound.

Each decode reserves what it will hold at its peak (the decoded pixels, the RGB result and one band of conversion
temporaries, computed from the file's header before any pixel is decoded) and waits while the decodes already
running hold the rest of the budget. Small images decode side by side; huge ones take turns. A decode larger than
the whole budget still runs, alone, so nothing deadlocks: a single decode is bounded by the pixel limit instead.

The budget is ``MINIGPT_DECODE_MEMORY_MB`` megabytes (default 1024) per process.

Freed memory must also go back to the system, or the budget bounds nothing: glibc serves blocks of up to 32 MB
(Pillow's 16 MB image blocks, numpy's band temporaries) from per-thread heaps that it keeps after they are freed, so
a server whose download threads each decoded one huge image held the sum (measured: a 4-image /predict of 240 MP
PNGs peaked 2.0 GB above idle and kept 0.8 GB; with the threshold below, 0.7 GB and 0.02 GB). When the budget is
first used, blocks of 8 MB and more are therefore set to be mapped on their own and unmapped when freed.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from model.errors import MiniGPTError

__all__ = ["DEFAULT_DECODE_MEMORY_MB", "DecodeMemory", "process_decode_memory"]

DEFAULT_DECODE_MEMORY_MB = 1024
_ENV = "MINIGPT_DECODE_MEMORY_MB"


class DecodeMemory:
    """Bytes reserved by decodes in progress, at most ``capacity`` unless one decode alone needs more."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._reserved = 0
        self._running = 0
        self._peak = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserved(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the duration of the block, waiting until they are free."""
        nbytes = max(0, nbytes)
        with self._changed:
            self._changed.wait_for(lambda: self._running == 0 or self._reserved + nbytes <= self.capacity)
            self._reserved += nbytes
            self._running += 1
            self._peak = max(self._peak, self._reserved)
        try:
            yield
        finally:
            with self._changed:
                self._reserved -= nbytes
                self._running -= 1
                self._changed.notify_all()

    @property
    def peak(self) -> int:
        """The most bytes reserved at once since this budget was made (what tests and metrics check)."""
        with self._changed:
            return self._peak


@functools.cache
def process_decode_memory() -> DecodeMemory:
    """This process's budget, sized by ``MINIGPT_DECODE_MEMORY_MB`` when first used.

    Raises:
        MiniGPTError: the variable is set to something that is not a positive whole number of megabytes.
    """
    capacity = _capacity_from_env()
    _unmap_large_blocks_when_freed()
    return DecodeMemory(capacity)


# glibc's mallopt parameter, and the size from which blocks get their own mapping: above numpy's and torch's small
# working arrays (so model code keeps reusing heap memory), below Pillow's 16 MB image blocks.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024


def _unmap_large_blocks_when_freed() -> None:
    """Fix glibc's mmap threshold (it otherwise grows to 32 MB after the first large free). No-op on other C
    libraries (macOS, Windows, musl), whose allocators return large blocks without being asked."""
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # a static or unusual build: keep the default policy
        return


def _capacity_from_env() -> int:
    text = os.environ.get(_ENV, "").strip()
    if not text:
        return DEFAULT_DECODE_MEMORY_MB * 1_000_000
    try:
        megabytes = int(text)
    except ValueError:
        megabytes = 0
    if megabytes <= 0:
        raise MiniGPTError(f"{_ENV}={text!r} is not a positive number of megabytes; set it to e.g. 1024, or unset it")
    return megabytes * 1_000_000
