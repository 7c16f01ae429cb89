"""Atomic file writes: nothing a user made is ever left half-written."""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TextIO


def write_atomic(path: str | os.PathLike, write: Callable[[TextIO], object], *, binary: bool = False) -> None:
    """Let `write` fill a temporary file beside `path`, then rename it over `path` (atomic on one filesystem).

    On any failure the temporary file is removed and an existing `path` is untouched; the error propagates.
    An existing file keeps its permissions.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # os.open with 0o666 lets the umask set the mode, like a plain open() would (mkstemp would give 0600).
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        opened = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        with opened as fp:
            write(fp)
            fp.flush()
            os.fsync(fp.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda fp: fp.write(text))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    write_atomic(path, lambda fp: fp.write(data), binary=True)  # type: ignore[arg-type]
