"""The journal: an SQLite file in the output folder that is the truth of what a run has done.

* The run's identity (model, asks, source) is stored once; a rerun with another identity is refused, naming what
  changed, because mixing two models' or two label sets' boxes in one output would be silently wrong.
* Each finished image (its proposals, or why it failed) is one committed transaction (WAL, ``synchronous=FULL``)
  before it counts as done: after ``kill -9`` a rerun skips exactly the images committed, and does the rest.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from model.errors import MiniGPTError

__all__ = ["JOURNAL_NAME", "Journal", "JournalError", "Result", "identity_changes"]

JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = "journal.lock"  # held while a run writes, so two runs never share a journal
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    proposals TEXT,      -- JSON list of {"label", "bbox": [x0, y0, x1, y1], "score", "prompt"}; NULL on failure
    error TEXT,          -- one line; NULL on success
    seconds REAL NOT NULL
);
"""


class JournalError(MiniGPTError):
    """The journal cannot be used for this run."""


@dataclass(frozen=True)
class Result:
    """One image done: its proposals, or the reason it failed (then ``proposals`` is None)."""

    key: str
    image: str
    width: int | None = None
    height: int | None = None
    proposals: list[dict[str, Any]] | None = None
    error: str | None = None
    seconds: float = 0.0


def identity_changes(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The parts of a run's identity that differ, as 'what: before -> now'."""
    return [
        f"{key}: {_shown(stored.get(key))} -> {_shown(wanted.get(key))}"
        for key in sorted(set(stored) | set(wanted))
        if stored.get(key) != wanted.get(key)
    ]


def _shown(value: Any) -> str:
    """A part of the identity as a person reads it: labels as ``circle, car=a red car``, other values as they are."""
    if isinstance(value, list) and all(isinstance(pair, list) and len(pair) == 2 for pair in value):
        return ", ".join(label if label == prompt else f"{label}={prompt}" for label, prompt in value) or "(none)"
    return repr(value)


class Journal:
    def __init__(self, connection: sqlite3.Connection, path: Path, lock: IO[bytes] | None = None) -> None:
        self._db = connection
        self.path = path
        self._lock = lock

    @staticmethod
    def stored(folder: Path, *, failed: bool = True) -> tuple[dict[str, Any], set[str]] | None:
        """The identity and the done keys (without the failed ones unless ``failed``) of the run journalled in
        ``folder``, or None when there is none. Only reads, so a refused or finished run changes nothing."""
        path = folder / JOURNAL_NAME
        if not path.is_file():
            return None
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
                query = "SELECT key FROM results" + ("" if failed else " WHERE error IS NULL")
                done = {key for (key,) in db.execute(query)}
            finally:
                db.close()
        except sqlite3.Error as err:
            raise JournalError(f"{path} is not a readable autolabel journal ({err}); pass another --out") from err
        return (json.loads(row[0]), done) if row else None

    @classmethod
    def open(cls, folder: Path, identity: dict[str, Any]) -> Journal:
        """Open (or start) the journal in ``folder`` for a run of ``identity``; refuse another run's journal."""
        path = folder / JOURNAL_NAME
        lock = _lock(folder)
        try:
            db = sqlite3.connect(path, isolation_level=None)  # autocommit; transactions are explicit
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed image survives a power cut, not only a kill
            db.executescript(_SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('identity', ?)", (json.dumps(identity, sort_keys=True),))
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except sqlite3.Error as err:
            _unlock(lock)
            raise JournalError(
                f"cannot open the journal {path} ({err}); check the folder or pass another --out"
            ) from err
        if row is not None:
            changes = identity_changes(json.loads(row[0]), identity)
            if changes:
                db.close()
                _unlock(lock)
                raise JournalError(refusal(path, changes))
        return cls(db, path, lock)

    def done(self) -> set[str]:
        return {key for (key,) in self._db.execute("SELECT key FROM results")}

    def forget_failures(self) -> int:
        """Drop the images that failed, so this run asks them again (``--retry-failed``); returns how many."""
        self._db.execute("BEGIN IMMEDIATE")
        count = self._db.execute("DELETE FROM results WHERE error IS NOT NULL").rowcount
        self._db.execute("COMMIT")
        return count

    def commit(self, result: Result) -> None:
        """Record one finished image in its own transaction; from now on it counts as done."""
        proposals = json.dumps(result.proposals, allow_nan=False) if result.proposals is not None else None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                (result.key, result.image, result.width, result.height, proposals, result.error, result.seconds),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def results(self, keys: Iterable[str] | None = None) -> dict[str, Result]:
        rows = self._db.execute("SELECT key, image, width, height, proposals, error, seconds FROM results")
        found = {
            key: Result(key, image, width, height, json.loads(proposals) if proposals is not None else None, error, s)
            for key, image, width, height, proposals, error, s in rows
        }
        return found if keys is None else {k: found[k] for k in keys if k in found}

    def close(self) -> None:
        self._db.close()
        _unlock(self._lock)


def refusal(path: Path, changes: list[str]) -> str:
    return (
        f"{path} belongs to another run ({'; '.join(changes)}); rerun with the same model, labels, task and source "
        "to resume, or pass a new --out"
    )


def _lock(folder: Path) -> IO[bytes] | None:
    """An exclusive lock on ``folder``'s journal for this process (released by the OS if it dies); None where the
    platform has no flock (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(folder / LOCK_NAME, "ab")  # noqa: SIM115 - held open for the run, closed by _unlock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.close()
        raise JournalError(
            f"another autolabel run is writing to {folder}; wait for it to end, or pass another --out"
        ) from err
    return handle


def _unlock(handle: IO[bytes] | None) -> None:
    if handle is not None:
        handle.close()  # closing the file releases the flock
