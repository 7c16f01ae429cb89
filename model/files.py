"""Atomic file writes: nothing a user made is ever left half-written."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


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


def dump_json(value: Any, fp: TextIO, *, ensure_ascii: bool = True) -> None:
    """``json.dump(value, fp, allow_nan=False)``, byte for byte, several times faster for large files.

    ``json.dump`` encodes in pure Python (it streams); ``json.dumps`` uses the C encoder but builds the whole text.
    Here the top-level object's long lists (a COCO file's images and annotations, an import file's tasks) are
    written an element at a time, each encoded by ``json.dumps``: C speed, and memory of one element's text.
    Raises ValueError for a non-finite number, as ``json.dump`` with ``allow_nan=False`` does.
    """

    def encoded(item: Any) -> str:
        return json.dumps(item, allow_nan=False, ensure_ascii=ensure_ascii)

    def write_list(items: list[Any]) -> None:
        fp.write("[")
        for index, item in enumerate(items):
            fp.write(", " + encoded(item) if index else encoded(item))
        fp.write("]")

    if isinstance(value, list):
        write_list(value)
    elif isinstance(value, dict) and all(isinstance(key, str) for key in value):
        fp.write("{")
        for index, (key, item) in enumerate(value.items()):
            fp.write((", " if index else "") + encoded(key) + ": ")
            if isinstance(item, list):
                write_list(item)
            else:
                fp.write(encoded(item))
        fp.write("}")
    else:
        fp.write(encoded(value))
