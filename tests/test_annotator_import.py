"""Importing COCO into the desktop's project at scale (issue 13 item 10): the duplicate search is linear, and it
finds exactly the duplicates that comparing every pair finds.

Linearity is shown by counting the overlaps computed (``Box.iou`` calls), never by timing: timing is in
bench/coco_reimport.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from annotator.core.exchange import (
    IMPORT_DUPLICATE_IOU,
    ImportCancelled,
    apply_import,
    import_coco,
    match_import,
    read_import,
)
from annotator.core.folder import open_project
from annotator.core.overlaps import OverlapIndex
from annotator.core.records import BoxState
from model.annotations import Box

WIDTH, HEIGHT = 2000, 1500


def crowded_folder(root: Path, boxes: int, *, seed: int = 0) -> tuple[Path, Path]:
    """One image and a COCO file with ``boxes`` random boxes on it, in three categories: (folder, coco)."""
    folder = root / "images"
    folder.mkdir(parents=True)
    Image.new("RGB", (WIDTH, HEIGHT), "white").save(folder / "crowded.png")
    rng = random.Random(seed)
    annotations = []
    for i in range(boxes):
        w, h = rng.uniform(4, 120), rng.uniform(4, 120)
        x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
        annotations.append({"id": i + 1, "image_id": 1, "category_id": 1 + i % 3, "bbox": [x, y, w, h]})
    coco = root / "crowded.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "crowded.png", "width": WIDTH, "height": HEIGHT}],
                "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "nucleus"}, {"id": 3, "name": "debris"}],
                "annotations": annotations,
            }
        )
    )
    return folder, coco


@pytest.fixture
def count_overlaps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts every IoU computed (whatever the matcher), in ``counter[0]``."""
    counter = [0]
    plain = Box.iou

    def counted(self: Box, other: Box) -> float:
        counter[0] += 1
        return plain(self, other)

    monkeypatch.setattr(Box, "iou", counted)
    yield counter


def reimport_work(root: Path, boxes: int, counter: list[int]) -> int:
    """Import a file of ``boxes`` boxes on one image twice; the overlaps the second import computed."""
    folder, coco = crowded_folder(root, boxes)
    store = open_project(folder, root / "project.minigpt.sqlite")
    try:
        first = import_coco(store, folder, coco)
        assert (first.annotations_added, first.duplicates_skipped) == (boxes, 0)
        counter[0] = 0
        second = import_coco(store, folder, coco)
        assert (second.annotations_added, second.duplicates_skipped) == (0, boxes)  # twice adds nothing
        assert sum(len(rows) for rows in store.all_boxes(BoxState.annotation).values()) == boxes
        return counter[0]
    finally:
        store.close()


def test_reimporting_many_boxes_on_one_image_is_linear(tmp_path: Path, count_overlaps: list[int]) -> None:
    """Before: every box of the file was compared with every annotation left (n²/6 overlaps: 436 s for 10k)."""
    small = reimport_work(tmp_path / "small", 1000, count_overlaps)
    large = reimport_work(tmp_path / "large", 2000, count_overlaps)
    assert large <= 2.5 * small  # quadratic work would quadruple
    assert large <= 20 * 2000  # a handful of neighbours per box, not the whole image


def test_reading_an_import_reports_progress_and_stops_when_asked(tmp_path: Path) -> None:
    folder, coco = crowded_folder(tmp_path, 10)
    store = open_project(folder, tmp_path / "project.minigpt.sqlite")
    try:
        seen: list[tuple[int, int]] = []
        plan = read_import(store.images(), folder, coco, progress=lambda done, total: seen.append((done, total)))
        assert seen == [(1, 1)] and len(plan.images[0].annotations) == 10
        assert store.all_boxes() == {}  # reading writes nothing
        with pytest.raises(ImportCancelled, match="nothing was changed"):
            read_import(store.images(), folder, coco, should_stop=lambda: True)
    finally:
        store.close()


def test_boxes_matched_in_a_worker_are_matched_again_when_the_store_changed_meanwhile(
    tmp_path: Path, count_overlaps: list[int]
) -> None:
    """The desktop matches in a worker against a copy; a person's edit in between must not let a duplicate in."""
    folder, coco = crowded_folder(tmp_path, 20)
    store = open_project(folder, tmp_path / "project.minigpt.sqlite")
    try:
        plan = read_import(store.images(), folder, coco)
        (image_id,) = plan.image_ids
        matched = match_import(plan, store.annotation_corners(plan.image_ids), store.generation)
        assert [image.new for image in matched.images] == [plan.images[0].annotations]  # nothing there yet

        # Unchanged store: the worker's answer is written as it is, no overlap computed on the writing thread.
        count_overlaps[0] = 0
        first = apply_import(store, matched)
        assert (first.annotations_added, first.duplicates_skipped, count_overlaps[0]) == (20, 0, 0)
        assert first.image_ids == {image_id}

        # Matched against 20 boxes; meanwhile the person deletes one of them: written again, it is not a duplicate.
        again = match_import(plan, store.annotation_corners(plan.image_ids), store.generation)
        assert [image.new for image in again.images] == [()]
        removed = store.boxes(image_id)[0]
        store.delete_boxes([removed.id])
        second = apply_import(store, again)
        assert (second.annotations_added, second.duplicates_skipped) == (1, 19)
        assert sorted(row.box.xyxy for row in store.boxes(image_id)) == sorted(
            annotation.box.xyxy for annotation in plan.images[0].annotations
        )
    finally:
        store.close()


