"""Corrections from Label Studio, kept as an on-disk COCO dataset that `minigpt-annotate finetune` reads directly.

Layout of the folder:
- `corrections.sqlite`: the truth (SQLite, WAL). Per Label Studio task: its image copy and size; per Label Studio
  annotation (several annotators may label one task): its boxes and when it was submitted. A webhook is one
  transaction over its own rows, so what it costs does not grow with the store (rewriting whole files took 2.2 s
  per event at 10k tasks; see bench/corrections_store.py).
- `annotations.json`: COCO (`file_name` relative to the folder, boxes in pixels of the upright image), exported from
  one snapshot of the database and replaced atomically: by a child process shortly after a change (a burst of
  webhooks costs one export, and its seconds of work on a large store never hold this process's GIL), when the
  store opens (so a crash never leaves it behind) and closes, and on `export()`. When several annotations exist
  for one task it holds the most recently submitted one (duplicated objects would teach the model to repeat boxes).
- `images/task-<id>.<ext>`: a copy of each annotated task's image, downloaded once, outside every lock. The copy of
  a task that is no longer annotated is deleted only after an export without it, so `annotations.json` never names
  a missing file.
- `state.json` from earlier versions is imported once, then kept as `state.v1.json`.

Provenance (schema 2): each stored box keeps Label Studio's origin of its region and whether it matches a box of
the prediction the annotator saw (the one the webhook carries, else the last one `/predict` served for the task),
with that prediction's model version; the predicted boxes are kept too, so :func:`acceptance_by_model` (the
`evaluate-store` command) counts how many of each model version's boxes people kept.

Crash safety: every acknowledged webhook is a committed transaction (synchronous=FULL); an export interrupted by
a crash is redone when the store opens (the database records which change the file reflects); image copies of
transactions that never committed are found and deleted when it opens. Processes (gunicorn workers) share the
folder: SQLite serialises writers, and a file lock serialises exports.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ValidationError

from model.annotations import Annotation, Box, Dataset, Origin
from model.coco import write_coco
from model.errors import MiniGPTError
from model.files import write_bytes_atomic
from model.images import MODEL_FIT_PIXELS, load_image
from model.regions import value_to_box

from . import corrections_db as schema

try:
    import fcntl
except ImportError:  # Windows: the in-process lock still serialises threads
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

COCO_NAME = "annotations.json"
DB_NAME = "corrections.sqlite"
EXPORT_DELAY_S = 0.5  # after a change; at least the last export's duration, so exporting takes at most half a core


@dataclass(frozen=True)
class _NewImage:
    path: str  # relative to the store's folder
    payload: bytes  # the original bytes: EXIF stays with them
    width: int  # of the upright image
    height: int


class CorrectionStore:
    def __init__(self, root: str | Path, *, export_delay_s: float = EXPORT_DELAY_S):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "images").mkdir(exist_ok=True)
        self.coco_path = self.root / COCO_NAME
        self.db_path = self.root / DB_NAME
        self.export_delay_s = export_delay_s
        self._last_export_s = 0.0
        self._lock = threading.Lock()  # the write connection is shared by this process's threads, one at a time
        self._export_lock = threading.Lock()
        self._timer_lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False
        self._connect()
        with self._transaction() as db:
            schema.create(db, self.db_path)
            imported = schema.import_legacy_state(db, self.root)
            schema.mark_unused_images(db, self.root)
        if imported is not None:
            os.replace(imported, imported.with_name("state.v1.json"))
        self.export()  # after a crash, annotations.json may be behind the database
        _open_stores.add(self)

    # --- the webhook's operations --------------------------------------------------------------------------------
    def save(
        self,
        task_id: int,
        annotation_id: int,
        regions: list[tuple[str, dict]],
        *,
        source: str,
        fetch_image: Callable[[], bytes],
        origins: Sequence[str | None] | None = None,
        predicted: Sequence[tuple[str, dict, float | None]] = (),
        model_version: str | None = None,
    ) -> dict:
        """Replace one annotation's boxes (label, Label Studio percent value); fetch the image the first time.

        ``origins`` is Label Studio's origin of each region; ``predicted`` the (label, percent value, score) boxes
        of the prediction the annotator saw, made by ``model_version``: each stored box records whether it matches
        one of them (IoU >= 0.5, same label) and which model made it, so acceptance can be counted from the store.

        The image is downloaded before any lock is taken, so a slow download holds up no other webhook. Everything
        is checked before the first write: an annotation that cannot become COCO (a blank label, an unreadable
        image) is refused alone with a MiniGPTError and leaves the folder exactly as it was.
        """
        _check_id("task", task_id)
        _check_id("annotation", annotation_id)
        fetched: _NewImage | None = None
        for _ in range(3):  # a concurrent delete may drop the task between the look and the write: look again
            if fetched is None and self._task_size(task_id) is None:
                fetched = self._described_image(task_id, fetch_image())  # no lock held
            copied: Path | None = None
            try:
                with self._transaction() as db:
                    size = schema.task_size(db, task_id)
                    if size is None and fetched is None:
                        continue
                    width, height = size or (fetched.width, fetched.height)  # type: ignore[union-attr]
                    boxes = _boxes(annotation_id, regions, width, height, origins)
                    if not predicted:  # Label Studio did not say which prediction was seen: what was served
                        model_version, predicted = schema.served(db, task_id)
                    predictions = _predictions(predicted, width, height, model_version)
                    kept, sources = schema.match_predictions([(b.label, b.box) for b in boxes], predictions)
                    if model_version is not None or predictions:  # else no prediction seen: nothing to say
                        boxes = [
                            replace(b, predicted=p is not None, model_version=model_version)
                            for b, p in zip(boxes, sources, strict=True)
                        ]
                    # Valid: only now does anything change (the image copy first: a committed task has its copy).
                    generation = schema.next_generation(db)
                    if size is None:
                        assert fetched is not None
                        if not (self.root / fetched.path).exists():  # else the copy of a task deleted before
                            copied = self.root / fetched.path
                        write_bytes_atomic(self.root / fetched.path, fetched.payload)
                        schema.add_task(db, task_id, fetched.path, width, height, source)
                    schema.put_annotation(db, annotation_id, task_id, boxes, generation, predictions, kept)
            except BaseException:
                if copied is not None:  # not committed: the copy would name no task
                    copied.unlink(missing_ok=True)
                raise
            self._changed()
            return {"task": task_id, "annotation": annotation_id, "boxes": len(boxes)}
        raise MiniGPTError(f"task {task_id} was deleted and re-annotated while annotation {annotation_id} was saved; "
                           "submit it again")  # fmt: skip

    def remember_predictions(self, served: Sequence[tuple[object, str | None, Sequence[tuple[str, dict, Any]]]]) -> int:
        """Keep the predictions the backend served, per task (task id, model version, (label, percent value, score)
        boxes): what an annotator who opens the task sees, for :meth:`save` to compare the submitted boxes with when
        the webhook does not carry it. Tasks without a Label Studio id are skipped; returns how many were kept."""
        rows = [(t, v, [list(b) for b in boxes]) for t, v, boxes in served if type(t) is int and t > 0]
        if rows:
            with self._transaction() as db:
                schema.remember_served(db, rows)  # type: ignore[arg-type]
        return len(rows)

    def delete(self, annotation_ids: Iterable[int], task_id: int | None = None) -> dict:
        """Forget annotations, in one transaction; a task left with none leaves the dataset. Unknown ids are no-ops."""
        ids = list(annotation_ids)
        for annotation_id in ids:
            _check_id("annotation", annotation_id)
        if task_id is not None:
            _check_id("task", task_id)
        with self._transaction() as db:
            removed = schema.delete_annotations(db, ids, task_id)
        if removed:
            self._changed()
        return {"task": task_id, "annotations": ids, "removed": removed}

    # --- annotations.json ----------------------------------------------------------------------------------------
    def export(self) -> Path:
        """Bring `annotations.json` up to date with the database now, in this process; returns its path.

        The background export does the same in a child process shortly after changes; call this to read the file at
        once (tests, tools).
        """
        with self._export_lock:
            try:
                return export_store(self.root)
            except sqlite3.Error as err:
                raise _unreadable(self.db_path, err) from err

    def snapshot(self) -> Dataset:
        """The dataset `annotations.json` holds, read now from one snapshot of the database (its own connection, so
        webhooks are not held up), with absolute image paths; for a learning run."""
        try:
            with contextlib.closing(schema.connect(self.db_path)) as db, _reading(db):
                return schema.dataset(db, self.root.resolve())
        except sqlite3.Error as err:
            raise _unreadable(self.db_path, err) from err

    def close(self) -> None:
        """Export what is pending and release the database. The store is not usable afterwards."""
        with self._timer_lock:
            self._closed, timer, self._timer = True, self._timer, None
        if timer is not None:
            timer.cancel()
        try:
            self.export()
        finally:
            _open_stores.discard(self)
            self._db.close()

    @property
    def export_pending(self) -> bool:
        return self._timer is not None

    # --- internals -----------------------------------------------------------------------------------------------
    def _changed(self) -> None:
        """Schedule one export for this change and any that follow before it runs."""
        with self._timer_lock:
            if self._timer is not None or self._closed:
                return
            delay = max(self.export_delay_s, self._last_export_s)
            self._timer = threading.Timer(delay, self._export_in_background)
            self._timer.daemon = True
            self._timer.start()

    def _export_in_background(self) -> None:
        """Export in a child process: an export is seconds of Python work on a large store, and in a thread it kept
        the GIL from this process's webhooks (up to 1 s each, measured); a child shares only the files."""
        with self._timer_lock:
            self._timer = None  # a change committed from now on schedules the next export
        with self._export_lock:  # one at a time from this process
            started = time.perf_counter()
            try:
                done = subprocess.run(
                    [sys.executable, "-c", _CHILD, _PACKAGE_PARENT, str(self.root)], capture_output=True, text=True,
                    check=False,
                )  # fmt: skip
            except OSError as err:
                done = subprocess.CompletedProcess([], 1, "", str(err))
            self._last_export_s = time.perf_counter() - started
        if done.returncode != 0:  # the database keeps the truth: nothing is lost, and the next change or start retries
            cause = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            log.error("exporting %s failed: %s; the next change or restart retries", self.coco_path, cause)

    def _connect(self) -> None:
        self._pid = os.getpid()
        try:
            self._db = schema.connect(self.db_path)
        except sqlite3.Error as err:
            raise _unreadable(self.db_path, err) from err

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if os.getpid() != self._pid:  # forked (gunicorn --preload): a connection must not cross a fork
                self._connect()
            try:
                with _writing(self._db) as db:
                    yield db
            except sqlite3.Error as err:
                raise _unreadable(self.db_path, err) from err

    def _task_size(self, task_id: int) -> tuple[int, int] | None:
        with self._lock:
            try:
                return schema.task_size(self._db, task_id)
            except sqlite3.Error as err:
                raise _unreadable(self.db_path, err) from err

    def _described_image(self, task_id: int, payload: bytes) -> _NewImage:
        """A newly fetched image, checked and measured; written only once the rest of the annotation is valid."""
        image = load_image(payload, fit_pixels=MODEL_FIT_PIXELS)  # a clear ImageLoadError for a corrupt file
        with Image.open(io.BytesIO(payload)) as raw:
            extension = (raw.format or "png").lower().replace("jpeg", "jpg")
        return _NewImage(f"images/task-{task_id}.{extension}", payload, image.width, image.height)


