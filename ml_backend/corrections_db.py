"""The corrections store's SQLite schema and queries (see :mod:`ml_backend.corrections` for the design).

Every function takes a connection inside a transaction the caller opened; none commits. Each query touches the rows
of one task or annotation through a primary key or an index, except `dataset` (the export) and the one-time
`import_legacy_state` and `mark_unused_images`, which read everything.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Origin
from model.errors import MiniGPTError
from model.evaluation.metrics import IOU_THRESHOLD, Detection, kept_detections

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0  # another worker's transaction takes milliseconds; importing a big state.json, seconds
LEGACY_STATE = "state.json"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT OR IGNORE INTO meta VALUES ('schema', 1), ('generation', 0), ('exported', 0), ('imported_state', 0)",
    # categories keep the id they got when first seen, so category ids in annotations.json never change
    "CREATE TABLE IF NOT EXISTS categories (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    """CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, image TEXT NOT NULL UNIQUE,
        width INTEGER NOT NULL, height INTEGER NOT NULL, source TEXT NOT NULL)""",
    # `submitted`: the generation that stored it; a task's latest annotation is the one in the dataset
    """CREATE TABLE IF NOT EXISTS annotations (id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL,
        submitted INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS annotations_of_task ON annotations (task_id, submitted)",
    """CREATE TABLE IF NOT EXISTS boxes (annotation_id INTEGER NOT NULL, position INTEGER NOT NULL,
        label TEXT NOT NULL, x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
        PRIMARY KEY (annotation_id, position)) WITHOUT ROWID""",
    # image copies of tasks that left the dataset at `generation`: deleted once annotations.json reflects it
    "CREATE TABLE IF NOT EXISTS unused_images (path TEXT PRIMARY KEY, generation INTEGER NOT NULL) WITHOUT ROWID",
)


# Schema 2 (issue 16): where each corrected box came from. `boxes.origin` is Label Studio's own word for the region
# (manual, prediction, prediction-changed); `boxes.predicted` says whether the box matches a box of the prediction
# the annotator saw (IoU >= 0.5, same label, one-to-one: the acceptance rule of `evaluate`), and `model_version`
# which model made that prediction (NULL for boxes stored before schema 2: not known). `predictions` keeps those
# predicted boxes and whether a corrected box kept each, so acceptance per model version is a query.
_MIGRATIONS = {
    1: (
        "ALTER TABLE boxes ADD COLUMN origin TEXT",
        "ALTER TABLE boxes ADD COLUMN predicted INTEGER",
        "ALTER TABLE boxes ADD COLUMN model_version TEXT",
        """CREATE TABLE predictions (annotation_id INTEGER NOT NULL, position INTEGER NOT NULL,
            label TEXT NOT NULL, x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
            score REAL, model_version TEXT, kept INTEGER NOT NULL,
            PRIMARY KEY (annotation_id, position)) WITHOUT ROWID""",
        # the last prediction the backend served for each task: what an annotator opening it saw, when Label Studio's
        # webhook does not say (its annotation's `prediction` is often empty); boxes as JSON [label, value, score]
        "CREATE TABLE served (task_id INTEGER PRIMARY KEY, model_version TEXT, boxes TEXT NOT NULL)",
        "UPDATE meta SET value = 2 WHERE key = 'schema'",
    ),
}


@dataclass(frozen=True)
class PredictedBox:
    """A box of the prediction the annotator saw."""

    label: str
    box: Box
    score: float | None
    model_version: str | None


@dataclass(frozen=True)
class CorrectedBox:
    """A box the annotator submitted, and where it came from."""

    label: str
    box: Box
    origin: str | None = None  # Label Studio's: manual, prediction, prediction-changed
    predicted: bool | None = None  # matches a box of the prediction (None: no prediction was seen, or not known)
    model_version: str | None = None  # of the prediction the annotator saw (which made the box, if it matches)


