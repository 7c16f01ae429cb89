"""The desktop app's Qt-free core on real files and real SQLite: the store (crash safety, schema versions), undoable
edits, proposal merging, label colours, the project folder, display images and COCO exchange."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from patience import HANG_S
from PIL import Image, ImageDraw

import annotator.core.exchange as exchange
from annotator.core import edits
from annotator.core.colors import color_for
from annotator.core.display import DisplayImage, load_display_image
from annotator.core.edits import BoxChange
from annotator.core.exchange import ExchangeError, export_coco, import_coco
from annotator.core.folder import (
    FOLDER_SETTING,
    IMAGE_SUFFIXES,
    ProjectFolderError,
    missing_images,
    open_project,
    probe_image,
    project_folder,
    reopen_project,
    scan_folder,
)
from annotator.core.merging import proposal_rows, visible
from annotator.core.records import BoxRow, BoxState, ImageStatus
from annotator.core.store import SCHEMA_VERSION, ProjectStore, StoreError, default_store_path
from model.annotations import Box, Origin, OriginalProposal, Proposal, Task
from model.coco import load_with_pycocotools, read_coco
from model.errors import ImageLoadError, MiniGPTError
from model.images import image_size, load_image
from model.synthetic.shapes import make_shapes

REPO = Path(__file__).resolve().parents[1]
KILL_CHILD = Path(__file__).with_name("store_kill_child.py")


def xyxy(x0: float, y0: float, x1: float, y1: float) -> Box:
    return Box.from_xyxy((x0, y0, x1, y1))


def annotation(image_id: int, label: str, box: Box, **fields: Any) -> BoxRow:
    return BoxRow(image_id, label, box, BoxState.annotation, origin=fields.pop("origin", Origin.manual), **fields)


def proposal(image_id: int, label: str, box: Box, score: float = 0.8) -> BoxRow:
    return BoxRow(
        image_id,
        label,
        box,
        BoxState.proposal,
        origin=Origin.proposed,
        score=score,
        task=Task.detection,
        prompt="[detection] x",
        model_version="tiny-shapes",
    )


EDIT_TIME = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def expected_edit(row: BoxRow, at: datetime = EDIT_TIME, **change: Any) -> BoxRow:
    """What a person's move or relabel makes of ``row``, worked out here on its own: a model box becomes an
    ``edited`` annotation that keeps the proposal and drops the model's score (and, relabelled, its phrase)."""
    changed = replace(row, changed_at=at, **change)
    if row.origin in (None, Origin.manual) and not row.is_proposal:
        return changed
    kept = row.original or OriginalProposal(box=row.box, label=row.label, score=row.score)
    return replace(
        changed,
        state=BoxState.annotation,
        origin=Origin.edited,
        original=kept,
        score=None,
        phrase=row.phrase if changed.label == row.label else None,
    )


def rows_by_id(store: ProjectStore, image_id: int) -> dict[int, BoxRow]:
    return {row.id: row for row in store.boxes(image_id) if row.id is not None}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def store(tmp_path: Path):
    opened = ProjectStore.open(tmp_path / "project.minigpt.sqlite")
    opened.add_images(["a.png", "b.png"])
    yield opened
    opened.close()


def image_id(store: ProjectStore, path: str = "a.png") -> int:
    found = store.image_id(path)
    assert found is not None
    return found


# ======================================================================================================================
# Store


def test_store_reopen_keeps_images_labels_boxes_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "p.minigpt.sqlite"
    store = ProjectStore.open(path)
    assert store.add_images(["b.jpg", "a.png", "sub/c.png"]) == 3
    assert store.add_images(["a.png", "d.png"]) == 1  # existing paths are kept, not duplicated
    a, b = image_id(store, "a.png"), image_id(store, "b.jpg")
    store.set_image_size(a, 640, 480)
    store.set_image_error(b, "cannot read image 'b.jpg': truncated")
    store.set_reviewed(a, True)
    store.ensure_label("dog")
    store.set_label_prompt("dog", "a dog or a puppy")
    saved = store.put_boxes(
        [
            annotation(a, "cat", xyxy(1.5, 2.25, 100, 200), phrase="the cat on the left"),
            BoxRow(a, "dog", xyxy(5, 5, 50, 60), BoxState.proposal, score=0.42, task=Task.refer, prompt="[refer] dog"),
            annotation(a, "dog", xyxy(10, 10, 20, 20), origin=Origin.edited, score=0.9),
        ]
    )
    store.set_setting("current_image", str(a))
    store.set_setting("threshold", "0.35")
    store.set_setting("threshold", None)
    before = (store.images(), store.labels(), store.all_boxes(), store.setting("current_image"))
    store.close()

    reopened = ProjectStore.open(path)
    try:
        assert (reopened.images(), reopened.labels(), reopened.all_boxes(), reopened.setting("current_image")) == before
        assert reopened.setting("threshold") is None and reopened.setting("threshold", "0.5") == "0.5"
        assert reopened.schema_version == SCHEMA_VERSION
        assert [label.name for label in reopened.labels()] == ["dog", "cat"]  # first-seen order, kept
        assert reopened.labels()[0].prompt == "a dog or a puppy"
        assert reopened.boxes(a) == saved
        image_a = reopened.image(a)
        assert (image_a.width, image_a.height, image_a.reviewed, image_a.annotations, image_a.proposals) == (
            640,
            480,
            True,
            2,
            1,
        )
        assert reopened.image(b).error is not None
    finally:
        reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("made_by", ["store", "plain sqlite"])
def test_store_from_a_newer_version_is_refused_and_left_untouched(tmp_path: Path, made_by: str) -> None:
    path = tmp_path / "newer.minigpt.sqlite"
    if made_by == "store":
        store = ProjectStore.open(path)
        store.add_images(["a.png"])
        store.close()
    with sqlite3.connect(path) as db:  # a plain file is in rollback-journal mode: switching it to WAL rewrites it
        db.execute("CREATE TABLE IF NOT EXISTS future (x)")
        db.execute("PRAGMA user_version = 99")
    db.close()
    digest, listing = sha(path), sorted(os.listdir(tmp_path))

    with pytest.raises(StoreError, match=r"newer minigpt-annotate \(schema 99, this one knows up to \d+\); upgrade"):
        ProjectStore.open(path)
    assert sha(path) == digest
    assert sorted(os.listdir(tmp_path)) == listing  # no -wal/-shm left beside it either
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    db.close()


def test_a_file_that_is_not_sqlite_gives_a_clear_error_and_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.minigpt.sqlite"
    path.write_text("shopping list: milk, eggs\n" * 40)
    digest = sha(path)
    with pytest.raises(StoreError, match=r"is not a project store \(file is not a database\); move it away"):
        ProjectStore.open(path)
    assert sha(path) == digest
    with pytest.raises(StoreError, match="is a folder"):
        ProjectStore.open(tmp_path)


def test_store_migrates_from_version_0(tmp_path: Path) -> None:
    empty = tmp_path / "empty.minigpt.sqlite"
    empty.touch()  # SQLite reads a 0-byte file as an empty database of version 0
    with sqlite3.connect(tmp_path / "v0.minigpt.sqlite") as db:
        db.execute("PRAGMA user_version = 0")
    db.close()
    for path in (empty, tmp_path / "v0.minigpt.sqlite"):
        store = ProjectStore.open(path)
        try:
            assert store.schema_version == SCHEMA_VERSION
            store.add_images(["x.png"])
            assert store.put_boxes([annotation(image_id(store, "x.png"), "cat", xyxy(0, 0, 5, 5))])[0].id == 1
        finally:
            store.close()