def export_store(root: str | Path) -> Path:
    """Write `annotations.json` from one snapshot of the store's database if it is behind, then delete the image
    copies it no longer names. Processes take turns through a file lock; the database records which generation
    the file holds, so an export cut short by a crash is simply redone."""
    root = Path(root)
    coco_path = root / COCO_NAME
    with _file_lock(root / ".export.lock"), contextlib.closing(schema.connect(root / DB_NAME)) as db:
        with _reading(db):  # one snapshot: the file is exactly the database at one generation
            generation, exported = schema.generations(db)
            stale = generation > exported or not coco_path.exists()
            dataset = schema.dataset(db, root) if stale else None
        if dataset is not None:
            write_coco(dataset, coco_path)
            with _writing(db):
                schema.set_exported(db, generation)
        with _writing(db):
            for path in schema.take_unused_images(db, generation):
                with contextlib.suppress(FileNotFoundError):
                    (root / path).unlink()
    return coco_path


# The background export's program: this module's `main`, found where this process found it (appended to the path,
# so a source checkout works and an installed package shadows nothing).
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
_CHILD = (
    "import sys; sys.path.append(sys.argv[1]); from ml_backend.corrections import main; sys.exit(main(sys.argv[2:]))"
)


def _boxes(
    annotation_id: int,
    regions: list[tuple[str, dict]],
    width: int,
    height: int,
    origins: Sequence[str | None] | None = None,
) -> list[schema.CorrectedBox]:
    boxes = []
    for (label, value), origin in zip(regions, origins or [None] * len(regions), strict=True):
        box = value_to_box(value, width, height)
        if box is None:
            log.warning("annotation %s: skipping a degenerate rectangle %s", annotation_id, value)
            continue
        _check_annotation(annotation_id, label, box)
        boxes.append(schema.CorrectedBox(label=label, box=box, origin=origin))
    return boxes


