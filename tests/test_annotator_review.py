"""Issue 17, desktop-review: the review flow, the window's basics and the YOLO / Pascal VOC exports.

The rules are tested on the Qt-free core against a real store; every addition with UI is then driven in the real
main window with keys, the mouse and its real dialogs (pytest-qt, offscreen, the shipped tiny model on the CPU).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import test_annotator_gui as gui
from hypothesis import given
from hypothesis import strategies as st
from modal import ModalAnswer
from patience import HANG_MS
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QInputDialog
from pytestqt.qtbot import QtBot

from annotator.core import edits
from annotator.core.exchange import ExchangeError, export_coco
from annotator.core.formats import export_voc, export_yolo, parse_yolo_line, read_voc, read_yolo, voc_corners, yolo_line
from annotator.core.records import BoxRow, BoxState
from annotator.core.review_flow import BatchClock, drop_rejected, one_label_per_object, pending_warning
from annotator.core.store import ProjectStore
from annotator.core.window_basics import matches_name, parse_recent, push_recent, recent_text
from annotator.gui.main_window import MainWindow
from model.annotations import Box, Origin
from model.coco import load_with_pycocotools

# The GUI tests' fixtures (a window on shape scenes, photos and a corrupt file, with the shipped tiny model) and helpers
image_folder, engine, window = gui.image_folder, gui.engine, gui.window
LABELS, _go, _wait_idle = gui.LABELS, gui._go, gui._wait_idle

# ======================================================================================================================
# The rules, Qt-free


def _proposal(image_id: int, label: str, xyxy: tuple[float, ...], score: float = 0.5) -> BoxRow:
    return BoxRow(image_id, label, Box.from_xyxy(xyxy), BoxState.proposal, origin=Origin.proposed, score=score)


def test_a_rejected_proposal_is_remembered_in_the_store_and_undo_forgets_it(tmp_path: Path) -> None:
    store = ProjectStore.open(tmp_path / "p.minigpt.sqlite")
    store.add_images(["a.png"])
    image = store.image_id("a.png")
    assert image is not None
    cat, dog = store.put_boxes([_proposal(image, "cat", (10, 10, 50, 50)), _proposal(image, "dog", (60, 60, 90, 90))])
    reject = edits.reject([cat])
    reject.redo(store)
    assert store.rejections(image) == [("cat", cat.box)]
    # The next run's proposals: the same box again (IoU 0.8 >= 0.7) is dropped; another label or place is not.
    again = [
        _proposal(image, "cat", (10, 10, 50, 46)),
        _proposal(image, "dog", (10, 10, 50, 50)),
        _proposal(image, "cat", (10, 10, 50, 30)),
    ]
    kept, dropped = drop_rejected(again, store.rejections(image))
    assert (kept, dropped) == (again[1:], 1)
    reject.undo(store)
    assert store.rejections(image) == [] and {r.id for r in store.boxes(image)} == {cat.id, dog.id}
    # Deleting a proposal rejects it too; deleting an annotation remembers nothing.
    edits.remove_boxes("Delete", [dog]).redo(store)
    assert store.rejections(image) == [("dog", dog.box)]
    path = store.path
    store.close()
    reopened = ProjectStore.open(path)  # remembered across sessions
    try:
        assert reopened.rejections(image) == [("dog", dog.box)]
    finally:
        reopened.close()


boxes = st.tuples(
    st.integers(0, 60), st.integers(0, 60), st.integers(5, 40), st.integers(5, 40), st.sampled_from("abc")
).map(lambda t: (t[4], (t[0], t[1], t[0] + t[2], t[1] + t[3])))


@given(
    proposals=st.lists(st.tuples(boxes, st.floats(0.01, 1.0)), max_size=12),
    annotations=st.lists(boxes, max_size=3),
)
def test_one_label_per_object_keeps_no_two_overlapping_boxes(proposals: list, annotations: list) -> None:
    rows = [_proposal(1, label, xyxy, score) for (label, xyxy), score in proposals]
    owned = [BoxRow(1, label, Box.from_xyxy(xyxy), BoxState.annotation) for label, xyxy in annotations]
    keep, drop = one_label_per_object(rows, owned)
    assert sorted(map(id, keep + drop)) == sorted(map(id, rows))  # every proposal is decided, once
    taken = [row.box for row in owned]
    for row in keep:  # nothing accepted overlaps a person's box or another accepted one
        assert all(row.box.iou(box) < 0.5 for box in taken)
        taken.append(row.box)
    for row in drop:  # and each rejected one overlaps something that stays, at least as good
        assert any(row.box.iou(o.box) >= 0.5 for o in owned) or any(
            row.box.iou(k.box) >= 0.5 and (k.score or 0) >= (row.score or 0) for k in keep
        )


def test_the_small_rules_of_the_review_flow_and_the_window() -> None:
    clock = BatchClock(started=100.0)
    assert clock.text(0, 8, 100.0) == "0 / 8"
    assert clock.text(2, 8, 110.0) == "2 / 8, about 30 s left"
    assert clock.text(1, 200, 105.0) == "1 / 200, about 16 min 35 s left"
    assert clock.text(8, 8, 140.0) == "8 / 8"
    from annotator.core.records import ImageRow

    assert pending_warning(ImageRow(1, "a.png", 10, 10, proposals=0)) is None
    assert "3 proposals" in (pending_warning(ImageRow(1, "a.png", 10, 10, proposals=3)) or "")
    assert matches_name("sub/Cat-01.JPG", "cat") and not matches_name("sub/dog.png", "cat")
    assert matches_name("sub/dog.png", "*.png") and not matches_name("sub/dog.jpg", "*.png")
    entries = push_recent([("a", "a.s"), ("b", "b.s")], ("b", "b.s"))
    assert entries == [("b", "b.s"), ("a", "a.s")]
    assert len(push_recent([(str(i), str(i)) for i in range(8)], ("new", "new"))) == 8
    assert parse_recent(recent_text(entries)) == entries
    assert parse_recent("not json") == parse_recent('[["a"], 3, {"x": 1}]') == parse_recent(None) == []


# ======================================================================================================================
# YOLO and Pascal VOC exports


@pytest.fixture
def exported_project(tmp_path: Path) -> tuple[ProjectStore, Path]:
    """Three images (one EXIF-rotated, one in a subfolder) with boxes, one clipped at the edge, and a negative."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (120, 80), "white").save(folder / "a.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 100 wide, 60 high; upright 60 wide, 100 high
    Image.new("RGB", (100, 60), "white").save(folder / "sub" / "rotated.jpg", exif=exif)
    Image.new("L", (50, 50), 0).save(folder / "empty.png")
    store = ProjectStore.open(tmp_path / "photos.minigpt.sqlite")
    store.add_images(["a.png", "sub/rotated.jpg", "empty.png"])
    for name in ("cat", "dog", "unused"):
        store.ensure_label(name)
    a, rotated, empty = (store.image_id(p) for p in ("a.png", "sub/rotated.jpg", "empty.png"))
    assert a and rotated and empty
    annotation = BoxState.annotation
    store.put_boxes(
        [
            BoxRow(a, "cat", Box(x0=10.25, y0=5.5, x1=40.75, y1=30.0), annotation, origin=Origin.manual),
            BoxRow(a, "dog", Box(x0=100.0, y0=60.0, x1=130.0, y1=95.0), annotation, origin=Origin.manual),  # clipped
            BoxRow(rotated, "dog", Box(x0=5.0, y0=50.0, x1=55.0, y1=99.0), annotation, origin=Origin.manual),
            _proposal(rotated, "cat", (0, 0, 10, 10)),  # proposals never leave the project
        ]
    )
    store.set_reviewed(empty, True)  # a negative: exported without boxes
    return store, folder