# The boxes table as schema 1 (the first shipped store) created it, copied verbatim from store._create_v1: a store
# file written before provenance existed.
_SCHEMA_1 = """
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
PRAGMA user_version = 1;
"""


def test_a_schema_1_store_migrates_with_its_boxes_intact_and_provenance_defaults(tmp_path: Path) -> None:
    path = tmp_path / "old.minigpt.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(_SCHEMA_1)
        db.execute("INSERT INTO images (id, path, width, height) VALUES (1, 'a.png', 100, 80)")
        db.executemany(
            "INSERT INTO labels (name, color, prompt, position) VALUES (?, ?, NULL, ?)",
            [("cat", "#ff0000", 0), ("dog", "#00ff00", 1)],
        )
        db.executemany(
            "INSERT INTO boxes (id, image_id, label, x0, y0, x1, y1, state, origin, score, task, prompt, phrase) "
            "VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (1, "cat", 1, 2, 30, 40, "annotation", "manual", None, None, None, None),
                (2, "dog", 5, 5, 50, 50, "proposal", None, 0.4, "detection", "[detection] dog", None),
                (3, "cat", 10, 10, 60, 60, "annotation", "accepted", 0.9, "detection", "[detection] cat", "a cat"),
                (4, "dog", 20, 20, 70, 70, "annotation", "edited", 0.7, "detection", "[detection] dog", None),
            ],
        )
        db.commit()
    store = ProjectStore.open(path)
    try:
        assert store.schema_version == SCHEMA_VERSION == 3
        manual, proposed, accepted, edited = store.boxes(1)
        assert [r.box.xyxy for r in (manual, proposed, accepted, edited)] == [
            (1, 2, 30, 40),
            (5, 5, 50, 50),
            (10, 10, 60, 60),
            (20, 20, 70, 70),
        ]
        assert [r.label for r in (manual, proposed, accepted, edited)] == ["cat", "dog", "cat", "dog"]
        assert (manual.origin, manual.score, manual.original) == (Origin.manual, None, None)
        assert (proposed.state, proposed.origin, proposed.score) == (BoxState.proposal, Origin.proposed, 0.4)
        assert (accepted.origin, accepted.score, accepted.phrase, accepted.task) == (
            Origin.accepted,
            0.9,
            "a cat",
            Task.detection,
        )
        # The score an edited box carried was the model's, of the proposal it came from: kept as such, not as its own.
        assert (edited.origin, edited.score, edited.original) == (Origin.edited, None, OriginalProposal(score=0.7))
        # What schema 1 never knew stays unknown rather than made up.
        assert all(r.model_version is None and r.changed_at is None for r in store.boxes(1))
        # The migrated project works on: a move of the accepted box keeps its proposal beside it.
        moved = accepted.moved_to(xyxy(11, 11, 61, 61), EDIT_TIME)
        edits.replace_boxes("Move", [accepted], [moved]).redo(store)
    finally:
        store.close()
    reopened = ProjectStore.open(path)
    try:
        again = rows_by_id(reopened, 1)[3]
        assert (again.origin, again.score, again.changed_at) == (Origin.edited, None, EDIT_TIME)
        assert again.original == OriginalProposal(box=xyxy(10, 10, 60, 60), label="cat", score=0.9)
    finally:
        reopened.close()


def test_editing_a_proposal_makes_it_an_edited_annotation_that_keeps_the_proposal(store: ProjectStore) -> None:
    a = image_id(store)
    (row,) = store.put_boxes([replace(proposal(a, "dog", xyxy(0, 0, 10, 10), 0.6), phrase="a dog")])
    resized = row.moved_to(xyxy(0, 0, 12, 11), EDIT_TIME)
    edits.replace_boxes("Resize", [row], [resized]).redo(store)
    (stored,) = store.boxes(a)
    assert (stored.id, stored.state, stored.origin) == (row.id, BoxState.annotation, Origin.edited)
    assert (stored.score, stored.phrase, stored.changed_at) == (None, "a dog", EDIT_TIME)
    assert stored.original == OriginalProposal(box=xyxy(0, 0, 10, 10), label="dog", score=0.6)
    assert (stored.model_version, stored.task, stored.prompt) == ("tiny-shapes", Task.detection, "[detection] x")
    # A second edit keeps the first proposal, not the edited box; a new label drops the model's phrase for it.
    later = datetime(2026, 11, 30, tzinfo=UTC)
    relabelled = stored.relabelled("wolf", later)
    assert (relabelled.original, relabelled.phrase, relabelled.changed_at) == (stored.original, None, later)
    assert store.image(a).status is not ImageStatus.has_proposals  # it is the person's box now


def test_default_store_path_sits_beside_the_folder(tmp_path: Path) -> None:
    assert default_store_path(tmp_path / "photos") == (tmp_path / "photos.minigpt.sqlite").resolve()


# ----------------------------------------------------------------------------------------------------------------------
# kill -9 in the middle of a burst of edits


def _run_kill_child(store_path: Path, mode: str, edits_before_kill: int, seed: int) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(KILL_CHILD), str(store_path), mode, str(edits_before_kill), str(seed)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env=child_env(),
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    complete = proc.stdout.split("\n")[:-1]  # a line cut by the kill has no newline: it was never reported
    return [json.loads(line) for line in complete]


def _store_rows(store: ProjectStore) -> list[list[Any]]:
    rows = [
        [r.id, r.image_id, r.label, *r.box.xyxy, r.state.value, r.origin.value if r.origin else None]
        for rows in store.all_boxes().values()
        for r in rows
    ]
    return sorted(rows, key=json.dumps)


def _without_new_ids(rows: list[list[Any]], known: set[int]) -> list[str]:
    return sorted(json.dumps([row[0] if row[0] in known else None, *row[1:]]) for row in rows)


@pytest.mark.parametrize(("mode", "seed"), [("in_transaction", 1), ("timer", 2), ("timer", 7)])
def test_kill_9_during_a_burst_of_edits_keeps_every_reported_edit(tmp_path: Path, mode: str, seed: int) -> None:
    path = tmp_path / "killed.minigpt.sqlite"
    setup = ProjectStore.open(path)
    setup.add_images(["a.png", "b.png", "c.png"])
    setup.close()

    lines = _run_kill_child(path, mode, 40, seed)
    done = [line for line in lines if line["kind"] == "done"]
    assert len(done) >= 3, "the child died before reporting any edit"
    last = done[-1]
    in_flight = [line for line in lines if line["kind"] == "begin" and line["index"] == last["index"] + 1]

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    store = ProjectStore.open(path)
    try:
        state = _store_rows(store)
        if mode == "in_transaction":
            assert last["index"] == 39 and in_flight  # killed inside edit 40, after its writes, before its COMMIT
        if state != last["rows"]:
            # only the one edit in flight may be there as well (committed, killed before it was reported)
            assert in_flight, "the store differs from the last reported edit and no edit was in flight"
            known = {row[0] for row in last["rows"]}
            assert _without_new_ids(state, known) == _without_new_ids(in_flight[0]["rows"], known)
            assert mode == "timer"
        # still a working store: a new edit gets a fresh id
        new = store.put_boxes([annotation(1, "cat", xyxy(0, 0, 3, 3))])[0]
        assert new.id is not None and all(new.id > row[0] for row in state)
    finally:
        store.close()


# ======================================================================================================================
# Edits