# ----------------------------------------------------------------------------------------------------------------------
# The index finds what comparing every pair finds


def brute_force(existing: list[tuple[str, Box]], incoming: list[tuple[str, Box]]) -> list[int | None]:
    """The import's rule by comparing every pair (the old code): each incoming box takes the unused existing box
    of its label it overlaps most with IoU >= 0.9, ties to the later one; the index taken, or None."""
    unused = list(range(len(existing)))
    taken: list[int | None] = []
    for label, box in incoming:
        same = [
            (box.iou(existing[i][1]), i)
            for i in unused
            if existing[i][0] == label and box.iou(existing[i][1]) >= IMPORT_DUPLICATE_IOU
        ]
        if same:
            best = max(same)[1]
            unused.remove(best)
            taken.append(best)
        else:
            taken.append(None)
    return taken


coordinate = st.floats(min_value=-50, max_value=50, allow_nan=False).map(lambda v: round(v * 4) / 4)
size = st.floats(min_value=0.01, max_value=60, allow_nan=False)


@st.composite
def boxes(draw: st.DrawFn) -> Box:
    x, y, w, h = draw(coordinate), draw(coordinate), draw(size), draw(size)
    return Box.from_xywh((x, y, w, h))


@st.composite
def near(draw: st.DrawFn, box: Box) -> Box:
    """A box like ``box``: the same, or moved and resized by a few percent (around the 0.9 threshold)."""
    if draw(st.booleans()):
        return box
    dx, dy = draw(st.floats(-0.08, 0.08)), draw(st.floats(-0.08, 0.08))
    sw, sh = draw(st.floats(0.88, 1.12)), draw(st.floats(0.88, 1.12))
    return Box.from_xywh((box.x0 + dx * box.width, box.y0 + dy * box.height, box.width * sw, box.height * sh))


@st.composite
def twins(draw: st.DrawFn) -> tuple[Box, list[Box]]:
    """A box, and boxes it overlaps exactly as much (shifted by the same amount either way): a tie to break."""
    x, y = draw(coordinate), draw(coordinate)
    w, h = (draw(st.integers(20, 200)) / 4 for _ in range(2))  # quarters: every overlap is computed exactly
    d = draw(st.integers(0, 2)) / 4
    copies = draw(st.integers(1, 3))
    return Box.from_xywh((x, y, w, h)), [Box.from_xywh((x + s, y, w, h)) for s in (-d, d) for _ in range(copies)]


@st.composite
def scenes(draw: st.DrawFn) -> tuple[list[tuple[str, Box]], list[tuple[str, Box]]]:
    labels = st.sampled_from(["a", "b"])
    existing = draw(st.lists(st.tuples(labels, boxes()), max_size=25))
    incoming = [(label, draw(near(box))) for label, box in existing if draw(st.booleans())]
    for box, tied in draw(st.lists(twins(), max_size=3)):
        existing += [("a", other) for other in draw(st.permutations(tied))]
        incoming += [("a", box)] * draw(st.integers(1, 3))
    incoming += draw(st.lists(st.tuples(labels, boxes()), max_size=10))
    return existing, draw(st.permutations(incoming))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(scenes())
def test_the_overlap_index_takes_what_comparing_every_pair_takes(
    scene: tuple[list[tuple[str, Box]], list[tuple[str, Box]]],
) -> None:
    existing, incoming = scene
    index = OverlapIndex(IMPORT_DUPLICATE_IOU)
    for i, (label, box) in enumerate(existing):
        index.add(label, box, i)
    assert [index.take_best(label, box) for label, box in incoming] == brute_force(existing, incoming)


extreme = st.floats(min_value=-1e308, max_value=1e308, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.tuples(extreme, extreme, extreme, extreme), min_size=1, max_size=8))
def test_the_overlap_index_copes_with_boxes_at_the_limits_of_floats(corners: list[tuple[float, ...]]) -> None:
    """Huge, tiny and overflowing sizes: no exception, and the same answer as comparing every pair."""
    found = []
    for x0, y0, x1, y1 in corners:
        if x0 < x1 and y0 < y1:
            found.append(("a", Box(x0=x0, y0=y0, x1=x1, y1=y1)))
    index = OverlapIndex(IMPORT_DUPLICATE_IOU)
    for i, (label, box) in enumerate(found):
        index.add(label, box, i)
    assert [index.take_best(label, box) for label, box in found] == brute_force(found, found)
