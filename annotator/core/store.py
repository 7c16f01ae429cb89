"""The project store: one SQLite file (WAL mode) holding a folder's images, labels, boxes and the session state.

* Every change is its own committed transaction (or one transaction for a group, see :meth:`ProjectStore.batch`),
  so the store *is* the autosave. WAL with ``synchronous=NORMAL`` keeps every committed change when the process is
  killed (``kill -9``); only a power cut can lose the last few.
* The schema version is SQLite's ``user_version``. Opening an older file runs the missing migrations in one
  transaction; a file from a newer version of the app is refused rather than damaged.
* Image paths are stored relative to the folder, so a folder moved together with its store still opens.
* Every failure is a :class:`StoreError` with its cause and fix, never a raw ``sqlite3`` error. A damaged file, rows
  the app cannot use, and a store that cannot be written are refused on opening (:mod:`.store_checks`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from model.annotations import Box, Origin, OriginalProposal, Task

from .colors import color_for
from .records import BoxRow, BoxState, ImageRow, LabelRow
from .store_checks import SQLITE_FAILURES, StoreError, check_store, explain, row_error

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "STORE_SUFFIX", "ProjectStore", "StoreError", "default_store_path"]

STORE_SUFFIX = ".minigpt.sqlite"


def default_store_path(folder: str | Path) -> Path:
    """The store of ``folder`` sits next to it: ``photos/`` → ``photos.minigpt.sqlite``."""
    folder = Path(folder).resolve()
    return folder.with_name(folder.name + STORE_SUFFIX)


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would commit the migration's transaction half-way; one statement at a time keeps it whole.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _create_v1(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            width INTEGER,
            height INTEGER,
            reviewed INTEGER NOT NULL DEFAULT 0,
            error TEXT
        );
        CREATE TABLE labels (
            name TEXT PRIMARY KEY,
            color TEXT NOT NULL,
            prompt TEXT,
            position INTEGER NOT NULL
        );
        CREATE TABLE boxes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            label TEXT NOT NULL,
            x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('proposal', 'annotation')),
            origin TEXT,
            score REAL,
            task TEXT,
            prompt TEXT,
            phrase TEXT
        );
        CREATE INDEX boxes_by_image ON boxes(image_id);
        """,
    )


def _provenance_v2(db: sqlite3.Connection) -> None:
    """Schema 2: every box keeps where it came from (issue 16). Rows of schema 1 get the defaults they imply:
    a proposal was ``proposed``, an annotation with no origin ``manual``; an ``edited`` box's score was the model's
    score of the proposal it was made from, so it moves to ``original_score``; what is unknown (model version, time
    of the last change, the original box and label) stays NULL."""
    _run_script(
        db,
        """
        ALTER TABLE boxes ADD COLUMN model_version TEXT;
        ALTER TABLE boxes ADD COLUMN changed_at TEXT;
        ALTER TABLE boxes ADD COLUMN original_label TEXT;
        ALTER TABLE boxes ADD COLUMN original_score REAL;
        ALTER TABLE boxes ADD COLUMN original_x0 REAL;
        ALTER TABLE boxes ADD COLUMN original_y0 REAL;
        ALTER TABLE boxes ADD COLUMN original_x1 REAL;
        ALTER TABLE boxes ADD COLUMN original_y1 REAL;
        UPDATE boxes SET origin = 'proposed' WHERE state = 'proposal' AND origin IS NULL;
        UPDATE boxes SET origin = 'manual' WHERE state = 'annotation' AND origin IS NULL;
        UPDATE boxes SET original_score = score, score = NULL WHERE origin = 'edited' AND score IS NOT NULL
        """,
    )