def _check_round_trip(store: ProjectStore, change: BoxChange, expected: dict[int, BoxRow] | None = None) -> None:
    image = change.image_id
    before = rows_by_id(store, image)
    change.redo(store)
    after = rows_by_id(store, image)
    if expected is not None:
        assert after == expected
    change.undo(store)
    assert rows_by_id(store, image) == before
    change.redo(store)
    assert rows_by_id(store, image) == after


def test_undo_redo_round_trips_for_every_kind_of_edit(store: ProjectStore) -> None:
    a = image_id(store)
    add = edits.add_boxes("Add", a, [annotation(a, "cat", xyxy(0, 0, 10, 10)), proposal(a, "dog", xyxy(5, 5, 30, 30))])
    _check_round_trip(store, add)
    cat, dog = store.boxes(a)
    assert (cat.label, dog.label, dog.is_proposal) == ("cat", "dog", True)

    moved = cat.moved_to(xyxy(1, 2, 11, 12))
    _check_round_trip(store, edits.replace_boxes("Move", [cat], [moved]), {cat.id: moved, dog.id: dog})
    relabelled = moved.relabelled("lynx")
    _check_round_trip(store, edits.replace_boxes("Relabel", [moved], [relabelled]), {cat.id: relabelled, dog.id: dog})
    assert "lynx" in {label.name for label in store.labels()}

    accept = edits.accept([dog, relabelled])
    accepted = replace(dog, state=BoxState.annotation, origin=Origin.accepted, changed_at=accept.after[0].changed_at)
    _check_round_trip(store, accept, {cat.id: relabelled, dog.id: accepted})
    stored = rows_by_id(store, a)[dog.id]
    assert (stored.id, stored.state, stored.origin, stored.score) == (dog.id, BoxState.annotation, Origin.accepted, 0.8)

    edited = stored.moved_to(xyxy(6, 6, 31, 31))
    assert edited.origin is Origin.edited  # an accepted proposal that a person moves is now their edit
    _check_round_trip(store, edits.replace_boxes("Move", [stored], [edited]), {cat.id: relabelled, dog.id: edited})

    late = store.put_boxes([proposal(a, "bird", xyxy(40, 40, 60, 60))])[0]
    _check_round_trip(store, edits.reject([late, edited]), {cat.id: relabelled, dog.id: edited})
    _check_round_trip(store, edits.remove_boxes("Delete", [relabelled, edited]), {})


def test_accept_keeps_the_id_and_a_later_move_makes_it_edited(store: ProjectStore) -> None:
    a = image_id(store)
    (row,) = store.put_boxes([proposal(a, "dog", xyxy(0, 0, 10, 10))])
    edits.accept([row]).redo(store)
    (accepted,) = store.boxes(a)
    assert (accepted.id, accepted.origin, accepted.is_proposal) == (row.id, Origin.accepted, False)
    edits.replace_boxes("Relabel", [accepted], [accepted.relabelled("puppy")]).redo(store)
    assert store.boxes(a)[0].origin is Origin.edited
    manual = annotation(a, "cat", xyxy(0, 0, 3, 3))
    assert manual.moved_to(xyxy(1, 1, 4, 4)).origin is Origin.manual  # a hand-drawn box stays manual


def test_a_box_change_over_many_rows_is_one_transaction(store: ProjectStore) -> None:
    a = image_id(store)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    change = edits.add_boxes("Run", a, [proposal(a, f"label{i % 7}", xyxy(i, i, i + 5, i + 5)) for i in range(60)])
    change.redo(store)
    change.undo(store)
    store._db.set_trace_callback(None)
    transaction_statements = [s for s in statements if s.split()[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK")]
    assert transaction_statements == ["BEGIN IMMEDIATE", "COMMIT"] * 2

    # all or nothing: a failing row (no such image) rolls back the 59 before it
    broken = edits.BoxChange("Run", a, before=[], after=[*change.after[:59], proposal(9999, "x", xyxy(0, 0, 1, 1))])
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        broken.redo(store)
    assert store.boxes(a) == []


def test_an_edit_spans_one_image() -> None:
    with pytest.raises(ValueError, match="exactly one image"):
        edits.remove_boxes("Delete", [annotation(1, "a", xyxy(0, 0, 1, 1)), annotation(2, "a", xyxy(0, 0, 1, 1))])


_LABELS = st.sampled_from(["cat", "dog", "bird"])
_BOXES = st.builds(
    lambda x, y, w, h: Box.from_xywh((x / 2, y / 2, w / 2, h / 2)),
    st.integers(0, 800),
    st.integers(0, 800),
    st.integers(1, 300),
    st.integers(1, 300),
)


class EditsMatchAPureModel(RuleBasedStateMachine):
    """Random edits, undos and redos against a real store, checked against a pure-Python model of the rows.

    The model computes every edit's result on its own (only the ids of new rows come from the store), and undo/redo
    restore the model's snapshots, like a QUndoStack: a new edit drops the redo history.
    """

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.store = ProjectStore.open(Path(self.folder.name) / "model.minigpt.sqlite")
        self.store.add_images(["a.png", "b.png"])
        self.image = image_id(self.store)
        self.other = image_id(self.store, "b.png")
        self.store.put_boxes([annotation(self.other, "cat", xyxy(0, 0, 9, 9))])  # another image, never touched
        self.untouched = self.store.boxes(self.other)
        self.model: dict[int, BoxRow] = {}
        self.done: list[tuple[BoxChange, dict[int, BoxRow], dict[int, BoxRow]]] = []
        self.undone: list[tuple[BoxChange, dict[int, BoxRow], dict[int, BoxRow]]] = []
        self.max_id = max(row.id or 0 for row in self.untouched)

    def teardown(self) -> None:
        self.store.close()
        self.folder.cleanup()

    def _apply(self, change: BoxChange, expected: dict[int, BoxRow]) -> None:
        before = dict(self.model)
        change.redo(self.store)
        self.model = expected
        self.done.append((change, before, dict(expected)))
        self.undone.clear()

    def _pick(self, data: st.DataObject, proposals_only: bool = False) -> list[BoxRow]:
        pool = sorted((row for row in self.model.values() if row.is_proposal or not proposals_only), key=_id)
        return data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique_by=_id))

    @rule(boxes=st.lists(st.tuples(_LABELS, _BOXES, st.booleans(), st.floats(0, 1)), min_size=1, max_size=5))
    def add(self, boxes: list[tuple[str, Box, bool, float]]) -> None:
        rows = [
            proposal(self.image, label, box, score) if is_proposal else annotation(self.image, label, box)
            for label, box, is_proposal, score in boxes
        ]
        change = edits.add_boxes("Add", self.image, rows)
        change.redo(self.store)
        ids = [row.id for row in change.after]
        assert all(i is not None and i > self.max_id for i in ids) and len(set(ids)) == len(ids)  # never reused
        self.max_id = max(i for i in ids if i is not None)
        change.undo(self.store)
        self._apply(change, {**self.model, **{row.id: row for row in change.after if row.id is not None}})

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        picked = self._pick(data)
        gone = {row.id for row in picked}
        self._apply(edits.remove_boxes("Delete", picked), {i: r for i, r in self.model.items() if i not in gone})

    @precondition(lambda self: self.model)
    @rule(data=st.data(), dx=st.integers(-40, 40), dy=st.integers(-40, 40))
    def move(self, data: st.DataObject, dx: int, dy: int) -> None:
        picked = self._pick(data)
        expected = dict(self.model)
        for row in picked:
            box = Box(x0=row.box.x0 + dx, y0=row.box.y0 + dy, x1=row.box.x1 + dx, y1=row.box.y1 + dy)
            expected[_id(row)] = expected_edit(row, box=box)
        after = [row.moved_to(expected[_id(row)].box, EDIT_TIME) for row in picked]
        self._apply(edits.replace_boxes("Move", picked, after), expected)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), label=_LABELS)
    def relabel(self, data: st.DataObject, label: str) -> None:
        (row,) = self._pick(data)[:1]
        expected = {**self.model, _id(row): expected_edit(row, label=label)}
        self._apply(edits.replace_boxes("Relabel", [row], [row.relabelled(label, EDIT_TIME)]), expected)

    @precondition(lambda self: any(row.is_proposal for row in self.model.values()))
    @rule(data=st.data())
    def accept(self, data: st.DataObject) -> None:
        picked = self._pick(data, proposals_only=True)
        expected = dict(self.model)
        change = edits.accept(picked)
        stamped = {_id(row): row.changed_at for row in change.after}
        for row in picked:
            assert stamped[_id(row)] is not None  # accepting is a change, and says when
            expected[_id(row)] = replace(
                row, state=BoxState.annotation, origin=Origin.accepted, changed_at=stamped[_id(row)]
            )
        self._apply(change, expected)

    @precondition(lambda self: any(row.is_proposal for row in self.model.values()))
    @rule(data=st.data())
    def reject(self, data: st.DataObject) -> None:
        gone = {row.id for row in self._pick(data, proposals_only=True)}
        rows = [self.model[i] for i in sorted(i for i in gone if i is not None)]
        self._apply(edits.reject(rows), {i: r for i, r in self.model.items() if i not in gone})

    @precondition(lambda self: self.done)
    @rule()
    def undo(self) -> None:
        change, before, after = self.done.pop()
        change.undo(self.store)
        self.model = dict(before)
        self.undone.append((change, before, after))

    @precondition(lambda self: self.undone)
    @rule()
    def redo(self) -> None:
        change, before, after = self.undone.pop()
        change.redo(self.store)
        self.model = dict(after)
        self.done.append((change, before, after))

    @invariant()
    def store_equals_model(self) -> None:
        assert rows_by_id(self.store, self.image) == self.model
        assert self.store.boxes(self.other) == self.untouched


