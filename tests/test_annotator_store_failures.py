"""The desktop's project store when its file is damaged, edited by hand or cannot be written (issue 13 item 19).

Every failure is a StoreError (the project's error, which the window shows) with its cause and fix, found on
opening where it can be: never a raw sqlite3 error or a validation error from a later read.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotator.core.records import BoxRow, BoxState
from annotator.core.store import ProjectStore, StoreError
from model.annotations import Box, Origin

PAGE = 4096  # SQLite's default page size, which the store keeps


def build_store(path: Path, boxes: int = 1500) -> None:
    """A store of 30 images, 3 labels and ``boxes`` annotations: some 30 pages, most of them interior."""
    store = ProjectStore.open(path)
    try:
        store.add_images([f"img{i:03d}.png" for i in range(30)])
        ids = [row.id for row in store.images()]
        rng = random.Random(0)
        rows = []
        for i in range(boxes):
            x, y = rng.uniform(0, 500), rng.uniform(0, 500)
            box = Box(x0=x, y0=y, x1=x + rng.uniform(1, 50), y1=y + rng.uniform(1, 50))
            label = ("cat", "dog", "bird")[i % 3]
            rows.append(BoxRow(ids[i % 30], label, box, BoxState.annotation, origin=Origin.manual, phrase="a thing"))
        store.put_boxes(rows)
        store.set_setting("query", "cat, dog")
    finally:
        store.close()


def exercise(store: ProjectStore) -> None:
    """What the app does with an open store: read everything, then change something and take it back."""
    images = store.images()
    store.labels()
    store.all_boxes()
    store.setting("query")
    for row in images:
        store.image(row.id)
        store.boxes(row.id)
    if images:
        (saved,) = store.put_boxes([BoxRow(images[0].id, "cat", Box(x0=1, y0=1, x1=9, y1=9), BoxState.annotation)])
        store.delete_boxes([saved.id])
        store.set_reviewed(images[0].id, True)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ======================================================================================================================
# Damaged files


def test_a_store_with_scrambled_interior_pages_is_refused_on_opening(tmp_path: Path) -> None:
    """Before: it opened, and the first read of those pages raised a raw sqlite3.DatabaseError."""
    path = tmp_path / "scrambled.minigpt.sqlite"
    build_store(path)
    data = bytearray(path.read_bytes())
    assert len(data) // PAGE >= 20
    rng = random.Random(1)
    for page in (8, 12):  # interior pages: the header (page 1) and the schema are intact
        data[page * PAGE : (page + 1) * PAGE] = bytes(rng.randrange(256) for _ in range(PAGE))
    path.write_bytes(bytes(data))
    digest = sha(path)
    with pytest.raises(StoreError, match=r"is damaged \(.+\); restore it from a backup, or save what is readable"):
        ProjectStore.open(path)
    assert sha(path) == digest  # refused before anything was written


@functools.cache
def good_store() -> bytes:
    """The bytes of a healthy store (built once), for the fuzzer to damage."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "good.minigpt.sqlite"
        build_store(path, boxes=600)
        return path.read_bytes()


@settings(max_examples=150, derandomize=True, deadline=None)
@given(data=st.data())
def test_corrupting_the_store_anywhere_gives_the_projects_error(data: st.DataObject) -> None:
    """Bytes overwritten at random places (a bad disk, a half-synced copy): opening and using the store either
    works or fails with a StoreError; never a raw sqlite3, validation or other error."""
    damaged = bytearray(good_store())
    for _ in range(data.draw(st.integers(1, 4), label="patches")):
        start = data.draw(st.integers(0, len(damaged) - 1), label="offset")
        length = data.draw(st.integers(1, 64), label="length")
        noise = data.draw(st.binary(min_size=length, max_size=length), label="bytes")
        damaged[start : start + length] = noise[: len(damaged) - start]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.minigpt.sqlite"
        path.write_bytes(bytes(damaged))
        try:
            store = ProjectStore.open(path)
        except StoreError as err:
            assert "\n" not in str(err)
            return
        try:
            exercise(store)
        except StoreError as err:
            assert "\n" not in str(err)
        finally:
            store.close()


# ======================================================================================================================
# Rows edited by hand


