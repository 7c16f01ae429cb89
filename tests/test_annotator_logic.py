"""Qt-free pieces of the desktop app: canvas geometry and how a typed query becomes prompts and labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annotator.core import geometry
from annotator.core.geometry import Handle
from annotator.core.records import LabelRow
from annotator.core.runs import RunError, detection_prompts, exact_label, label_named, plan_run
from annotator.core.shortcuts import SHORTCUTS
from model.annotations import Box, Task

W, H = 640.0, 480.0
coord_x = st.floats(min_value=-100, max_value=W + 100, allow_nan=False)
coord_y = st.floats(min_value=-100, max_value=H + 100, allow_nan=False)


@st.composite
def boxes(draw: st.DrawFn) -> Box:
    x0 = draw(st.floats(min_value=0, max_value=W - 2))
    y0 = draw(st.floats(min_value=0, max_value=H - 2))
    x1 = draw(st.floats(min_value=x0 + 1, max_value=W))
    y1 = draw(st.floats(min_value=y0 + 1, max_value=H))
    return Box(x0=x0, y0=y0, x1=x1, y1=y1)


def _inside(box: Box) -> bool:
    return 0 <= box.x0 < box.x1 <= W and 0 <= box.y0 < box.y1 <= H


@given(boxes(), st.sampled_from(list(Handle)), coord_x, coord_y)
def test_resizing_keeps_a_real_box_inside_the_image(box: Box, handle: Handle, x: float, y: float) -> None:
    resized = geometry.resize(box, handle, x, y, W, H)
    assert _inside(resized)
    assert resized.width >= geometry.MIN_SIZE - 1e-9 and resized.height >= geometry.MIN_SIZE - 1e-9
    # Sides the handle does not own stay where they were (unless the box flipped over them).
    if not (handle.moves_top or handle.moves_bottom):
        assert (resized.y0, resized.y1) == (box.y0, box.y1)
    if not (handle.moves_left or handle.moves_right):
        assert (resized.x0, resized.x1) == (box.x0, box.x1)


def test_dragging_a_corner_moves_just_that_corner() -> None:
    box = Box(x0=10, y0=20, x1=110, y1=220)
    assert geometry.resize(box, Handle.bottom_right, 150, 260, W, H).xyxy == (10, 20, 150, 260)
    assert geometry.resize(box, Handle.top_left, 0, 0, W, H).xyxy == (0, 0, 110, 220)
    assert geometry.resize(box, Handle.top_left, 200, 300, W, H).xyxy == (110, 220, 200, 300)  # flipped
    assert geometry.resize(box, Handle.right, 700, 999, W, H).xyxy == (10, 20, W, 220)  # clamped, y untouched


@given(boxes(), st.floats(-2 * W, 2 * W), st.floats(-2 * H, 2 * H))
def test_moving_keeps_size_and_stops_at_the_border(box: Box, dx: float, dy: float) -> None:
    moved = geometry.translate(box, dx, dy, W, H)
    assert _inside(moved)
    assert moved.width == pytest.approx(box.width) and moved.height == pytest.approx(box.height)


@given(boxes(), st.floats(0.5, 20))
def test_every_handle_is_found_at_its_own_point(box: Box, tolerance: float) -> None:
    for handle, (x, y) in geometry.handle_points(box).items():
        found = geometry.handle_at(box, x, y, tolerance)
        assert found is not None
        fx, fy = geometry.handle_points(box)[found]
        assert max(abs(fx - x), abs(fy - y)) <= tolerance
        if box.width > 2 * tolerance and box.height > 2 * tolerance:
            assert found == handle  # on a box big enough to tell them apart, exactly that handle


def test_far_from_handles_is_no_handle() -> None:
    box = Box(x0=100, y0=100, x1=300, y1=300)
    assert geometry.handle_at(box, 200, 200, 5) is None  # the body: move, not resize
    assert geometry.handle_at(box, 104, 296, 5) is Handle.bottom_left


@given(coord_x, coord_y, coord_x, coord_y)
def test_a_drawn_box_is_inside_or_nothing(x0: float, y0: float, x1: float, y1: float) -> None:
    drawn = geometry.drawn_box(x0, y0, x1, y1, W, H)
    if drawn is not None:
        assert _inside(drawn)
    assert geometry.drawn_box(50, 50, 50.2, 90, W, H) is None  # a click, or a sliver, draws nothing


LABELS = [LabelRow("dog", "#000000"), LabelRow("hot dog", "#111111"), LabelRow("person", "#222222", prompt="man")]


def test_detection_with_an_empty_query_asks_for_every_label_with_its_prompt() -> None:
    prompts = plan_run(Task.detection, "  ", LABELS)
    assert [(p.query, p.label) for p in prompts] == [("dog", "dog"), ("hot dog", "hot dog"), ("man", "person")]
    with pytest.raises(RunError, match="add labels"):
        detection_prompts([], "")


def test_detection_query_lists_things_and_maps_them_to_labels() -> None:
    prompts = plan_run(Task.detection, "dogs,  red balloon , man", LABELS)
    assert [(p.task, p.query, p.label) for p in prompts] == [
        (Task.detection, "dogs", "dog"),
        (Task.detection, "red balloon", "red balloon"),  # a new label
        (Task.detection, "man", "person"),  # the label whose prompt it is
    ]


def test_refer_takes_the_label_its_phrase_names_else_the_current_one() -> None:
    (p,) = plan_run(Task.refer, "the hot dog on the left", LABELS, current_label="person")
    assert (p.task, p.query, p.label) == (Task.refer, "the hot dog on the left", "hot dog")  # longest match wins
    (p,) = plan_run(Task.refer, "the tall man", LABELS, current_label="person")
    assert p.label == "person"
    (p,) = plan_run(Task.refer, "the red kite", [], current_label=None)
    assert p.label == "the red kite"
    with pytest.raises(RunError, match="description of one object"):
        plan_run(Task.refer, "", LABELS)
    assert label_named("a dogged effort", LABELS) is None  # whole words only
    assert exact_label("DOGS", LABELS) == "dog"


def test_identify_needs_a_box_and_text_tasks_need_questions() -> None:
    box = Box(x0=1, y0=2, x1=30, y1=40)
    (p,) = plan_run(Task.identify, "", LABELS, selected_box=box)
    assert (p.task, p.box, p.label) == (Task.identify, box, None)
    with pytest.raises(RunError, match="select one box"):
        plan_run(Task.identify, "", LABELS)
    with pytest.raises(RunError, match="question"):
        plan_run(Task.vqa, "", LABELS)
    (p,) = plan_run(Task.caption, "", LABELS)
    assert (p.task, p.query) == (Task.caption, None)
    (p,) = plan_run(Task.grounding, "", LABELS)
    assert p.query and p.label is None  # boxes keep the model's phrases


def test_shortcuts_are_unique() -> None:
    keys = [key for shortcut in SHORTCUTS for key in shortcut.keys]
    assert len(keys) == len(set(keys))
    assert len({s.action for s in SHORTCUTS}) == len(SHORTCUTS)


def test_label_colours_are_stable_and_a_project_s_labels_stay_apart(tmp_path: Path) -> None:
    from annotator.core.colors import _hue, _hue_gap, color_for
    from annotator.core.store import ProjectStore

    names = ["person", "car", "dog", "cat", "bird", "bicycle", "bus", "truck", "horse", "sheep"]
    store = ProjectStore.open(tmp_path / "colours.minigpt.sqlite")
    created = [store.ensure_label(name).color for name in names]
    store.close()
    hues = [_hue(color) for color in created]
    assert min(_hue_gap(a, b) for i, a in enumerate(hues) for b in hues[i + 1 :]) >= 0.05
    assert created[0] == color_for("person")  # the first label keeps its name's own colour
    reopened = ProjectStore.open(tmp_path / "colours.minigpt.sqlite")
    assert [label.color for label in reopened.labels()] == created  # the same across sessions
    reopened.close()


def test_renaming_a_label_relabels_its_boxes_merges_and_undoes_exactly(tmp_path: Path) -> None:
    from annotator.core import edits
    from annotator.core.records import BoxRow, BoxState
    from annotator.core.store import ProjectStore, StoreError

    store = ProjectStore.open(tmp_path / "labels.minigpt.sqlite")
    store.add_images(["a.png", "b.png"])
    a, b = (row.id for row in store.images())
    box = Box(x0=1, y0=1, x1=9, y1=9)
    store.put_boxes(
        [
            BoxRow(a, "dgo", box, BoxState.annotation),
            BoxRow(b, "dgo", box, BoxState.proposal, score=0.4),
            BoxRow(b, "cat", box, BoxState.annotation),
        ]
    )
    typo = next(label for label in store.labels() if label.name == "dgo")

    rename = edits.RenameLabel("Rename", "dgo", "dog")
    rename.redo(store)
    assert [label.name for label in store.labels()] == ["dog", "cat"]  # same place in the list
    assert store.labels()[0].color == typo.color  # and the same colour
    assert sorted(r.label for i in (a, b) for r in store.boxes(i)) == ["cat", "dog", "dog"]
    assert rename.image_ids == {a, b}

    merge = edits.RenameLabel("Merge", "dog", "cat")
    merge.redo(store)
    assert [label.name for label in store.labels()] == ["cat"]
    merge.undo(store)
    rename.undo(store)
    assert store.labels()[0] == typo
    assert sorted(r.label for i in (a, b) for r in store.boxes(i)) == ["cat", "dgo", "dgo"]

    with pytest.raises(StoreError, match="2 box"):
        store.remove_label("dgo")
    store.ensure_label("unused")
    position = store.label_position("unused")
    assert position is not None
    delete = edits.DeleteLabel("Delete", store.labels()[-1], position)
    delete.redo(store)
    assert "unused" not in [label.name for label in store.labels()]
    delete.undo(store)
    assert store.labels()[-1].name == "unused"
    store.close()


def test_an_identify_answer_suggests_a_label() -> None:
    from annotator.core.runs import label_from_answer

    assert label_from_answer("hot dogs", LABELS) == "hot dog"
    assert label_from_answer("It is a dog.", LABELS) == "dog"  # the label it names
    assert label_from_answer(" kite ", LABELS) == "kite"  # a short answer can become a new label
    assert label_from_answer("a large object that could be many things", LABELS) is None
    assert label_from_answer("  ", LABELS) is None


def test_the_readmes_shortcut_table_lists_every_shortcut_as_f1_does() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Keyboard shortcuts") :]
    table = section[: section.index("\n\n", section.index("| keys |"))]
    rows = {line for line in table.splitlines() if line.startswith("| `")}
    for shortcut in SHORTCUTS:
        if shortcut.action.startswith("label_"):  # nine digit keys, one row
            assert "| `1` … `9` | Make the n-th label of the list the current label |" in rows
            continue
        keys = " / ".join(f"`{key}`" for key in shortcut.keys)
        assert f"| {keys} | {shortcut.text} |" in rows, shortcut
    assert len(rows) == len([s for s in SHORTCUTS if not s.action.startswith("label_")]) + 1  # and nothing else