def _read_version(db: sqlite3.Connection, path: Path) -> int:
    """The schema version of the store at ``path``; refuses files that are not stores or are from a newer app."""
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' LIMIT 3")]
    except SQLITE_FAILURES as err:
        raise explain(err, path, "open") from err
    if version == 0 and tables:  # another program's database: version 0 must be empty to become a store
        raise StoreError(
            f"{path} is not a project store (it is another program's SQLite database, with tables "
            f"{', '.join(tables)}); move it away or choose another --store"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer minigpt-annotate (schema {version}, this one knows up to "
            f"{SCHEMA_VERSION}); upgrade minigpt-annotate to open it"
        )
    return version


def _check_writable(db: sqlite3.Connection, version: int) -> None:
    """Write to the store and take it back: SQLite opens a read-only file without a word, and only the first change
    would fail, after the person made it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"PRAGMA user_version = {version}")
    finally:
        db.execute("ROLLBACK")


def _rejections_v3(db: sqlite3.Connection) -> None:
    """Schema 3: the proposals a person rejected (issue 17), so that a later run or batch does not propose the same
    box again. Only what identifies the box is kept: its image, label and corners."""
    _run_script(
        db,
        """
        CREATE TABLE rejections (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            label TEXT NOT NULL,
            x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL
        );
        CREATE INDEX rejections_by_image ON rejections(image_id)
        """,
    )


# MIGRATIONS[i] takes a store from schema version i to i + 1. Append, never edit a shipped step.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_create_v1, _provenance_v2, _rejections_v3)
SCHEMA_VERSION = len(MIGRATIONS)


class ProjectStore:
    """A folder's annotation project. Not thread-safe: use it from one thread (the GUI thread)."""

    def __init__(self, path: Path, db: sqlite3.Connection):
        self.path = path
        self._db = db
        self._depth = 0  # nesting of batch(); only the outermost commits
        self._commits = 0  # transactions this connection committed (see generation)

    # --- opening ---------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> ProjectStore:
        """Open (or create) the store at ``path``, bring its schema up to date and check it.

        Raises:
            StoreError: it is a folder, not a store, from a newer app, damaged, holds rows the app cannot use, or
                cannot be written (read-only file, folder or disk); the message says which, and what to do.
        """
        path = Path(path)
        if path.is_dir():
            raise StoreError(f"{path} is a folder; the project store is a file, e.g. {path}{STORE_SUFFIX}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the folder of {path}: {err}; choose another place with --store") from err
        try:
            db = sqlite3.connect(path, isolation_level=None)  # autocommit; transactions are explicit
        except SQLITE_FAILURES as err:
            raise explain(err, path, "open") from err
        try:
            # Refuse a file that is not a store, or is from a newer version, before anything is written to it:
            # switching the journal mode to WAL already rewrites the file header.
            version = _read_version(db, path)
            db.execute("PRAGMA foreign_keys = ON")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            db.execute("PRAGMA synchronous = NORMAL")
            if mode.lower() != "wal":
                raise StoreError(
                    f"{path}: the file system does not support SQLite's WAL mode; choose a local disk with --store"
                )
            _check_writable(db, version)
            store = cls(path, db)
            store._migrate()
            check_store(db, path)
        except SQLITE_FAILURES as err:
            db.close()
            raise explain(err, path, "open") from err
        except BaseException:
            db.close()
            raise
        return store

    def _migrate(self) -> None:
        version = _read_version(self._db, self.path)
        if version == SCHEMA_VERSION:
            return
        with self.batch():
            for step in MIGRATIONS[version:]:
                step(self._db)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    @property
    def generation(self) -> tuple[int, int]:
        """Changes when anything is committed to the store, by this connection or another one: work prepared from
        what the store held (an import matched in a worker) is still valid while this stays the same."""
        return self._commits, int(self._read("PRAGMA data_version")[0][0])

    def close(self) -> None:
        with contextlib.suppress(*SQLITE_FAILURES):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    # --- transactions ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group changes into one transaction: all of them are saved, or (on an error or a crash) none.

        SQLite failures (a full disk, a locked, read-only or damaged file) become :class:`StoreError` saying what
        to do.
        """
        outer = self._depth == 0
        try:
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")
                self._commits += 1
        except SQLITE_FAILURES as err:
            if outer and self._db.in_transaction:  # a failed COMMIT (a full disk) leaves the transaction open
                with contextlib.suppress(*SQLITE_FAILURES):
                    self._db.execute("ROLLBACK")
            raise explain(err, self.path, "save to") from err

    def _write(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        with self.batch():
            return self._db.execute(sql, params)

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """All rows of a query; a failure (a page damaged since opening, the disk gone) becomes a StoreError."""
        try:
            return self._db.execute(sql, params).fetchall()
        except SQLITE_FAILURES as err:
            raise explain(err, self.path, "read") from err

    # --- settings (session state) ----------------------------------------------------------------------------------
    def setting(self, key: str, default: str | None = None) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_setting(self, key: str, value: str | None) -> None:
        if value is None:
            self._write("DELETE FROM settings WHERE key = ?", (key,))
        else:
            self._write("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    # --- images ----------------------------------------------------------------------------------------------------
    def add_images(self, paths: Iterable[str]) -> int:
        """Add folder-relative paths not yet in the store; existing images keep their boxes. Returns how many."""
        with self.batch():
            before = self._count("images")
            self._db.executemany("INSERT OR IGNORE INTO images (path) VALUES (?)", [(p,) for p in paths])
            return self._count("images") - before

    def images(self) -> list[ImageRow]:
        """All images in path order, with their box counts."""
        rows = self._read(
            """
            SELECT i.id, i.path, i.width, i.height, i.reviewed, i.error,
                   COALESCE(SUM(b.state = 'annotation'), 0), COALESCE(SUM(b.state = 'proposal'), 0),
                   MIN(CASE WHEN b.state = 'proposal' THEN b.score END)
            FROM images i LEFT JOIN boxes b ON b.image_id = i.id
            GROUP BY i.id ORDER BY i.path
            """
        )
        return [_image_row(r) for r in rows]

    def image(self, image_id: int) -> ImageRow:
        rows = self._read(
            """
            SELECT i.id, i.path, i.width, i.height, i.reviewed, i.error,
                   (SELECT COUNT(*) FROM boxes WHERE image_id = i.id AND state = 'annotation'),
                   (SELECT COUNT(*) FROM boxes WHERE image_id = i.id AND state = 'proposal'),
                   (SELECT MIN(score) FROM boxes WHERE image_id = i.id AND state = 'proposal')
            FROM images i WHERE i.id = ?
            """,
            (image_id,),
        )
        if not rows:
            raise StoreError(f"no image with id {image_id} in {self.path}")
        return _image_row(rows[0])

    def image_id(self, path: str) -> int | None:
        rows = self._read("SELECT id FROM images WHERE path = ?", (path,))
        return rows[0][0] if rows else None

    def set_image_size(self, image_id: int, width: int, height: int) -> None:
        self._write("UPDATE images SET width = ?, height = ?, error = NULL WHERE id = ?", (width, height, image_id))

    def set_image_error(self, image_id: int, error: str | None) -> None:
        self._write("UPDATE images SET error = ? WHERE id = ?", (error, image_id))

    def set_reviewed(self, image_id: int, reviewed: bool) -> None:
        self._write("UPDATE images SET reviewed = ? WHERE id = ?", (int(reviewed), image_id))

    # --- labels ----------------------------------------------------------------------------------------------------
    def labels(self) -> list[LabelRow]:
        rows = self._read("SELECT name, color, prompt FROM labels ORDER BY position, name")
        return [LabelRow(name=r[0], color=r[1], prompt=r[2]) for r in rows]

    def ensure_label(self, name: str) -> LabelRow:
        """The label called ``name``, created with its fixed colour if it is new."""
        name = name.strip()
        if not name:
            raise StoreError("a label needs a name")
        with self.batch():
            rows = self._read("SELECT name, color, prompt FROM labels WHERE name = ?", (name,))
            if rows:
                return LabelRow(name=rows[0][0], color=rows[0][1], prompt=rows[0][2])
            color = color_for(name, taken=[label.color for label in self.labels()])
            self._db.execute(
                "INSERT INTO labels (name, color, prompt, position) VALUES (?, ?, NULL, ?)",
                (name, color, self._count("labels")),
            )
        return LabelRow(name=name, color=color)

    def label_position(self, name: str) -> int | None:
        rows = self._read("SELECT position FROM labels WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None

    def put_label(self, label: LabelRow, position: int) -> None:
        """Insert or restore ``label`` as it was (colour, prompt, place in the list); undo uses this."""
        self._write(
            "INSERT OR REPLACE INTO labels (name, color, prompt, position) VALUES (?, ?, ?, ?)",
            (label.name, label.color, label.prompt, position),
        )

    def remove_label(self, name: str) -> None:
        """Remove an unused label; boxes still using it keep it (it is re-created with them), so refuse that."""
        with self.batch():
            used = self._read("SELECT COUNT(*) FROM boxes WHERE label = ?", (name,))[0][0]
            if used:
                raise StoreError(f"{used} box(es) still use the label {name!r}; relabel or delete them first")
            self._db.execute("DELETE FROM labels WHERE name = ?", (name,))

    def box_ids_with_label(self, name: str) -> list[int]:
        return [r[0] for r in self._read("SELECT id FROM boxes WHERE label = ? ORDER BY id", (name,))]

    def image_ids_with_label(self, name: str) -> set[int]:
        return {r[0] for r in self._read("SELECT DISTINCT image_id FROM boxes WHERE label = ?", (name,))}

    def set_box_labels(self, ids: Sequence[int], label: str) -> None:
        with self.batch():
            self._db.executemany("UPDATE boxes SET label = ? WHERE id = ?", [(label, i) for i in ids])

    def set_label_prompt(self, name: str, prompt: str | None) -> None:
        self.ensure_label(name)
        self._write("UPDATE labels SET prompt = ? WHERE name = ?", ((prompt or "").strip() or None, name))

    # --- boxes -----------------------------------------------------------------------------------------------------
    def boxes(self, image_id: int) -> list[BoxRow]:
        rows = self._read(f"SELECT {_BOX_COLUMNS} FROM boxes WHERE image_id = ? ORDER BY id", (image_id,))
        return [_box_row(r, self.path) for r in rows]

    def annotation_corners(self, image_ids: Iterable[int]) -> dict[int, list[tuple[str, float, float, float, float]]]:
        """The annotations of these images as plain (label, x0, y0, x1, y1), in id order: a cheap copy for a worker
        thread, which makes boxes of them itself (the store belongs to the GUI thread)."""
        corners: dict[int, list[tuple[str, float, float, float, float]]] = {}
        for image_id in image_ids:
            corners[image_id] = self._read(
                "SELECT label, x0, y0, x1, y1 FROM boxes WHERE image_id = ? AND state = 'annotation' ORDER BY id",
                (image_id,),
            )
        return corners

    def all_boxes(self, state: BoxState | None = None) -> dict[int, list[BoxRow]]:
        """Every image's boxes (optionally of one state), keyed by image id; one query for exports."""
        sql = f"SELECT {_BOX_COLUMNS} FROM boxes"
        params: tuple[object, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            params = (state.value,)
        grouped: dict[int, list[BoxRow]] = {}
        for r in self._read(sql + " ORDER BY image_id, id", params):
            row = _box_row(r, self.path)
            grouped.setdefault(row.image_id, []).append(row)
        return grouped

    def put_boxes(self, rows: Sequence[BoxRow]) -> list[BoxRow]:
        """Insert or replace ``rows`` in one transaction. Rows without an id get a new, never reused one."""
        saved: list[BoxRow] = []
        with self.batch():
            for label in dict.fromkeys(row.label for row in rows if row.label.strip()):
                self.ensure_label(label)  # once per label, not per row: an import puts 10k rows of a few labels
            for row in rows:
                values = (
                    row.id,
                    row.image_id,
                    row.label,
                    *row.box.xyxy,
                    row.state.value,
                    row.origin.value if row.origin else None,
                    row.score,
                    row.task.value if row.task else None,
                    row.prompt,
                    row.phrase,
                    row.model_version,
                    row.changed_at.isoformat() if row.changed_at else None,
                    *_original_values(row.original),
                )
                cursor = self._db.execute(_PUT_BOX, values)
                saved.append(row if row.id is not None else _with_id(row, int(cursor.lastrowid or 0)))
        return saved

    def delete_boxes(self, ids: Iterable[int]) -> None:
        with self.batch():
            self._db.executemany("DELETE FROM boxes WHERE id = ?", [(i,) for i in ids])

    # --- rejected proposals ----------------------------------------------------------------------------------------
    def add_rejections(self, rows: Sequence[BoxRow]) -> list[int]:
        """Remember ``rows`` (proposals a person rejected); returns the ids to forget them by (undo)."""
        ids: list[int] = []
        with self.batch():
            for row in rows:
                cursor = self._db.execute(
                    "INSERT INTO rejections (image_id, label, x0, y0, x1, y1) VALUES (?, ?, ?, ?, ?, ?)",
                    (row.image_id, row.label, *row.box.xyxy),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def delete_rejections(self, ids: Iterable[int]) -> None:
        with self.batch():
            self._db.executemany("DELETE FROM rejections WHERE id = ?", [(i,) for i in ids])

    def rejections(self, image_id: int) -> list[tuple[str, Box]]:
        """The (label, box) of every proposal rejected on ``image_id``. A row another program made unreadable is
        passed over: it only ever holds back a proposal, so losing it costs nothing a person made."""
        found: list[tuple[str, Box]] = []
        for label, *corners in self._read(
            "SELECT label, x0, y0, x1, y1 FROM rejections WHERE image_id = ? ORDER BY id", (image_id,)
        ):
            with contextlib.suppress(ValueError, TypeError):
                found.append((str(label), Box.from_xyxy(corners)))
        return found

    # --- helpers ---------------------------------------------------------------------------------------------------
    def _count(self, table: str) -> int:
        return int(self._read(f"SELECT COUNT(*) FROM {table}")[0][0])


_BOX_COLUMNS = (
    "id, image_id, label, x0, y0, x1, y1, state, origin, score, task, prompt, phrase, model_version, changed_at, "
    "original_label, original_score, original_x0, original_y0, original_x1, original_y1"
)
_PUT_BOX = f"INSERT OR REPLACE INTO boxes ({_BOX_COLUMNS}) VALUES ({', '.join('?' * len(_BOX_COLUMNS.split(', ')))})"


def _box_row(r: tuple, path: Path) -> BoxRow:
    try:
        return BoxRow(
            id=r[0],
            image_id=r[1],
            label=r[2],
            box=Box(x0=r[3], y0=r[4], x1=r[5], y1=r[6]),
            state=BoxState(r[7]),
            origin=Origin(r[8]) if r[8] else None,
            score=r[9],
            task=Task(r[10]) if r[10] else None,
            prompt=r[11],
            phrase=r[12],
            model_version=r[13],
            changed_at=datetime.fromisoformat(r[14]) if r[14] else None,
            original=_original(r[15:21]),
        )
    except ValueError as err:  # a row changed by another program since opening (pydantic's errors are ValueErrors)
        detail = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
        raise row_error(path, "boxes", r[0], f"cannot be read ({detail})") from err


def _original_values(original: OriginalProposal | None) -> tuple[object, ...]:
    """The original_* columns of a box: label, score, x0, y0, x1, y1."""
    if original is None:
        return (None,) * 6
    corners = original.box.xyxy if original.box is not None else (None,) * 4
    return (original.label, original.score, *corners)


def _original(values: tuple) -> OriginalProposal | None:
    label, score, *corners = values
    if label is None and score is None and all(v is None for v in corners):
        return None
    box = Box.from_xyxy(corners) if all(v is not None for v in corners) else None
    return OriginalProposal(box=box, label=label, score=score)


def _image_row(r: tuple) -> ImageRow:
    return ImageRow(
        id=r[0],
        path=r[1],
        width=r[2],
        height=r[3],
        reviewed=bool(r[4]),
        error=r[5],
        annotations=int(r[6]),
        proposals=int(r[7]),
        lowest_score=float(r[8]) if r[8] is not None else None,
    )


def _with_id(row: BoxRow, box_id: int) -> BoxRow:
    return replace(row, id=box_id)