def _coco_boxes(store: ProjectStore, folder: Path, tmp_path: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """What the COCO export writes, per image: the reference both other formats must agree with."""
    export_coco(store, folder, tmp_path / "coco.json")
    coco = load_with_pycocotools(tmp_path / "coco.json")
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    found: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    for image in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        found[image["file_name"]] = sorted(
            (names[a["category_id"]], tuple(Box.from_xywh(a["bbox"]).xyxy)) for a in anns
        )
    return found


def test_yolo_export_reads_back_as_ultralytics_documents_it(exported_project, tmp_path: Path) -> None:
    store, folder = exported_project
    out = tmp_path / "yolo"
    report = export_yolo(store, folder, out)
    assert (report.images, report.annotations) == (3, 3)
    data = (out / "data.yaml").read_text()
    assert f"path: {out.resolve()}" in data and "0: cat" in data and "1: dog" in data and "2: unused" in data
    # The rotated image's row, by hand: normalised by its upright 60 x 100 size, class ids from 0.
    assert (out / "labels" / "sub" / "rotated.txt").read_text() == "1 0.500000 0.745000 0.833333 0.490000\n"
    assert (out / "labels" / "empty.txt").read_text() == ""  # a background image
    assert (out / "images" / "sub" / "rotated.jpg").read_bytes() == (folder / "sub" / "rotated.jpg").read_bytes()
    read = read_yolo(out)
    coco = _coco_boxes(store, folder, tmp_path)
    assert set(read) == set(coco)
    for name, expected in coco.items():
        got = sorted((label, box.xyxy) for label, box in read[name])
        assert [label for label, _ in got] == [label for label, _ in expected]
        for (_, box), (_, want) in zip(got, expected, strict=True):
            assert box == pytest.approx(want, abs=1e-3)

    # Exporting again replaces the earlier export; a folder that is not one is never replaced.
    store.set_reviewed(store.image_id("empty.png") or 0, False)
    assert export_yolo(store, folder, out).images == 2
    assert not (out / "labels" / "empty.txt").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ExchangeError, match="not empty and not an earlier YOLO export"):
        export_yolo(store, folder, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_pascal_voc_export_parses_with_xml_etree_to_the_same_boxes(exported_project, tmp_path: Path) -> None:
    store, folder = exported_project
    out = tmp_path / "voc"
    report = export_voc(store, folder, out)
    assert (report.images, report.annotations) == (3, 3)
    coco = _coco_boxes(store, folder, tmp_path)
    for name, expected in coco.items():
        root = ET.parse(out / "Annotations" / Path(name).with_suffix(".xml")).getroot()
        assert root.findtext("filename") == name
        with Image.open(folder / name) as image:
            upright = (image.height, image.width) if name.endswith("rotated.jpg") else image.size
        assert (int(root.findtext("size/width") or 0), int(root.findtext("size/height") or 0)) == upright
        objects = sorted(
            (
                obj.findtext("name"),
                tuple(int(obj.findtext(f"bndbox/{t}") or 0) for t in ("xmin", "ymin", "xmax", "ymax")),
            )
            for obj in root.iter("object")
        )
        # 1-based inclusive pixel indices: back to edges (xmin - 1) they are within half a pixel of the COCO box.
        assert [label for label, _ in objects] == [label for label, _ in expected]
        for (_, (x0, y0, x1, y1)), (_, want) in zip(objects, expected, strict=True):
            assert (x0 - 1, y0 - 1, x1, y1) == pytest.approx(want, abs=0.5)
    assert voc_corners(Box(x0=10.25, y0=5.5, x1=40.75, y1=30.0)) == (11, 7, 41, 30)
    assert read_voc(out)["a.png"][0][0] in {"cat", "dog"}
    assert (out / "labels.txt").read_text().split() == ["cat", "dog", "unused"]


@given(
    size=st.tuples(st.integers(1, 20000), st.integers(1, 20000)),
    corners=st.tuples(*(st.floats(0.0, 1.0) for _ in range(4))),
)
def test_a_yolo_row_and_voc_corners_read_back_to_the_box(size: tuple[int, int], corners: tuple[float, ...]) -> None:
    width, height = size
    a, b, c, d = corners
    x0, x1 = sorted((a * width, c * width))
    y0, y1 = sorted((b * height, d * height))
    if x1 - x0 < 1 or y1 - y0 < 1:  # what the export keeps: boxes of at least 1 px (exchange.MIN_BOX_SIZE)
        return
    box = Box(x0=x0, y0=y0, x1=x1, y1=y1)
    label, back = parse_yolo_line(yolo_line(2, box, width, height), {2: "cat"}, width, height)
    assert label == "cat"
    assert back.xyxy == pytest.approx(box.xyxy, abs=1e-6 * max(width, height))  # six decimals of the size
    xmin, ymin, xmax, ymax = voc_corners(box)
    assert 1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height  # valid 1-based inclusive indices
    assert (xmin - 1, ymin - 1, xmax, ymax) == pytest.approx(box.xyxy, abs=0.5)


@given(st.text(max_size=40))
def test_a_broken_yolo_row_is_one_clear_error(line: str) -> None:
    try:
        parse_yolo_line(line, {0: "cat"}, 100, 100)
    except ExchangeError as err:
        assert "\n" not in str(err).strip()


def test_images_whose_label_files_would_collide_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("x.png", "x.jpg"):
        Image.new("RGB", (20, 20)).save(folder / name)
    store = ProjectStore.open(tmp_path / "f.minigpt.sqlite")
    store.add_images(["x.jpg", "x.png"])
    for name in ("x.jpg", "x.png"):
        store.set_reviewed(store.image_id(name) or 0, True)
    report = export_voc(store, folder, tmp_path / "voc")
    assert report.images == 1 and report.skipped == [
        ("x.png", "x.jpg has the same name without its extension; rename one to export both")
    ]


# ======================================================================================================================
# The real window


def _proposals(win: MainWindow, image: int) -> list[BoxRow]:
    assert win.session is not None
    return [row for row in win.session.boxes(image) if row.is_proposal]


def _run(qtbot: QtBot, win: MainWindow) -> None:
    """Press I on the canvas: the model runs on the image with the AI panel's task and query."""
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_I)
    _wait_idle(qtbot, win)