def _id(row: BoxRow) -> int:
    assert row.id is not None
    return row.id


TestEditsMatchAPureModel = EditsMatchAPureModel.TestCase
TestEditsMatchAPureModel.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ======================================================================================================================
# Merging model output


def make_proposal(label: str, box: Box, score: float) -> Proposal:
    return Proposal(box=box, label=label, score=score, task=Task.detection, prompt=f"[detection] {label}")


def test_proposals_never_alter_annotations(store: ProjectStore) -> None:
    a = image_id(store)
    mine = store.put_boxes([annotation(a, "dog", xyxy(0, 0, 100, 100)), annotation(a, "cat", xyxy(200, 0, 300, 90))])
    rows = proposal_rows(
        [make_proposal("dog", xyxy(2, 2, 101, 99), 0.99), make_proposal("cat", xyxy(0, 0, 100, 100), 0.9)], a, mine
    )
    assert [(row.label, row.state) for row in rows] == [("cat", BoxState.proposal)]  # the dog repeats my dog
    edits.add_boxes("AI run", a, rows).redo(store)
    assert [row for row in store.boxes(a) if not row.is_proposal] == mine


def test_duplicates_of_existing_boxes_of_the_same_label_are_dropped() -> None:
    existing = [annotation(1, "dog", xyxy(0, 0, 100, 100)), proposal(1, "cat", xyxy(0, 0, 50, 50), 0.3)]
    rows = proposal_rows(
        [
            make_proposal("dog", xyxy(10, 10, 100, 100), 0.9),  # IoU 0.81 with my dog
            make_proposal("cat", xyxy(1, 1, 50, 50), 0.95),  # repeats an earlier run's cat, even scoring higher
            make_proposal("cat", xyxy(0, 0, 100, 100), 0.5),  # overlaps the dog, but is a cat: kept
            make_proposal("dog", xyxy(300, 300, 340, 350), 0.2),
        ],
        1,
        existing,
    )
    assert [(row.label, row.box.xyxy) for row in rows] == [("cat", (0, 0, 100, 100)), ("dog", (300, 300, 340, 350))]
    assert proposal_rows([make_proposal("dog", xyxy(0, 0, 10, 10), 0.5)], 1, [], label="Dog")[0].label == "Dog"


def test_within_one_run_overlapping_proposals_keep_the_best_score() -> None:
    rows = proposal_rows(
        [
            make_proposal("dog", xyxy(0, 0, 100, 100), 0.4),
            make_proposal("dog", xyxy(5, 5, 100, 100), 0.9),
            make_proposal("dog", xyxy(200, 0, 300, 100), 0.6),
            make_proposal("dog", xyxy(202, 0, 300, 100), 0.1),
        ],
        1,
        [],
    )
    assert [(row.score, row.box.x0) for row in rows] == [(0.9, 5), (0.6, 200)]


def test_visible_hides_weak_proposals_only() -> None:
    rows = [
        annotation(1, "a", xyxy(0, 0, 1, 1), score=0.01),
        proposal(1, "b", xyxy(0, 0, 1, 1), 0.2),
        proposal(1, "c", xyxy(0, 0, 1, 1), 0.5),
        replace(proposal(1, "d", xyxy(0, 0, 1, 1)), score=None),
    ]
    assert [row.label for row in visible(rows, 0.5)] == ["a", "c"]
    assert [row.label for row in visible(rows, 0.0)] == ["a", "b", "c", "d"]
    assert [row.label for row in visible(rows, 1.0)] == ["a"]


_GRID_BOXES = st.builds(
    lambda x, y, w, h: Box.from_xywh((x * 10, y * 10, w * 10, h * 10)),
    st.integers(0, 6),
    st.integers(0, 6),
    st.integers(1, 5),
    st.integers(1, 5),
)


@given(
    proposals=st.lists(st.builds(make_proposal, _LABELS, _GRID_BOXES, st.floats(0, 1)), max_size=12),
    existing=st.lists(st.builds(lambda label, box: annotation(1, label, box), _LABELS, _GRID_BOXES), max_size=5),
)
@settings(max_examples=150, deadline=None)
def test_merging_properties(proposals: list[Proposal], existing: list[BoxRow]) -> None:
    snapshot = list(existing)
    rows = proposal_rows(proposals, 1, existing)
    assert existing == snapshot
    assert all(row.is_proposal and row.image_id == 1 for row in rows)
    assert [row.score for row in rows] == sorted((row.score for row in rows), reverse=True)
    for a, b in itertools.combinations(rows, 2):
        assert a.label != b.label or a.box.iou(b.box) < 0.5
    for row in rows:
        assert not any(row.label == e.label and row.box.iou(e.box) >= 0.5 for e in existing)
    key = lambda label, box, score: (label, box.xyxy, score)  # noqa: E731
    dropped = Counter(key(p.label, p.box, p.score) for p in proposals) - Counter(
        key(r.label, r.box, r.score) for r in rows
    )
    for label, box_xyxy, score in dropped:  # dropped only for a same-label overlap, existing or better-scoring
        box = Box.from_xyxy(box_xyxy)
        assert any(label == e.label and box.iou(e.box) >= 0.5 for e in existing) or any(
            label == r.label and box.iou(r.box) >= 0.5 and (r.score or 0) >= score for r in rows
        )