def match_predictions(
    boxes: Sequence[tuple[str, Box]], predictions: Sequence[PredictedBox]
) -> tuple[list[bool], list[PredictedBox | None]]:
    """Which predictions the corrected ``boxes`` kept (``evaluate``'s acceptance rule: IoU >= 0.5, same label,
    one-to-one in descending score order), and for each box the kept prediction it is (None: drawn anew)."""
    labels = sorted({label for label, _ in boxes} | {p.label for p in predictions})
    truth = Dataset(
        categories=[Category(id=i, name=name) for i, name in enumerate(labels, start=1)],
        images=[
            ImageRecord(
                path=Path("task"), width=1, height=1, annotations=[Annotation(box=b, label=lab) for lab, b in boxes]
            )
        ],
    )
    detections = [Detection(image_index=0, label=p.label, box=p.box, score=p.score or 0.0) for p in predictions]
    kept = kept_detections(truth, detections)
    # Each box is the kept prediction of its label it overlaps most (the pairing kept_detections made, for every
    # case but exact ties between two kept predictions).
    free = [p for p, k in zip(predictions, kept, strict=True) if k]
    sources: list[PredictedBox | None] = []
    for label, box in boxes:
        overlaps = [(p.box.iou(box), i) for i, p in enumerate(free) if p.label == label]
        best = max(overlaps, default=(0.0, -1))
        sources.append(free.pop(best[1]) if best[0] >= IOU_THRESHOLD else None)
    return kept, sources


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), shared by threads under the store's lock."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")  # readers (the export) never block the webhooks' writes
    db.execute("PRAGMA synchronous = FULL")  # an acknowledged webhook survives power loss, not only kill -9
    return db