def _predictions(
    predicted: Sequence[tuple[str, dict, float | None]], width: int, height: int, model_version: str | None
) -> list[schema.PredictedBox]:
    """The prediction's boxes in pixels; one that is no box (degenerate) could not have been kept, so it is left out."""
    boxes = []
    for label, value, score in predicted:
        box = value_to_box(value, width, height)
        if box is not None:
            boxes.append(schema.PredictedBox(label=label, box=box, score=score, model_version=model_version))
    return boxes


def _check_annotation(annotation_id: int, label: str, box: Box) -> None:
    """Refuse a box that `annotations.json` could not hold, naming the annotation and the fix."""
    try:
        Annotation(box=box, label=label, origin=Origin.manual)
    except ValueError as err:
        reasons = "; ".join(e["msg"] for e in err.errors()) if isinstance(err, ValidationError) else str(err)
        raise MiniGPTError(
            f"annotation {annotation_id}: label {label!r} cannot be stored ({reasons}); "
            "fix the label in Label Studio's labeling config and submit again"
        ) from None


def _check_id(kind: str, value: object) -> None:
    """Label Studio ids are positive integers; an id also names a file, and `True` is not task 1."""
    if type(value) is not int or value <= 0:
        raise MiniGPTError(f"the {kind} id {value!r} is not a Label Studio id (a positive integer)")


