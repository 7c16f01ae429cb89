"""What a corrections folder holds, for tests that check a refused webhook changed nothing on disk."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def corrections_contents(folder: Path) -> dict[str, object]:
    """Every file's bytes but the database's, and the database's rows (its files change even when only read)."""
    # Never open the database's own files: closing them would drop SQLite's POSIX locks in this whole process.
    files = {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("corrections.sqlite")
    }
    with contextlib.closing(sqlite3.connect(f"file:{folder / 'corrections.sqlite'}?mode=ro", uri=True)) as db:
        return {**files, "rows": list(db.iterdump())}