HAND_EDITS = {  # what was done in the sqlite3 shell, the row the message must name, and what it must say
    "inverted box": ("UPDATE boxes SET x0 = x1 + 5 WHERE id = 7", "row id = 7 of table boxes", "x0 >= x1"),
    "corner as text": ("UPDATE boxes SET y1 = 'bottom' WHERE id = 7", "row id = 7 of table boxes", "finite numbers"),
    "infinite corner": ("UPDATE boxes SET x1 = 9e999 WHERE id = 7", "row id = 7 of table boxes", "finite numbers"),
    "unknown origin": ("UPDATE boxes SET origin = 'guessed' WHERE id = 7", "row id = 7 of table boxes", "an origin"),
    "unknown state": ("UPDATE boxes SET state = 'maybe' WHERE id = 7", "row id = 7 of table boxes", "a state other"),
    "score as text": ("UPDATE boxes SET score = 'high' WHERE id = 7", "row id = 7 of table boxes", "score that is not"),
    "label as bytes": ("UPDATE boxes SET label = X'00ff' WHERE id = 7", "row id = 7 of table boxes", "label that is"),
    "time not a time": (
        "UPDATE boxes SET changed_at = 'yesterday' WHERE id = 7",
        "row id = 7 of table boxes",
        "changed_at that is not",
    ),
    "half an original box": (
        "UPDATE boxes SET original_x0 = 1 WHERE id = 7",
        "row id = 7 of table boxes",
        "original corners",
    ),
    "many inverted": ("UPDATE boxes SET y0 = y1 WHERE id > 50", "row id = 51 of table boxes", "(9 more row(s) like"),
    "width as text": ("UPDATE images SET width = 'wide' WHERE id = 3", "row id = 3 of table images", "positive whole"),
    "orphan boxes": ("DELETE FROM images WHERE id = 2", "2 row(s) of table boxes", "refer to rows of images that are"),
    "colour as bytes": (
        "UPDATE labels SET color = X'00' WHERE name = 'dog'",
        "row name = 'dog' of table labels",
        "colour",
    ),
    "setting as bytes": (
        "UPDATE settings SET value = X'01' WHERE key = 'query'",
        "row key = 'query' of table",
        "value",
    ),
}


@pytest.mark.parametrize("edit", sorted(HAND_EDITS))
def test_a_row_edited_by_hand_is_named_on_opening_with_the_command_that_fixes_it(tmp_path: Path, edit: str) -> None:
    """Before: the store opened, and reading the row raised a raw pydantic ValidationError (or ValueError) later."""
    sql, named, problem = HAND_EDITS[edit]
    path = tmp_path / "edited.minigpt.sqlite"
    build_store(path, boxes=60)
    with sqlite3.connect(path) as db:  # as in the sqlite3 shell: foreign keys and CHECK constraints not enforced
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute(sql)
    db.close()

    with pytest.raises(StoreError) as raised:
        ProjectStore.open(path)
    message = str(raised.value)
    assert named in message and problem in message, message
    assert "\n" not in message

    # The fix the message gives works, and the rest of the project is kept.
    fix = message.split('"')[1]
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(fix)
    db.close()
    store = ProjectStore.open(path)
    try:
        exercise(store)
        assert len(store.images()) >= 29 and len(store.labels()) >= 2
    finally:
        store.close()


def test_a_row_edited_by_another_program_while_open_is_named_when_read(tmp_path: Path) -> None:
    path = tmp_path / "open.minigpt.sqlite"
    build_store(path, boxes=60)
    store = ProjectStore.open(path)
    try:
        image = store.images()[0].id
        other = sqlite3.connect(path)
        with other:
            other.execute("UPDATE boxes SET x0 = x1 + 1 WHERE image_id = ?", (image,))
        other.close()
        unreadable = r"row id = \d+ of table boxes cannot be read \(.*x0 < x1.*\); delete it \(sqlite3 "
        with pytest.raises(StoreError, match=unreadable):
            store.boxes(image)
    finally:
        store.close()


# ======================================================================================================================
# Stores that cannot be written


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` (a file or a folder) read-only for this process: file permissions for a normal user; for root,
    whom permissions do not stop, the immutable attribute (chattr +i), which stops root too."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    assert chattr is not None, "running as root: chattr (e2fsprogs) is needed to make a file read-only for root"
    subprocess.run([chattr, "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_read_only_store_file_is_refused_with_that_cause(tmp_path: Path) -> None:
    """Before: it opened, and the person's first change failed. Refused: the store is the autosave."""
    path = tmp_path / "locked.minigpt.sqlite"
    build_store(path, boxes=30)
    digest = sha(path)
    with read_only(path):
        with pytest.raises(StoreError, match=r"the file is read-only; make it writable \(e\.g\. chmod u\+w .+\) or"):
            ProjectStore.open(path)
        assert sha(path) == digest


def test_a_store_in_a_read_only_folder_is_refused_with_that_cause(tmp_path: Path) -> None:
    """Before: "is not a project store (unable to open database file)", which sends the person the wrong way."""
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "project.minigpt.sqlite"
    build_store(path, boxes=30)
    with read_only(folder), pytest.raises(StoreError) as raised:
        ProjectStore.open(path)
    message = str(raised.value)
    assert "not a project store" not in message
    assert f"the folder {folder} is read-only, and SQLite keeps its journal" in message, message


def test_another_programs_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """Before: it was switched to WAL (its header rewritten), then "cannot open ...: table images already exists;
    choose a writable place" sent the person to look for a permissions problem."""
    path = tmp_path / "photos.minigpt.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE images (file TEXT, taken TEXT)")
        db.execute("INSERT INTO images VALUES ('a.jpg', '2024-05-01')")
    db.close()
    digest = sha(path)
    with pytest.raises(StoreError, match=r"is not a project store \(it is another program's SQLite database, with"):
        ProjectStore.open(path)
    assert sha(path) == digest