def _unreadable(path: Path, err: sqlite3.Error) -> MiniGPTError:
    return MiniGPTError(
        f"the corrections database {path} cannot be used ({err}); if it is damaged, move the folder aside and "
        "restore it from a backup (its annotations.json and images/ are the last export)"
    )


@contextlib.contextmanager
def _writing(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; IMMEDIATE takes the write lock up front, so it never fails half-way on a busy lock."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _reading(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN")  # deferred: the first SELECT takes the snapshot every later one sees
    try:
        yield
    finally:
        db.execute("COMMIT")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as lock_file:
        if fcntl is not None:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


# Stores with an export still scheduled write it when the interpreter exits normally (a kill is covered on open).
_open_stores: weakref.WeakSet[CorrectionStore] = weakref.WeakSet()


@atexit.register
def _export_pending() -> None:
    for store in list(_open_stores):
        if store.export_pending:
            with contextlib.suppress(Exception):
                store.close()


@dataclass(frozen=True)
class ModelAcceptance:
    """How the boxes one model version predicted fared in real labelling (see :func:`acceptance_by_model`)."""

    model_version: str | None  # None: the prediction carried no version
    predicted: int  # predicted boxes the annotators saw
    kept: int  # of them, matched by a submitted box (IoU >= 0.5, same label)
    drawn: int  # submitted boxes no prediction gave

    @property
    def acceptance_rate(self) -> float | None:
        return self.kept / self.predicted if self.predicted else None


def acceptance_by_model(root: str | Path) -> list[ModelAcceptance]:
    """Acceptance per model version over every annotation the store holds, read without changing the store.

    Raises:
        MiniGPTError: ``root`` holds no corrections store, or one this version cannot read.
    """
    path = Path(root) / DB_NAME
    if not path.is_file():
        raise MiniGPTError(
            f"{root} holds no corrections store ({DB_NAME}); pass the folder given to serve --corrections"
        )
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            version = schema.stored_version(db)
            if version < 2:  # the backend migrates it when it next starts; until then nothing was recorded
                return []
            if version > schema.SCHEMA_VERSION:
                raise MiniGPTError(
                    f"the corrections database {path} has schema {version}, this version reads "
                    f"{schema.SCHEMA_VERSION}; upgrade minigpt-annotate"
                )
            return [ModelAcceptance(*row) for row in schema.acceptance(db)]
    except sqlite3.Error as err:
        raise _unreadable(path, err) from err


def main(argv: list[str]) -> int:
    """`python -m ml_backend.corrections DIR`: export the store in DIR, as the background export does (one line on
    failure)."""
    try:
        export_store(argv[0])
    except (MiniGPTError, OSError, sqlite3.Error) as err:
        print(f"cannot export the corrections in {argv[0]}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