# ======================================================================================================================
# Colours

COMMON_LABELS = ["person", "car", "dog", "cat", "bicycle", "bus"]


def test_label_colours_are_the_same_in_every_process_and_distinct() -> None:
    code = (
        "import json, sys; from annotator.core.colors import color_for; "
        "print(json.dumps([color_for(a) for a in sys.argv[1:]]))"
    )
    labels = [*COMMON_LABELS, "traffic light", "Ünïcode 標籤"]
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code, *labels],
            capture_output=True,
            text=True,
            check=True,
            env={**child_env(), "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert json.loads(outputs[0]) == json.loads(outputs[1]) == [color_for(label) for label in labels]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", color_for(label)) for label in labels)
    assert color_for(" Dog ") == color_for("dog")
    colours = [tuple(int(color_for(label)[i : i + 2], 16) for i in (1, 3, 5)) for label in COMMON_LABELS]
    assert len(set(colours)) == len(colours)
    distance = min(float(np.linalg.norm(np.subtract(a, b))) for a, b in itertools.combinations(colours, 2))
    assert distance > 40


# ======================================================================================================================
# Project folder


def _touch_image(path: Path, size: tuple[int, int] = (8, 6), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 120, 200)).save(path, fmt)
    return path


def test_scan_folder_natural_order_and_skips(tmp_path: Path) -> None:
    for name in ["img10.png", "img2.png", "img1.JPG", "Img3.jpeg", "sub/img2.webp", "sub/img10.tif", "z.gif", "b.BMP"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")  # names only: scanning decodes nothing
    for name in [".hidden.png", ".git/img.png", "sub/._mac.jpg", "notes.txt", "img.png.json", "dir.png/x.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink(tmp_path / "img2.png", tmp_path / "link.png")  # a link to a real file is an image
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    os.symlink(tmp_path / "sub", tmp_path / "loop", target_is_directory=True)  # linked folders are not followed

    assert scan_folder(tmp_path) == [
        "b.BMP",
        "img1.JPG",
        "img2.png",
        "Img3.jpeg",
        "img10.png",
        "link.png",
        "sub/img2.webp",
        "sub/img10.tif",
        "z.gif",
    ]
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"} == IMAGE_SUFFIXES
    with pytest.raises(ProjectFolderError, match="does not exist"):
        scan_folder(tmp_path / "nope")
    with pytest.raises(ProjectFolderError, match="not a folder"):
        scan_folder(tmp_path / "notes.txt")


def test_scan_folder_lists_10k_files_in_natural_order(tmp_path: Path) -> None:
    for folder in range(10):
        (tmp_path / f"d{folder}").mkdir()
        for i in range(1000):
            (tmp_path / f"d{folder}" / f"img{i}.jpg").touch()
    paths = scan_folder(tmp_path)
    assert len(paths) == 10_000 and paths[:3] == ["d0/img0.jpg", "d0/img1.jpg", "d0/img2.jpg"]


def test_probe_image_reports_bad_files_and_sizes_good_ones(tmp_path: Path) -> None:
    good = _touch_image(tmp_path / "good.png", (30, 20))
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 10)).save(rotated, exif=exif.tobytes())
    text = tmp_path / "text.jpg"
    text.write_text("this is not a picture\n")
    whole = _jpeg_bytes((64, 48))
    header_cut = tmp_path / "header_cut.jpg"
    header_cut.write_bytes(whole[:40])
    data_cut = tmp_path / "data_cut.jpg"
    data_cut.write_bytes(whole[: len(whole) * 2 // 3])

    assert probe_image(good) == (30, 20)
    assert probe_image(rotated) == (10, 40)  # upright
    missing = tmp_path / "missing.png"
    assert (
        probe_image(missing)
        == f"cannot read image {str(missing)!r}: file not found; check the path and the working directory"
    )
    message = probe_image(text)
    assert isinstance(message, str) and "not an image, it contains text" in message
    assert isinstance(probe_image(header_cut), str) and "truncated" in str(probe_image(header_cut))
    assert probe_image(data_cut) == (64, 48)  # the header is whole: only decoding finds the cut
    cut = probe_image(data_cut, check_pixels=True)
    assert isinstance(cut, str) and "truncated" in cut
    assert probe_image(good, check_pixels=True) == (30, 20)
    with pytest.raises(ImageLoadError):
        load_image(data_cut)


def _jpeg_bytes(size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    path = Path(tempfile.mkstemp(suffix=".jpg")[1])
    try:
        image.save(path, quality=90)
        return path.read_bytes()
    finally:
        path.unlink()


def test_open_project_adds_new_images_and_keeps_vanished_ones(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _touch_image(folder / "a.png")
    _touch_image(folder / "b.png")
    store = open_project(folder)
    try:
        assert store.path == (tmp_path / "photos.minigpt.sqlite").resolve()
        assert store.setting(FOLDER_SETTING) == str(folder.resolve())
        b = image_id(store, "b.png")
        store.put_boxes([annotation(b, "cat", xyxy(0, 0, 4, 4))])
    finally:
        store.close()

    (folder / "b.png").unlink()
    _touch_image(folder / "c" / "img10.png")
    _touch_image(folder / "c" / "img9.png")
    store = open_project(folder)
    try:
        assert [row.path for row in store.images()] == ["a.png", "b.png", "c/img10.png", "c/img9.png"]
        assert [row.path for row in missing_images(store, folder)] == ["b.png"]
        assert store.boxes(b)[0].label == "cat"  # vanished, but the work on it is kept
        assert project_folder(store) == folder.resolve()
    finally:
        store.close()

    with pytest.raises(ProjectFolderError, match="does not exist"):
        open_project(tmp_path / "nope")


def test_a_project_reopens_from_its_store_alone_even_after_moving(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _touch_image(folder / "a.png")
    custom = tmp_path / "elsewhere" / "mine.minigpt.sqlite"
    open_project(folder, custom).close()
    _touch_image(folder / "new.png")
    store = reopen_project(custom)
    try:
        assert [row.path for row in store.images()] == ["a.png", "new.png"]
        assert store.path == custom
    finally:
        store.close()

    default = open_project(folder)
    default.close()
    moved = tmp_path / "moved"
    moved.mkdir()
    folder.rename(moved / "photos")
    default.path.rename(moved / "photos.minigpt.sqlite")
    store = reopen_project(moved / "photos.minigpt.sqlite")  # the recorded folder is gone: the one beside it is used
    try:
        assert project_folder(store) == (moved / "photos").resolve()
        assert store.setting(FOLDER_SETTING) == str((moved / "photos").resolve())
    finally:
        store.close()

    with pytest.raises(ProjectFolderError, match="no project store"):
        reopen_project(tmp_path / "gone.minigpt.sqlite")
    assert not (tmp_path / "gone.minigpt.sqlite").exists()

    (moved / "photos").rename(tmp_path / "lost")
    store = ProjectStore.open(moved / "photos.minigpt.sqlite")
    try:
        with pytest.raises(ProjectFolderError, match="does not exist any more"):
            project_folder(store)
    finally:
        store.close()


# ======================================================================================================================
# Display images


def test_exif_rotated_images_display_upright_like_load_image(tmp_path: Path) -> None:
    make_shapes(tmp_path, images=3, seed=5, exif_fraction=1.0)
    for path in sorted((tmp_path / "images").glob("*.jpg")):
        shown = load_display_image(path)
        reference = load_image(path)
        assert (shown.width, shown.height) == image_size(path) == (reference.width, reference.height)
        assert shown.scale == 1.0 and not shown.reduced and shown.image.mode == "RGB"
        assert np.array_equal(np.asarray(shown.image), np.asarray(reference.image))


def _quadrant_jpeg(path: Path, size: tuple[int, int], orientation: int) -> None:
    """An upright picture with a red top-left quadrant, stored rotated for ``orientation`` (6: 90° clockwise)."""
    width, height = size
    upright = Image.new("RGB", size, (30, 60, 200))
    ImageDraw.Draw(upright).rectangle((0, 0, width // 2, height // 2), fill=(230, 20, 20))
    stored = upright.transpose(Image.Transpose.ROTATE_90) if orientation == 6 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=90, exif=exif.tobytes())


def test_reduced_display_is_upright_and_scaled(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    _quadrant_jpeg(path, (1600, 1200), orientation=6)
    shown = load_display_image(path, max_pixels=120_000)
    assert (shown.width, shown.height) == image_size(path) == (1600, 1200)
    assert shown.image.width * shown.image.height <= 120_000 and shown.reduced
    assert shown.scale == pytest.approx(1600 / shown.image.width)
    assert shown.image.height * shown.scale == pytest.approx(1200, rel=0.01)
    pixels = np.asarray(shown.image).astype(int)
    h, w = pixels.shape[:2]
    assert pixels[h // 4, w // 4].tolist() == pytest.approx([230, 20, 20], abs=25)  # red stays top-left
    assert pixels[3 * h // 4, 3 * w // 4].tolist() == pytest.approx([30, 60, 200], abs=25)

    png = tmp_path / "big.png"
    Image.new("RGBA", (900, 600), (255, 0, 0, 0)).save(png)  # transparent: white, as load_image makes it
    shown = load_display_image(png, max_pixels=60_000)
    assert shown.image.mode == "RGB" and shown.image.width * shown.image.height <= 60_000
    assert np.asarray(shown.image).min() == 255


def test_display_errors_are_load_image_errors(tmp_path: Path) -> None:
    text = tmp_path / "text.jpg"
    text.write_text("<html><body>login required</body></html>")
    cut = tmp_path / "cut.jpg"
    whole = _jpeg_bytes((640, 480))
    cut.write_bytes(whole[: len(whole) // 2])
    for path in (text, cut, tmp_path / "missing.jpg"):
        with pytest.raises(ImageLoadError) as from_load:
            load_image(path)
        for max_pixels in (16_000_000, 10_000):  # full decode, and a reduced draft decode
            with pytest.raises(ImageLoadError) as from_display:
                load_display_image(path, max_pixels=max_pixels)
            assert str(from_display.value) == str(from_load.value)


BIG = (12_000, 9_000)

# The child's peak RSS. ru_maxrss would be wrong here: Linux carries the forking process's peak (pytest's, with
# torch loaded) into a child's ru_maxrss across exec, hiding any smaller increase. VmHWM is the peak of this process's
# own memory only, the figure ru_maxrss gives for a process started fresh.
_MEASURE = """
import json, resource, sys
from annotator.core.display import load_display_image

def peak_kib():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

before = peak_kib()
shown = load_display_image(sys.argv[1])
after = peak_kib()
corner = shown.image.getpixel((shown.image.width - 5, 5))
print(json.dumps({"kib": after - before, "size": [shown.width, shown.height], "shown": list(shown.image.size),
                  "scale": shown.scale, "corner": list(corner)}))
"""


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12000×9000 camera-sized JPEG stored rotated (orientation 6), written once: upright it is 9000×12000 with a
    red top-left quadrant. Made in a subprocess so this process never holds its 432 MB of pixels."""
    path = tmp_path_factory.mktemp("big") / "camera.jpg"
    code = (
        "import sys; from PIL import Image, ImageDraw\n"
        "small = Image.new('RGB', (900, 1200), (30, 60, 200))\n"
        "ImageDraw.Draw(small).rectangle((0, 0, 450, 600), fill=(230, 20, 20))\n"
        "ImageDraw.Draw(small).ellipse((500, 700, 850, 1100), fill=(20, 200, 60))\n"
        "stored = small.transpose(Image.Transpose.ROTATE_90).resize((12000, 9000), Image.Resampling.NEAREST)\n"
        "exif = Image.Exif(); exif[0x0112] = 6\n"
        "stored.save(sys.argv[1], quality=85, exif=exif.tobytes())\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=HANG_S)
    return path


def test_a_12000x9000_jpeg_loads_within_bounded_memory(big_jpeg: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert Image.open(big_jpeg).size == BIG  # stored sideways
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(big_jpeg)], capture_output=True, text=True, timeout=HANG_S, env=child_env()
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    peak_mb = result["kib"] / 1024
    full_mib = BIG[0] * BIG[1] * 4 / 2**20  # Pillow keeps RGB at 4 bytes a pixel
    print(
        f"\n12000x9000 JPEG shown at {result['shown']}: peak RSS +{peak_mb:.1f} MiB (full decode: {full_mib:.0f} MiB)"
    )
    assert result["size"] == [9000, 12000] == list(image_size(big_jpeg))  # upright
    assert result["shown"][0] * result["shown"][1] <= 16_000_000
    assert result["scale"] == pytest.approx(9000 / result["shown"][0])
    assert result["corner"] == pytest.approx([30, 60, 200], abs=25)  # top-right is blue: the rotation was applied
    assert peak_mb < 150, f"loading for display raised the peak RSS by {peak_mb:.0f} MiB"


def test_display_image_is_frozen(tmp_path: Path) -> None:
    shown = load_display_image(_touch_image(tmp_path / "a.png"))
    assert isinstance(shown, DisplayImage)
    with pytest.raises(AttributeError):
        shown.scale = 2.0  # type: ignore[misc]


# ======================================================================================================================
# COCO export and import


@pytest.fixture
def shapes(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of synthetic scenes (some JPEGs EXIF-rotated) and its COCO file: (folder, annotations.json)."""
    folder = tmp_path / "shapes"
    coco = make_shapes(folder, images=6, seed=0, exif_fraction=0.5)
    return folder, coco


def _project_from(folder: Path, coco: Path, store_name: str = "a") -> ProjectStore:
    store = open_project(folder, folder.parent / f"{store_name}.minigpt.sqlite")
    report = import_coco(store, folder, coco)
    assert report.unmatched == [] and report.size_mismatches == []
    return store


def _boxes_by_path(store: ProjectStore) -> dict[str, list[tuple[str, tuple[float, ...], str | None]]]:
    paths = {row.id: row.path for row in store.images()}
    return {
        paths[image]: sorted((r.label, tuple(round(v, 6) for v in r.box.xyxy), r.phrase) for r in rows)
        for image, rows in store.all_boxes(BoxState.annotation).items()
    }


def test_import_then_export_reproduces_the_dataset_in_upright_pixels(shapes: tuple[Path, Path]) -> None:
    folder, coco_path = shapes
    truth = read_coco(coco_path)
    store = _project_from(folder, coco_path)
    try:
        assert [label.name for label in store.labels()] == [
            c.name for c in sorted(truth.categories, key=lambda c: c.id)
        ]
        out = folder.parent / "export.json"
        report = export_coco(store, folder, out)
    finally:
        store.close()
    assert (report.images, report.skipped, report.warnings) == (6, [], [])
    assert report.annotations == sum(len(image.annotations) for image in truth.images)

    coco = load_with_pycocotools(out)
    assert sorted(coco.getImgIds()) == list(range(1, 7))
    assert sorted(coco.getAnnIds()) == list(range(1, report.annotations + 1))
    assert [c["id"] for c in coco.dataset["categories"]] == list(range(1, len(truth.categories) + 1))
    rotated = 0
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    expected = {image.path.relative_to(folder).as_posix(): image for image in truth.images}
    for entry in coco.dataset["images"]:
        file = folder / entry["file_name"]
        assert (
            (entry["width"], entry["height"])
            == image_size(file)
            == (expected[entry["file_name"]].width, expected[entry["file_name"]].height)
        )
        rotated += Image.open(file).size != image_size(file)
        got = sorted((names[a["category_id"]], tuple(a["bbox"])) for a in coco.imgToAnns[entry["id"]])
        want = sorted((a.label, a.box.xywh) for a in expected[entry["file_name"]].annotations)
        assert [label for label, _ in got] == [label for label, _ in want]
        assert np.allclose([bbox for _, bbox in got], [bbox for _, bbox in want])
        assert all(a["iscrowd"] == 0 and a["area"] > 0 and a["segmentation"] == [] for a in coco.imgToAnns[entry["id"]])
    assert rotated >= 2  # EXIF-rotated files were exported with their upright size


def test_export_filters_reviewed_and_never_exports_proposals(shapes: tuple[Path, Path]) -> None:
    folder, coco_path = shapes
    store = _project_from(folder, coco_path)
    try:
        images = store.images()
        first, second = images[0].id, images[1].id
        store.put_boxes([proposal(first, "circle", xyxy(1, 1, 20, 20)), proposal(second, "square", xyxy(1, 1, 9, 9))])
        store.set_reviewed(first, True)
        store.set_reviewed(images[2].id, True)
        store.delete_boxes(row.id for row in store.boxes(images[2].id) if row.id is not None)  # reviewed, empty
        out = folder.parent / "reviewed.json"
        reviewed = export_coco(store, folder, out, reviewed_only=True)
        annotated = [row for row in store.boxes(first) if not row.is_proposal]
        assert (reviewed.images, reviewed.annotations) == (2, len(annotated))
        data = json.loads(out.read_text())
        assert [image["file_name"] for image in data["images"]] == [images[0].path, images[2].path]
        assert all("score" not in a for a in data["annotations"])  # no model output slipped in

        no_empty = export_coco(store, folder, out, reviewed_only=True, include_unannotated=False)
        assert no_empty.images == 1
        everything = export_coco(store, folder, out)
        assert everything.images == 6
        assert everything.annotations == sum(1 for rows in store.all_boxes(BoxState.annotation).values() for _ in rows)
    finally:
        store.close()


def test_category_ids_stay_stable_across_exports(shapes: tuple[Path, Path]) -> None:
    folder, coco_path = shapes
    store = _project_from(folder, coco_path)
    try:
        out1, out2 = folder.parent / "one.json", folder.parent / "two.json"
        export_coco(store, folder, out1)
        first = store.images()[0].id
        store.put_boxes([annotation(first, "zebra", xyxy(2, 2, 30, 30))])
        store.ensure_label("unused label")
        for row in store.boxes(first):  # one category loses all its boxes: its id must not move
            if row.label == store.labels()[0].name and row.id is not None:
                store.delete_boxes([row.id])
        export_coco(store, folder, out2)
    finally:
        store.close()
    before = {c["name"]: c["id"] for c in json.loads(out1.read_text())["categories"]}
    after = {c["name"]: c["id"] for c in json.loads(out2.read_text())["categories"]}
    assert all(after[name] == cid for name, cid in before.items())
    assert after["zebra"] == len(before) + 1 and after["unused label"] == len(before) + 2


def test_export_rereads_sizes_clips_boxes_and_skips_unreadable_images(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _touch_image(folder / "a.png", (100, 50))
    _touch_image(folder / "b.png", (40, 40))
    _touch_image(folder / "c.png", (40, 40))
    store = open_project(folder)
    try:
        a, b = image_id(store, "a.png"), image_id(store, "b.png")
        store.set_image_size(a, 50, 100)  # a stale cached size must not be exported
        store.put_boxes(
            [
                annotation(a, "cat", xyxy(-10, -5, 60, 40)),  # clipped to (0, 0, 60, 40)
                annotation(a, "cat", xyxy(99.5, 10, 130, 20)),  # 0.5 px wide inside the image: skipped
                annotation(a, "dog", xyxy(200, 200, 300, 300)),  # entirely outside: skipped
                annotation(b, "dog", xyxy(1, 1, 10, 10)),
            ]
        )
        (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)  # now corrupt
        store.set_reviewed(image_id(store, "c.png"), True)  # a confirmed negative whose file is gone
        (folder / "c.png").unlink()
        out = tmp_path / "out.json"
        report = export_coco(store, folder, out)
    finally:
        store.close()
    assert report.images == 1 and report.annotations == 1
    reasons = dict(Counter(path for path, _ in report.skipped))
    assert reasons == {"a.png": 2, "b.png": 1, "c.png": 1}
    assert any("under 1 px" in why for path, why in report.skipped if path == "a.png")
    assert any("file not found" in why for path, why in report.skipped if path == "c.png")
    assert report.warnings and report.warnings[0][0] == "a.png" and "100x50" in report.warnings[0][1]
    data = json.loads(out.read_text())
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (100, 50)
    assert data["annotations"][0]["bbox"] == [0, 0, 60, 40]
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]  # every label, used or not


def test_a_failed_export_never_replaces_a_good_file(shapes: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, coco_path = shapes
    store = _project_from(folder, coco_path)
    out = folder.parent / "good.json"
    try:
        export_coco(store, folder, out)
        good = sha(out)
        store.put_boxes([annotation(store.images()[0].id, "circle", xyxy(3, 3, 9, 9))])

        def lossy(path: Path) -> Any:  # a reader that loses an annotation: the counts no longer match
            coco = load_with_pycocotools(path)
            coco.dataset["annotations"].pop()
            return coco

        monkeypatch.setattr(exchange, "load_with_pycocotools", lossy)
        with pytest.raises(ExchangeError, match=r"failed validation, so .*good.json was left as it was: it holds"):
            export_coco(store, folder, out)
        assert sha(out) == good

        def broken(path: Path) -> Any:
            raise AssertionError("annotation file format not supported")

        monkeypatch.setattr(exchange, "load_with_pycocotools", broken)
        with pytest.raises(ExchangeError, match="pycocotools cannot read it"):
            export_coco(store, folder, out)
        assert sha(out) == good
        assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []  # no temp files left

        with pytest.raises(ExchangeError, match="does not exist"):
            export_coco(store, folder, folder.parent / "no" / "such.json")
        with pytest.raises(ExchangeError, match="named like an image"):
            export_coco(store, folder, folder / "images" / "000001.png")
        assert isinstance(ExchangeError("x"), MiniGPTError)
    finally:
        store.close()


def test_import_into_a_fresh_store_reproduces_the_boxes_and_twice_adds_nothing(shapes: tuple[Path, Path]) -> None:
    folder, coco_path = shapes
    source = _project_from(folder, coco_path, "source")
    exported = folder.parent / "exported.json"
    try:
        first = source.images()[0].id
        source.put_boxes([annotation(first, "hexagon", xyxy(5, 5, 25, 25), score=0.7, phrase="the small hexagon")])
        export_coco(source, folder, exported)
        expected = _boxes_by_path(source)
        expected_labels = [label.name for label in source.labels()]
    finally:
        source.close()

    fresh = open_project(folder, folder.parent / "fresh.minigpt.sqlite")
    try:
        report = import_coco(fresh, folder, exported)
        assert (report.images_matched, report.duplicates_skipped, report.unmatched) == (6, 0, [])
        assert report.annotations_added == sum(len(rows) for rows in expected.values())
        assert _boxes_by_path(fresh) == expected
        assert [label.name for label in fresh.labels()] == expected_labels
        hexagon = next(row for rows in fresh.all_boxes().values() for row in rows if row.label == "hexagon")
        assert (hexagon.score, hexagon.origin, hexagon.state) == (0.7, Origin.manual, BoxState.annotation)
        assert all(image.width is not None for image in fresh.images())  # sizes learnt on the way

        again = import_coco(fresh, folder, exported)
        assert (again.annotations_added, again.duplicates_skipped) == (0, report.annotations_added)
        assert _boxes_by_path(fresh) == expected
    finally:
        fresh.close()


def _provenance(row: BoxRow) -> tuple[object, ...]:
    return (
        row.label,
        tuple(round(v, 6) for v in row.box.xyxy),
        row.origin,
        row.score,
        row.phrase,
        row.model_version,
        row.task,
        row.prompt,
        row.changed_at,
        row.original,
    )


def test_export_writes_where_each_box_came_from_and_import_reads_it_back(shapes: tuple[Path, Path]) -> None:
    """Manual, accepted and edited boxes leave with their provenance; the edited one without the model's score as its
    own but with the proposal beside it; a fresh project importing the file holds the same boxes, provenance and all.
    """
    folder, _ = shapes
    source = open_project(folder, folder.parent / "source.minigpt.sqlite")
    exported, again = folder.parent / "exported.json", folder.parent / "again.json"
    try:
        first = source.images()[0].id
        manual = replace(annotation(first, "hexagon", xyxy(5, 5, 25, 25)), changed_at=EDIT_TIME)
        kept, moved = source.put_boxes(
            [proposal(first, "circle", xyxy(30, 30, 60, 60), 0.9), proposal(first, "square", xyxy(2, 40, 20, 70), 0.4)]
        )
        source.put_boxes([manual])
        edits.accept([kept]).redo(source)
        edits.replace_boxes("Relabel", [moved], [moved.relabelled("triangle", EDIT_TIME)]).redo(source)
        source.set_reviewed(first, True)
        report = export_coco(source, folder, exported)
        expected = sorted(_provenance(row) for row in source.boxes(first))
    finally:
        source.close()
    assert report.annotations == 3

    by_origin = {a["attributes"]["origin"]: a for a in json.loads(exported.read_text())["annotations"]}
    assert set(by_origin) == {"manual", "accepted", "edited"}
    assert by_origin["accepted"]["score"] == 0.9
    assert by_origin["accepted"]["attributes"]["model_version"] == "tiny-shapes"
    edited = by_origin["edited"]
    assert "score" not in edited and "phrase" not in edited
    assert {k: v for k, v in edited["attributes"].items() if k.startswith("original_")} == {
        "original_label": "square",
        "original_score": 0.4,
        "original_x": 2.0,
        "original_y": 40.0,
        "original_width": 18.0,
        "original_height": 30.0,
    }
    assert edited["attributes"]["changed_at"] == EDIT_TIME.isoformat()

    fresh = open_project(folder, folder.parent / "fresh.minigpt.sqlite")
    try:
        import_coco(fresh, folder, exported)
        image = fresh.image_id(fresh.images()[0].path)
        assert image is not None
        assert sorted(_provenance(row) for row in fresh.boxes(image)) == expected
        fresh.set_reviewed(image, True)
        export_coco(fresh, folder, again)
    finally:
        fresh.close()
    assert json.loads(again.read_text())["annotations"] == json.loads(exported.read_text())["annotations"]


def test_import_matches_by_file_name_and_reports_what_it_cannot_place(shapes: tuple[Path, Path]) -> None:
    folder, coco_path = shapes
    data = json.loads(coco_path.read_text())
    rotated = next(
        image
        for image in data["images"]
        if Image.open(folder / image["file_name"]).size != image_size(folder / image["file_name"])
    )
    renamed = next(image for image in data["images"] if image is not rotated)
    rotated["width"], rotated["height"] = rotated["height"], rotated["width"]  # the stored size: wrong frame
    renamed["file_name"] = "somewhere/else/" + Path(renamed["file_name"]).name  # a unique name: still matched
    data["images"].append({"id": 99, "file_name": "images/not_here.png", "width": 10, "height": 10})
    data["annotations"].append(
        {"id": 999, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0}
    )
    data["annotations"].append(
        {"id": 998, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 0, "iscrowd": 1}
    )
    data["categories"] = list(reversed(data["categories"]))  # labels are still made in id order
    edited = folder.parent / "edited.json"
    edited.write_text(json.dumps(data))

    store = open_project(folder, folder.parent / "match.minigpt.sqlite")
    try:
        report = import_coco(store, folder, edited)
        assert report.unmatched == ["images/not_here.png"]
        # not boxes: the crowd region, and a box of the rotated image that lies outside its stated (unrotated)
        # frame, which reading clips every box to (issue 13, item 20)
        assert report.images_matched == 6 and report.not_boxes == 2
        assert [path for path, _ in report.size_mismatches] == [rotated["file_name"]]
        assert "upright" in report.size_mismatches[0][1]
        assert store.boxes(image_id(store, rotated["file_name"])) == []
        assert store.boxes(image_id(store, "images/" + Path(renamed["file_name"]).name))
        assert [label.name for label in store.labels()] == [
            c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])
        ]
    finally:
        store.close()


def test_images_nobody_worked_on_are_not_exported_as_negatives(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for name in ("boxed.png", "empty-reviewed.png", "untouched.png"):
        _touch_image(folder / name, (40, 30))
    store = open_project(folder)
    try:
        store.put_boxes([annotation(image_id(store, "boxed.png"), "cat", xyxy(1, 1, 20, 20))])
        store.set_reviewed(image_id(store, "empty-reviewed.png"), True)  # looked at: truly nothing there
        report = export_coco(store, folder, tmp_path / "all.json")
    finally:
        store.close()
    names = [img["file_name"] for img in json.loads((tmp_path / "all.json").read_text())["images"]]
    assert names == ["boxed.png", "empty-reviewed.png"]
    assert report.unlabelled == 1 and "not reviewed left out" in str(report)


def test_review_order_puts_the_weakest_proposal_first() -> None:
    from annotator.core.records import ImageRow
    from annotator.core.review_order import next_riskiest, riskiest_first

    rows = [
        ImageRow(id=1, path="a.png", width=9, height=9, proposals=2, lowest_score=0.7),
        ImageRow(id=2, path="b.png", width=9, height=9),  # nothing proposed
        ImageRow(id=3, path="c.png", width=9, height=9, proposals=1, lowest_score=0.2, reviewed=True),
        ImageRow(id=4, path="d.png", width=9, height=9, proposals=1, lowest_score=0.4),
        ImageRow(id=5, path="e.png", width=9, height=9, proposals=1, lowest_score=0.4),  # a tie keeps folder order
    ]
    assert [r.id for r in riskiest_first(rows)] == [3, 4, 5, 1, 2]
    assert next_riskiest(rows, current=None) == 4  # 3 is reviewed already
    assert next_riskiest(rows, current=4) == 5
    assert next_riskiest([rows[1], rows[2]], current=None) is None