def create(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema, or bring an older one up to date (in the caller's transaction)."""
    for statement in _SCHEMA:
        db.execute(statement)
    version = _meta(db, "schema")
    while version in _MIGRATIONS:
        for statement in _MIGRATIONS[version]:
            db.execute(statement)
        version = _meta(db, "schema")
    if version != SCHEMA_VERSION:
        raise MiniGPTError(
            f"the corrections database {path} has schema {version}, this version reads {SCHEMA_VERSION}; "
            "upgrade minigpt-annotate, or give --corrections a new folder"
        )


def remember_served(db: sqlite3.Connection, served: Sequence[tuple[int, str | None, list]]) -> None:
    """Keep, per task, the prediction the backend just served: (task id, model version, [label, value, score]...)."""
    db.executemany("INSERT OR REPLACE INTO served VALUES (?, ?, ?)", [(t, v, json.dumps(b)) for t, v, b in served])


def served(db: sqlite3.Connection, task_id: int) -> tuple[str | None, list[tuple[str, dict, float | None]]]:
    """The last prediction the backend served for ``task_id``: (model version, boxes); (None, []) if none."""
    row = db.execute("SELECT model_version, boxes FROM served WHERE task_id = ?", (task_id,)).fetchone()
    if row is None:
        return None, []
    return row[0], [(str(label), dict(value), score) for label, value, score in json.loads(row[1])]


def stored_version(db: sqlite3.Connection) -> int:
    """The schema of an existing store, read without changing it."""
    return _meta(db, "schema")


def _meta(db: sqlite3.Connection, key: str) -> int:
    return int(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def generations(db: sqlite3.Connection) -> tuple[int, int]:
    """(the database's generation, the generation annotations.json was last exported at)."""
    return _meta(db, "generation"), _meta(db, "exported")


def next_generation(db: sqlite3.Connection) -> int:
    return int(db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value").fetchone()[0])


def set_exported(db: sqlite3.Connection, generation: int) -> None:
    db.execute("UPDATE meta SET value = MAX(value, ?) WHERE key = 'exported'", (generation,))


# --- one task, one annotation ---------------------------------------------------------------------------------------
def task_size(db: sqlite3.Connection, task_id: int) -> tuple[int, int] | None:
    row = db.execute("SELECT width, height FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def add_task(db: sqlite3.Connection, task_id: int, image: str, width: int, height: int, source: str) -> None:
    db.execute("INSERT INTO tasks VALUES (?, ?, ?, ?, ?)", (task_id, image, width, height, source))
    db.execute("DELETE FROM unused_images WHERE path = ?", (image,))  # the same name again: a live copy now


def put_annotation(
    db: sqlite3.Connection,
    annotation_id: int,
    task_id: int,
    boxes: Sequence[tuple[str, Box] | CorrectedBox],
    generation: int,
    predictions: Sequence[PredictedBox] = (),
    kept: Sequence[bool] = (),
) -> None:
    """Store one annotation's boxes as the latest submission for its task, replacing what it held before, with the
    prediction the annotator saw (``kept``: per prediction, whether a box kept it)."""
    rows = [b if isinstance(b, CorrectedBox) else CorrectedBox(label=b[0], box=b[1]) for b in boxes]
    moved_from = _forget(db, annotation_id)
    db.execute("INSERT INTO annotations VALUES (?, ?, ?)", (annotation_id, task_id, generation))
    db.executemany("INSERT OR IGNORE INTO categories (name) VALUES (?)", [(b.label,) for b in rows])
    db.executemany(
        "INSERT INTO boxes (annotation_id, position, label, x0, y0, x1, y1, origin, predicted, model_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (annotation_id, i, b.label, *b.box.xyxy, b.origin, None if b.predicted is None else int(b.predicted),
             b.model_version)
            for i, b in enumerate(rows)
        ],
    )  # fmt: skip
    db.executemany(
        "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (annotation_id, i, p.label, *p.box.xyxy, p.score, p.model_version, int(k))
            for i, (p, k) in enumerate(zip(predictions, kept, strict=True))
        ],
    )
    if moved_from is not None and moved_from != task_id:
        _drop_task_if_unannotated(db, moved_from, generation)


def delete_annotations(db: sqlite3.Connection, annotation_ids: list[int], task_id: int | None) -> int:
    """Forget these annotations (of `task_id` only, when given); the number that existed."""
    removed, generation = 0, None
    for annotation_id in annotation_ids:
        row = db.execute("SELECT task_id FROM annotations WHERE id = ?", (annotation_id,)).fetchone()
        if row is None or (task_id is not None and row[0] != task_id):
            continue
        generation = generation or next_generation(db)  # nothing removed, nothing changed: no export either
        _forget(db, annotation_id)
        _drop_task_if_unannotated(db, row[0], generation)
        removed += 1
    return removed


def _forget(db: sqlite3.Connection, annotation_id: int) -> int | None:
    """Delete an annotation and its boxes; the task it belonged to, if it existed."""
    row = db.execute("DELETE FROM annotations WHERE id = ? RETURNING task_id", (annotation_id,)).fetchone()
    db.execute("DELETE FROM boxes WHERE annotation_id = ?", (annotation_id,))
    db.execute("DELETE FROM predictions WHERE annotation_id = ?", (annotation_id,))
    return int(row[0]) if row else None


def _drop_task_if_unannotated(db: sqlite3.Connection, task_id: int, generation: int) -> None:
    if db.execute("SELECT 1 FROM annotations WHERE task_id = ? LIMIT 1", (task_id,)).fetchone() is not None:
        return
    row = db.execute("DELETE FROM tasks WHERE id = ? RETURNING image", (task_id,)).fetchone()
    if row is not None:
        db.execute("INSERT OR REPLACE INTO unused_images VALUES (?, ?)", (row[0], generation))


def take_unused_images(db: sqlite3.Connection, exported: int) -> list[str]:
    """Image copies that annotations.json, exported at generation `exported`, no longer names; forgotten here."""
    rows = db.execute(
        "SELECT path, path IN (SELECT image FROM tasks) FROM unused_images WHERE generation <= ?", (exported,)
    ).fetchall()
    db.execute("DELETE FROM unused_images WHERE generation <= ?", (exported,))
    return [path for path, in_use in rows if not in_use]


# --- everything (the export, and once when a store opens) -----------------------------------------------------------
def dataset(db: sqlite3.Connection, root: Path) -> Dataset:
    """The dataset `annotations.json` holds: every task, in id order, with its latest annotation's boxes."""
    categories = [Category(id=i, name=name) for i, name in db.execute("SELECT id, name FROM categories ORDER BY id")]
    rows = db.execute(
        """SELECT t.id, t.image, t.width, t.height, b.label, b.x0, b.y0, b.x1, b.y1
           FROM tasks t
           JOIN annotations a ON a.id = (
               SELECT id FROM annotations WHERE task_id = t.id ORDER BY submitted DESC LIMIT 1)
           LEFT JOIN boxes b ON b.annotation_id = a.id
           ORDER BY t.id, b.position"""
    )
    images: list[ImageRecord] = []
    current = None
    for task_id, image, width, height, label, *xyxy in rows:
        if task_id != current:
            current = task_id
            images.append(ImageRecord(path=root / image, width=width, height=height, reviewed=True))
        if label is not None:  # an annotation with no boxes: an image with nothing on it
            images[-1].annotations.append(Annotation(box=Box.from_xyxy(xyxy), label=label, origin=Origin.manual))
    return Dataset(categories=categories, images=images)


def acceptance(db: sqlite3.Connection) -> list[tuple[str | None, int, int, int]]:
    """Per model version (None: not known), over every stored annotation (each is one person's labelling of a task):
    (version, predicted boxes the annotators saw, how many they kept, boxes they drew that no prediction gave), in
    version order."""
    seen = {
        version: (int(shown), int(kept or 0))
        for version, shown, kept in db.execute(
            "SELECT model_version, COUNT(*), SUM(kept) FROM predictions GROUP BY model_version"
        )
    }
    # A drawn box counts for the model whose prediction the annotator saw on that task.
    drawn = {
        version: int(count)
        for version, count in db.execute("SELECT model_version, COUNT(*) FROM boxes WHERE predicted = 0 GROUP BY 1")
    }
    versions = sorted(set(seen) | set(drawn), key=lambda v: (v is None, v or ""))
    return [(v, *seen.get(v, (0, 0)), drawn.get(v, 0)) for v in versions]


def mark_unused_images(db: sqlite3.Connection, root: Path) -> None:
    """Files in images/ that no task names (a copy written by a transaction a crash cut short): delete at export."""
    named = {row[0] for row in db.execute("SELECT image FROM tasks UNION SELECT path FROM unused_images")}
    generation = _meta(db, "generation")
    stray = [f"images/{p.name}" for p in (root / "images").iterdir() if p.is_file()]
    db.executemany(
        "INSERT INTO unused_images VALUES (?, ?)", [(path, generation) for path in stray if path not in named]
    )


def import_legacy_state(db: sqlite3.Connection, root: Path) -> Path | None:
    """Import the state.json of earlier versions once; its path (to be renamed aside after the commit), or None.

    Entries that were never valid (a task id like "True", a blank label) are skipped with a warning; the file is
    kept as state.v1.json, so nothing is lost.
    """
    path = root / LEGACY_STATE
    if _meta(db, "imported_state") or not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        categories, tasks = list(state.get("categories") or []), dict(state.get("tasks") or {})
    except (ValueError, AttributeError, TypeError) as err:
        raise MiniGPTError(
            f"the corrections state {path} of an earlier version is unreadable ({err}); restore it from a backup, "
            "or move it aside to start without it"
        ) from err
    db.executemany("INSERT OR IGNORE INTO categories (name) VALUES (?)", [(str(n),) for n in categories])
    imported = 0
    for key, task in tasks.items():
        db.execute("SAVEPOINT legacy_task")  # a task is imported whole or not at all
        try:
            task_id = _legacy_id(key)
            add_task(db, task_id, _legacy_image(task["image"]), int(task["width"]), int(task["height"]),
                     str(task["source"]))  # fmt: skip
            for annotation_key, stored in dict(task["annotations"]).items():  # in submission order
                boxes = []
                for box in stored:
                    try:
                        boxes.append(_legacy_box(box))
                    except (ValueError, TypeError, KeyError) as err:
                        log.warning("%s: task %s: skipping box %r (%s)", path, key, box, err)
                put_annotation(db, _legacy_id(annotation_key), task_id, boxes, next_generation(db))
            _drop_task_if_unannotated(db, task_id, _meta(db, "generation"))
            imported += 1
        except (ValueError, TypeError, KeyError, sqlite3.IntegrityError) as err:
            db.execute("ROLLBACK TO legacy_task")
            log.warning("%s: skipping task %r (%s); it stays in state.v1.json", path, key, err)
        db.execute("RELEASE legacy_task")
    db.execute("UPDATE meta SET value = 1 WHERE key = 'imported_state'")
    log.info("imported %d of %d task(s) from %s (kept as state.v1.json)", imported, len(tasks), path)
    return path


def _legacy_id(key: object) -> int:
    if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) > 0):
        raise ValueError(f"{key!r} is not a Label Studio id")
    return int(key)


def _legacy_image(image: object) -> str:
    """A copy's name inside images/ (an edited file could name any path, which an export would later delete)."""
    name = Path(str(image)).name
    if str(image) != f"images/{name}" or name in ("", ".", ".."):
        raise ValueError(f"{image!r} is not an image copy in images/")
    return str(image)


def _legacy_box(stored: dict) -> tuple[str, Box]:
    annotation = Annotation(box=Box.from_xyxy(stored["bbox"]), label=str(stored["label"]), origin=Origin.manual)
    return annotation.label, annotation.box