def test_review_next_warns_about_pending_proposals_then_marks_and_moves_on(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    first = _go(win, "000001.png")
    win.ai_panel.set_query(", ".join(LABELS))
    _run(qtbot, win)
    assert _proposals(win, first)

    # Ctrl+K with proposals pending: the window warns; Cancel leaves everything as it was.
    warned = ModalAnswer("Cancel")
    qtbot.keyClick(win.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    assert warned.answered and "nobody accepted or rejected" in warned.seen
    assert not session.image(first).reviewed and session.current_id == first
    qtbot.waitUntil(win.isActiveWindow)

    # Again, "Mark reviewed": marked, and on to the next unreviewed image.
    warned = ModalAnswer("Mark reviewed")
    qtbot.keyClick(win.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    assert warned.answered and session.image(first).reviewed
    second = session.current_id
    assert second is not None and second != first and not session.image(second).reviewed
    qtbot.waitUntil(win.isActiveWindow)

    # No proposals here: no question, one key marks it and moves on.
    assert not _proposals(win, second)
    qtbot.keyClick(win.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    assert session.image(second).reviewed and session.current_id not in (first, second)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one undo step, shown
    assert not session.image(second).reviewed and session.current_id == second


def test_rejected_proposals_are_not_proposed_again_by_a_run_or_a_batch(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    image = _go(win, "000006.png")  # two circles, both found by the shipped model
    win.ai_panel.set_query("circle")  # one prompt a run keeps the test short
    _run(qtbot, win)
    first = _proposals(win, image)
    assert first
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Backspace, Qt.KeyboardModifier.ControlModifier)  # reject all
    assert _proposals(win, image) == []

    _run(qtbot, win)  # the same model, the same image: every box it finds was rejected
    assert _proposals(win, image) == []
    assert f"{len(first)} rejected before skipped" in win.statusBar().currentMessage()

    session.add_label("circle")
    for row in session.images():  # a batch over the unreviewed images: this one only, to keep the test short
        session.store.set_reviewed(row.id, row.id != image)
    from annotator.core.runs import detection_prompts

    assert win.start_batch(detection_prompts(session.labels()), unreviewed_only=True)
    _wait_idle(qtbot, win)
    assert _proposals(win, image) == []  # nor a batch
    assert "Batch done: 0 proposal(s) on 0 image(s)" in win.statusBar().currentMessage()

    # Undoing the reject forgets it: the proposals are back, and may come again.
    assert session.undo_stack.undoText().startswith("Reject")
    session.undo_stack.undo()
    assert {row.id for row in _proposals(win, image)} == {row.id for row in first}
    assert session.rejections(image) == []


def test_one_label_per_object_on_accept_is_an_option_off_by_default(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    image = _go(win, "000005.png")
    # Two proposals on one object under different labels, as a detector run for each label makes them.
    rows = [_proposal(image, "circle", (20, 20, 80, 80), 0.9), _proposal(image, "square", (22, 21, 81, 82), 0.6)]
    circle, square = session.save_batch_proposals(image, rows)
    win.canvas.setFocus()

    win.canvas.select({circle.id, square.id})  # off: both accepted
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    assert {(r.label, r.state) for r in session.boxes(image)} == {
        ("circle", BoxState.annotation),
        ("square", BoxState.annotation),
    }
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)

    option = win.actions_by_name["one_label_per_object"]
    assert not option.isChecked()
    option.trigger()  # Review → One label per object
    assert session.flag("one_label_per_object")
    win.canvas.select({circle.id, square.id})
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    (kept,) = session.boxes(image)
    assert (kept.id, kept.label, kept.state) == (circle.id, "circle", BoxState.annotation)
    assert session.rejections(image) == [("square", square.box)]  # rejected, so not proposed again
    assert "one label per object" in win.statusBar().currentMessage()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one step: both back
    assert {r.id for r in _proposals(win, image)} == {circle.id, square.id} and session.rejections(image) == []


def test_batch_dialog_says_how_many_images_and_progress_shows_time_left(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    session.add_label("circle")
    readable = [row for row in session.images() if row.error is None]
    _go(win, "000001.png")
    qtbot.keyClick(win.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)  # one reviewed: 1 fewer to run
    told: list[str] = []

    def read_counts(dialog) -> None:
        told.append(dialog.count.text())
        dialog.everything.setChecked(True)
        told.append(dialog.count.text())
        dialog.unreviewed.setChecked(True)

    answer = ModalAnswer("OK", before=read_counts)
    qtbot.keyClick(win, Qt.Key.Key_B, Qt.KeyboardModifier.ControlModifier)
    assert answer.answered
    n = len(readable) - 1
    assert told == [
        f"Runs on {n} images (unreadable images are skipped)",
        f"Runs on {len(readable)} images (unreadable images are skipped)",
    ]
    assert win.ai is not None and win.ai.busy
    with qtbot.waitSignal(win.ai.progress, timeout=HANG_MS):
        pass
    shown = win.ai_panel.progress.format()
    assert re.fullmatch(rf"\d+ / {n}, about (\d+ s|\d+ min \d\d s) left", shown), shown
    win.ai.cancel()
    _wait_idle(qtbot, win)


def test_window_basics_quit_recent_filter_docks_layout_server_and_unreadable(
    qtbot: QtBot,
    image_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MINIGPT_ANNOTATE_CONFIG", str(tmp_path / "config"))  # a fresh settings file
    store = tmp_path / "basics.minigpt.sqlite"
    win = MainWindow()
    qtbot.addWidget(win)
    win.open_folder(image_folder, store)
    win.resize(1024, 680)
    win.show()
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: win.canvas.width() > 0)
    assert win.canvas.width() >= 0.55 * win.width(), (win.canvas.width(), win.width())  # the canvas gets the room

    # A clear message on the canvas for an image that cannot be shown, gone on a good one.
    _go(win, "zz-broken.jpg")
    assert win.basics.unreadable.isVisible() and "zz-broken.jpg cannot be shown" in win.basics.unreadable.text()
    _go(win, "000001.png")
    assert not win.basics.unreadable.isVisible()

    # The file-name filter, typed.
    win.files.name_filter.setFocus()
    qtbot.keyClicks(win.files.name_filter, "photo")
    listed = {win.files.model.rows[i].path for i in range(win.files.model.rowCount())}
    assert listed == {"photo-astronaut.jpg", "photo-coffee.jpg", "photo-rotated.jpg", "000001.png"}  # + the current
    win.files.name_filter.clear()
    qtbot.keyClicks(win.files.name_filter, "*.png")
    assert all(win.files.model.rows[i].path.endswith(".png") for i in range(win.files.model.rowCount()))

    # The connect dialog offers the last server.
    def connect(url: str) -> str:
        offered: list[str] = []

        def type_url(dialog) -> None:
            assert isinstance(dialog, QInputDialog)
            offered.append(dialog.textValue())
            dialog.setTextValue(url)

        assert ModalAnswer("OK", before=type_url) is not None
        win.actions_by_name["connect_server"].trigger()
        assert win.ai is not None
        qtbot.waitUntil(lambda: not win.ai.busy, timeout=HANG_MS)  # nothing listens there: it fails, and says so
        return offered[0]

    assert connect("http://127.0.0.1:9") == "http://localhost:9090"
    assert "127.0.0.1:9" in win.ai_panel.status.text()
    assert connect("http://127.0.0.1:9/again") == "http://127.0.0.1:9"

    # Docks: closed from the View menu, the layout saved on quitting (Ctrl+Q), and reopened.
    images_dock = win.actions_by_name["open_folder"].parent().findChild(type(win.basics.docks()[0]), "Images")
    toggle = images_dock.toggleViewAction()
    assert toggle in win.menuBar().actions()[3].menu().actions()  # &View
    toggle.trigger()
    assert not images_dock.isVisible()
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow)
    qtbot.keyClick(win, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    assert not win.isVisible() and win.session is None  # quit closes the project

    again = MainWindow()
    qtbot.addWidget(again)
    again.show()
    qtbot.waitExposed(again)
    dock = again.findChild(type(images_dock), "Images")
    assert not dock.isVisible()  # the layout as it was left
    dock.toggleViewAction().trigger()
    assert dock.isVisible()

    # File → Open recent reopens the project (folder and store).
    menu = again.basics.recent_menu
    menu.aboutToShow.emit()
    (entry,) = [a for a in menu.actions() if a.text() == str(image_folder.resolve())]
    entry.trigger()
    assert again.session is not None and again.session.store_path == store.resolve()
    again.close()


def test_exports_from_the_window(qtbot: QtBot, window: MainWindow, tmp_path: Path) -> None:
    win = window
    session = win.session
    assert session is not None
    image = _go(win, "000002.png")
    win.ai_panel.set_query(", ".join(LABELS))
    _run(qtbot, win)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # accept all
    accepted = session.boxes(image)
    assert accepted and not _proposals(win, image)
    file_menu = win.menuBar().actions()[0].menu()
    assert {"Export YOLO (txt + data.yaml)…", "Export Pascal VOC XML…"} <= {a.text() for a in file_menu.actions()}
    yolo = win.review.export_to("yolo", tmp_path / "yolo")
    voc = win.review.export_to("voc", tmp_path / "voc")
    assert yolo is not None and voc is not None and yolo.annotations == voc.annotations == len(accepted)
    assert sorted(label for label, _ in read_yolo(tmp_path / "yolo")["000002.png"]) == sorted(r.label for r in accepted)
    assert "Exported" in win.statusBar().currentMessage()
    assert win.review.export_to("yolo", tmp_path / "voc") is None  # not a YOLO export: refused, and said why
    assert "not an earlier YOLO export" in win.ai_panel.status.text()
