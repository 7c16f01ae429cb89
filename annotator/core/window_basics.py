"""Qt-free rules behind the window's basics: the recent-folders list and the image list's file-name filter."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence

__all__ = ["MAX_RECENT", "Recent", "matches_name", "parse_recent", "push_recent", "recent_text"]

MAX_RECENT = 8

Recent = tuple[str, str]  # (image folder, project store): a project as File → Open recent reopens it


def push_recent(entries: Sequence[Recent], opened: Recent, limit: int = MAX_RECENT) -> list[Recent]:
    """``entries`` with ``opened`` first (moved there if it was listed), at most ``limit`` long."""
    return [opened, *(entry for entry in entries if entry != opened)][:limit]


def recent_text(entries: Sequence[Recent]) -> str:
    return json.dumps([list(entry) for entry in entries])


def parse_recent(text: object) -> list[Recent]:
    """The list :func:`recent_text` wrote; anything else (a hand-edited or older settings file) is skipped, never an
    error: the list only saves a few clicks."""
    try:
        items = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    return [
        (item[0], item[1])
        for item in items
        if isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) and part for part in item)
    ]


def matches_name(path: str, text: str) -> bool:
    """Whether an image's folder-relative ``path`` matches what was typed in the file-name filter: a
    case-insensitive part of the path, or a shell pattern when it holds ``*``, ``?`` or ``[`` (``*.png``)."""
    wanted = text.strip().lower()
    if not wanted:
        return True
    name = path.lower()
    if any(sign in wanted for sign in "*?["):
        return fnmatch.fnmatchcase(name, wanted) or fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], wanted)
    return wanted in name
