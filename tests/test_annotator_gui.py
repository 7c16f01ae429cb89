"""The real desktop window, driven like a user would: keys, mouse drags, the AI panel, export (pytest-qt, offscreen).

The model is the shipped tiny model trained on synthetic shapes, loaded in process on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from modal import ModalAnswer
from patience import HANG_MS, HANG_S
from PIL import Image
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from annotator.core.engines import LocalEngine
from annotator.core.records import BoxState, ImageStatus
from annotator.core.sources import ModelSource
from annotator.gui.main_window import MainWindow
from model.annotations import Box, Origin, Task
from model.coco import load_with_pycocotools
from model.images import image_size
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

LABELS = ("square", "circle", "triangle")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic-shape scenes (one EXIF-rotated), three real photos (one EXIF-rotated) and a corrupt file."""
    from skimage import data

    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, images=6, seed=11, exif_fraction=0.0)
    folder = root / "images"
    Image.fromarray(data.astronaut()).save(folder / "photo-astronaut.jpg", quality=90)
    Image.fromarray(data.coffee()).save(folder / "photo-coffee.jpg", quality=90)
    # A phone photo stored sideways: EXIF orientation 6 means "rotate 90° clockwise to display".
    chelsea = Image.fromarray(data.chelsea())  # a cat, 451 wide and 300 high when upright
    exif = Image.Exif()
    exif[0x0112] = 6
    chelsea.transpose(Image.Transpose.ROTATE_90).save(folder / "photo-rotated.jpg", quality=90, exif=exif)
    (folder / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return folder


@pytest.fixture(scope="module")
def engine() -> LocalEngine:
    return LocalEngine.load(SHIPPED_DIR, device="cpu")


@pytest.fixture
def window(qtbot: QtBot, image_folder: Path, tmp_path: Path, engine: LocalEngine) -> MainWindow:
    win = MainWindow()
    qtbot.addWidget(win)
    win.open_folder(image_folder, tmp_path / "project.minigpt.sqlite")
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()  # keyboard shortcuts go to the active window, as on a desktop
    qtbot.waitUntil(win.isActiveWindow)
    win.canvas.setFocus()
    assert win.ai is not None
    win.ai.use(engine, ModelSource("local", str(SHIPPED_DIR), device="cpu"))
    return win


def _wait_idle(qtbot: QtBot, win: MainWindow, timeout: int = HANG_MS) -> None:
    assert win.ai is not None
    qtbot.waitUntil(lambda: not win.ai.busy, timeout=timeout)


def _go(win: MainWindow, name: str) -> int:
    assert win.session is not None
    image_id = win.session.store.image_id(name)
    assert image_id is not None, name
    win.go_to(image_id)
    return image_id


def _drag(win: MainWindow, start: QPointF, end: QPointF) -> None:
    """A left-button drag on the canvas in scene (image pixel) coordinates, with intermediate moves."""
    viewport = win.canvas.viewport()
    a = win.canvas.mapFromScene(start)
    b = win.canvas.mapFromScene(end)

    def send(kind: QEvent.Type, pos: QPoint, button: Qt.MouseButton, buttons: Qt.MouseButton) -> None:
        event = QMouseEvent(
            kind, QPointF(pos), QPointF(viewport.mapToGlobal(pos)), button, buttons, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(viewport, event)

    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    send(QEvent.Type.MouseButtonPress, a, left, left)
    for t in (0.25, 0.5, 0.75, 1.0):
        send(QEvent.Type.MouseMove, a + (b - a) * t, none, left)
    send(QEvent.Type.MouseButtonRelease, b, left, none)


def _draw(win: MainWindow, label: str, start: QPointF, end: QPointF) -> None:
    """Draw a box with the mouse in draw mode, with ``label`` as the current label."""
    assert win.session is not None
    win.session.add_label(label)
    win.labels.set_current_label(label)
    win.set_drawing(True)
    _drag(win, start, end)
    win.set_drawing(False)


def test_detect_accept_drag_undo_redo_export(qtbot: QtBot, window: MainWindow, tmp_path: Path) -> None:
    win = window
    session = win.session
    assert session is not None
    first = _go(win, "000001.png")

    # Ask for every shape by typing the query and pressing Enter in the AI panel.
    win.ai_panel.set_task(Task.detection)
    win.ai_panel.query.setFocus()  # the user clicks into the query field and types
    win.ai_panel.query.clear()
    qtbot.keyClicks(win.ai_panel.query, ", ".join(LABELS))
    qtbot.keyClick(win.ai_panel.query, Qt.Key.Key_Return)
    _wait_idle(qtbot, win)
    proposals = [row for row in session.boxes(first) if row.is_proposal]
    assert proposals, f"no proposals: {win.ai_panel.status.text()!r} {win.statusBar().currentMessage()!r}"
    assert {row.label for row in proposals} <= set(LABELS)
    assert all(0 < (row.score or 0) <= 1 for row in proposals)
    shown = win.canvas.items_by_id()
    assert set(shown) == {row.id for row in proposals}  # drawn, and distinct (dashed) until accepted
    assert all(item.row.is_proposal for item in shown.values())
    assert session.image(first).status is ImageStatus.has_proposals
    assert session.undo_stack.count() == 1  # one AI run is one undo step

    # Accept all with the keyboard.
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    rows = session.boxes(first)
    assert rows and all(row.state is BoxState.annotation and row.origin is Origin.accepted for row in rows)

    # Drag the first box by (+10, +5) image pixels with the mouse.
    target = rows[0]
    box = target.box
    size = image_size(session.folder / "000001.png")
    dx, dy = min(10.0, size[0] - box.x1), min(5.0, size[1] - box.y1)
    centre = QPointF((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
    _drag(win, centre, centre + QPointF(dx, dy))
    moved = next(row for row in session.boxes(first) if row.id == target.id)
    assert moved.box.x0 == pytest.approx(box.x0 + dx, abs=1.5)
    assert moved.box.y0 == pytest.approx(box.y0 + dy, abs=1.5)
    assert moved.box.width == pytest.approx(box.width)
    assert moved.origin is Origin.edited  # an accepted proposal a person moved

    # Undo and redo with the keyboard.
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    back = next(row for row in session.boxes(first) if row.id == target.id)
    assert back.box == box and back.origin is Origin.accepted
    assert win.canvas.items_by_id()[target.id].box == box  # the canvas follows the store
    qtbot.keyClick(win.canvas, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    again = next(row for row in session.boxes(first) if row.id == target.id)
    assert again.box == moved.box

    # Mark reviewed, export, and read the file with pycocotools.
    qtbot.keyClick(win.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert session.image(first).reviewed
    out = tmp_path / "export.json"
    report = win.export_to(out)
    assert report is not None
    coco = load_with_pycocotools(out)
    stored = session.boxes(first)
    image_entry = next(img for img in coco.dataset["images"] if img["file_name"] == "000001.png")
    assert (image_entry["width"], image_entry["height"]) == size
    exported = coco.loadAnns(coco.getAnnIds(imgIds=[image_entry["id"]]))
    assert sorted(tuple(round(v, 3) for v in a["bbox"]) for a in exported) == sorted(
        tuple(round(v, 3) for v in row.box.xywh) for row in stored
    )
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    assert sorted(names[a["category_id"]] for a in exported) == sorted(row.label for row in stored)
    assert min(a["id"] for a in coco.dataset["annotations"]) == 1
    # Only reviewed images: this one.
    reviewed = tmp_path / "reviewed.json"
    win.export_to(reviewed, reviewed_only=True)
    assert [img["file_name"] for img in json.loads(reviewed.read_text())["images"]] == ["000001.png"]


def test_drawn_box_survives_model_runs_and_proposals_can_be_rejected(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    image = _go(win, "000001.png")
    win.labels.new_label.setFocus()
    qtbot.keyClicks(win.labels.new_label, "circle")
    qtbot.keyClick(win.labels.new_label, Qt.Key.Key_Return)
    win.canvas.setFocus()
    assert win.labels.current_label() == "circle"

    qtbot.keyClick(win.canvas, Qt.Key.Key_R)  # draw mode
    _drag(win, QPointF(20, 20), QPointF(120, 90))
    (manual,) = session.boxes(image)
    assert manual.origin is Origin.manual and manual.label == "circle"
    assert manual.box.xyxy == pytest.approx((20, 20, 120, 90), abs=1.0)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Escape)

    for _ in range(2):  # running twice adds no duplicates and never touches the manual box
        win.ai_panel.query.setText("circle, square, triangle")
        win.run_model()
        _wait_idle(qtbot, win)
    rows = session.boxes(image)
    assert next(r for r in rows if r.id == manual.id) == manual
    proposals = [r for r in rows if r.is_proposal]
    assert proposals
    keys = [(r.label, r.box.xyxy) for r in proposals]
    assert len(keys) == len(set(keys))

    # The threshold slider hides weak proposals without deleting them.
    win.ai_panel.set_threshold(1.0)
    assert set(win.canvas.items_by_id()) == {manual.id}
    win.ai_panel.set_threshold(0.0)
    assert len(win.canvas.items_by_id()) == len(rows)

    # Double-clicking a proposal accepts just that one (the topmost box under the mouse).
    from annotator.gui.box_item import BoxItem

    chosen = proposals[0]
    centre = win.canvas.mapFromScene(QPointF((chosen.box.x0 + chosen.box.x1) / 2, (chosen.box.y0 + chosen.box.y1) / 2))
    top = next(item for item in win.canvas.items(centre) if isinstance(item, BoxItem))
    qtbot.mouseDClick(win.canvas.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    accepted = [r for r in session.boxes(image) if r.origin is Origin.accepted]
    assert [r.id for r in accepted] == [top.row.id]
    session.undo_stack.undo()

    win.reject_all()
    assert session.boxes(image) == [manual]
    session.undo_stack.undo()
    assert len(session.boxes(image)) == len(rows)


def test_text_answers_and_identify_need_a_box(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    _go(win, "photo-astronaut.jpg")
    win.ai_panel.set_task(Task.caption)
    win.ai_panel.query.clear()
    win.run_model()
    _wait_idle(qtbot, win)
    assert win.ai_panel.answer.toPlainText().strip()  # the model's text, shown as text
    assert win.session is not None and not win.session.boxes(win.session.current_id or -1)

    win.ai_panel.set_task(Task.identify)
    win.canvas.scene().clearSelection()
    win.run_model()
    assert "select one box" in win.ai_panel.status.text()


def test_rotated_photo_is_upright_and_corrupt_file_is_marked(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    rotated = _go(win, "photo-rotated.jpg")
    assert win.canvas.image_size == (451.0, 300.0)  # upright, as the cat was photographed
    assert (session.image(rotated).width, session.image(rotated).height) == (451, 300)

    broken = _go(win, "zz-broken.jpg")
    qtbot.waitUntil(lambda: session.image(broken).error is not None)
    assert session.image(broken).status is ImageStatus.unreadable
    assert "zz-broken.jpg" in session.image(broken).error
    row = win.files.model.row_of(broken)
    assert row is not None
    assert "unreadable" in win.files.model.data(win.files.model.index(row), Qt.ItemDataRole.ToolTipRole)

    # The app keeps working: next/previous, and a box on the rotated photo exports with upright size.
    qtbot.keyClick(win.canvas, Qt.Key.Key_A)
    assert session.current_id != broken
    _go(win, "photo-rotated.jpg")
    win.labels.new_label.setFocus()
    qtbot.keyClicks(win.labels.new_label, "cat")
    qtbot.keyClick(win.labels.new_label, Qt.Key.Key_Return)
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_R)
    _drag(win, QPointF(100, 50), QPointF(300, 250))
    out = session.folder.parent / "rotated-export.json"
    report = win.export_to(out)
    assert report is not None
    coco = load_with_pycocotools(out)
    assert "zz-broken.jpg" not in {img["file_name"] for img in coco.dataset["images"]}
    entry = next(img for img in coco.dataset["images"] if img["file_name"] == "photo-rotated.jpg")
    assert (entry["width"], entry["height"]) == (451, 300)
    (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[entry["id"]]))
    assert ann["bbox"] == pytest.approx([100, 50, 200, 200], abs=1.0)


def test_cancel_during_batch_leaves_a_consistent_store(qtbot: QtBot, window: MainWindow, tmp_path: Path) -> None:
    win = window
    session = win.session
    ai = win.ai
    assert session is not None and ai is not None
    for label in LABELS:
        session.add_label(label)
    from annotator.core.runs import detection_prompts

    prompts = detection_prompts(session.labels())
    assert win.start_batch(prompts, unreviewed_only=True)
    worker = ai._worker
    assert worker is not None
    with qtbot.waitSignal(worker.progress, timeout=HANG_MS):
        pass
    ai.cancel()
    qtbot.waitUntil(lambda: not ai.busy, timeout=HANG_MS)

    readable = [r for r in session.images() if r.error is None]
    with_proposals = [r for r in readable if r.proposals]
    assert 1 <= len([r for r in session.images() if r.proposals or r.error]) < len(session.images())
    # Every image the batch finished has all its labels' runs; the rest have none.
    for row in with_proposals:
        assert {b.prompt for b in session.boxes(row.id) if b.prompt} <= {f"[detection] {p.query}" for p in prompts}
    assert session.undo_stack.count() == 1
    assert "Batch" in session.undo_stack.text(0)
    session.undo_stack.undo()
    assert all(not r.proposals for r in session.images())
    session.undo_stack.redo()
    assert [r.id for r in session.images() if r.proposals] == [r.id for r in with_proposals]

    # What was saved survives reopening the store.
    saved = {r.id: session.boxes(r.id) for r in with_proposals}
    store_path = session.store.path
    win.close_project()
    from annotator.core.store import ProjectStore

    reopened = ProjectStore.open(store_path)
    try:
        assert {image_id: reopened.boxes(image_id) for image_id in saved} == saved
    finally:
        reopened.close()


def test_reopening_returns_to_where_the_user_left_off(
    qtbot: QtBot, image_folder: Path, tmp_path: Path, engine: LocalEngine
) -> None:
    store = tmp_path / "resume.minigpt.sqlite"
    first = MainWindow()
    qtbot.addWidget(first)
    first.open_folder(image_folder, store)
    _go(first, "photo-coffee.jpg")
    first.ai_panel.set_threshold(0.4)
    first.ai_panel.set_task(Task.refer)
    first.ai_panel.query.setText("the cup")
    assert first.ai is not None
    first.ai.use(engine, ModelSource("local", str(SHIPPED_DIR), device="cpu"))
    first.ai_panel.query.editingFinished.emit()  # the user leaves the field
    # Saved as it changed: what a crash (no close) would leave behind.
    assert first.session is not None
    assert first.session.store.setting("query") == "the cup"
    assert first.session.store.setting("task") == "refer"
    first.close()

    second = MainWindow()
    qtbot.addWidget(second)
    second.open_folder(image_folder, store)
    assert second.session is not None and second.session.current_id is not None
    assert second.session.image(second.session.current_id).path == "photo-coffee.jpg"
    assert second.ai_panel.threshold_value_f() == pytest.approx(0.4)
    assert second.ai_panel.current_task() is Task.refer
    assert second.ai_panel.query.text() == "the cup"
    # The model source is remembered and loads again in the background.
    assert second.ai is not None
    qtbot.waitUntil(lambda: second.ai.engine is not None, timeout=HANG_MS)
    assert "tiny" in second.model_status.text() or "Ready" in second.model_status.text()
    second.close()


def test_model_errors_show_in_the_ui(qtbot: QtBot, image_folder: Path, tmp_path: Path) -> None:
    win = MainWindow()
    qtbot.addWidget(win)
    win.open_folder(image_folder, tmp_path / "errors.minigpt.sqlite")
    win.run_model()  # no model yet
    assert "No model loaded" in win.ai_panel.status.text()
    missing = tmp_path / "no-such-model"
    win.load_model(ModelSource("local", str(missing)))
    assert win.ai is not None
    qtbot.waitUntil(lambda: not win.ai.busy, timeout=HANG_MS)
    assert str(missing) in win.ai_panel.status.text()
    win.load_model(ModelSource("server", "http://127.0.0.1:9"))
    qtbot.waitUntil(lambda: not win.ai.busy, timeout=HANG_MS)
    assert "127.0.0.1:9" in win.ai_panel.status.text()
    win.close()


def test_help_lists_every_shortcut(qtbot: QtBot, window: MainWindow) -> None:
    from annotator.core.shortcuts import SHORTCUTS
    from annotator.gui.dialogs import ShortcutsDialog

    dialog = ShortcutsDialog(window)
    qtbot.addWidget(dialog)
    texts = {dialog.table.item(row, 1).text() for row in range(dialog.table.rowCount())}
    assert texts == {s.text for s in SHORTCUTS}
    bound = {a.shortcut().toString() for a in window.actions_by_name.values() if not a.shortcut().isEmpty()}
    assert {"D", "A", "Ctrl+Z", "Del", "I", "Ctrl+B", "Ctrl+S"} <= bound


def test_huge_image_opens_within_bounded_memory() -> None:
    """A 12000×9000 JPEG opens in the real window (fresh process, offscreen) without a full-size decode."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "bench" / "annotator_startup.py"
    done = subprocess.run([sys.executable, str(bench), "--huge"], capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    huge = report["huge_image"]
    print("annotator start-up:", json.dumps(report))
    assert huge["shown_as"] == [12000.0, 9000.0]  # boxes live in full-resolution pixels
    assert huge["peak_increase_mb_at_most"] < huge["full_decode_mb"] / 2  # 309 MB decoded fully
    assert report["model"] == "local model tiny-shapes on cpu"


def test_resize_by_handle_relabel_delete_and_review_navigation(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    image = _go(win, "000002.png")
    for name in ("square", "circle"):
        session.add_label(name)
    _draw(win, "square", QPointF(30, 30), QPointF(90, 80))
    (row,) = session.boxes(image)

    # Click the box to select it, then drag its bottom-right handle.
    item = win.canvas.items_by_id()[row.id]
    qtbot.mouseClick(win.canvas.viewport(), Qt.MouseButton.LeftButton, pos=win.canvas.mapFromScene(QPointF(60, 55)))
    assert item.isSelected()
    corner = QPointF(row.box.x1, row.box.y1)
    _drag(win, corner, corner + QPointF(20, 15))
    (resized,) = session.boxes(image)
    assert resized.box.x0 == pytest.approx(row.box.x0) and resized.box.y0 == pytest.approx(row.box.y0)
    assert resized.box.x1 == pytest.approx(row.box.x1 + 20, abs=1.5)
    assert resized.box.y1 == pytest.approx(row.box.y1 + 15, abs=1.5)

    # Arrow keys nudge the selection: 1 px, Shift 10 px.
    win.canvas.setFocus()
    assert [r.id for r in win.canvas.selected_rows()] == [row.id], "the resized box stays selected"
    qtbot.keyClick(win.canvas, Qt.Key.Key_Right)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    (nudged,) = session.boxes(image)
    assert nudged.box.xyxy == pytest.approx(
        (resized.box.x0 + 1, resized.box.y0 + 10, resized.box.x1 + 1, resized.box.y1 + 10)
    )
    session.undo_stack.undo()
    session.undo_stack.undo()
    win.canvas.select({row.id})

    # Relabel with Ctrl+E, then delete with the Delete key; both undo.
    win.canvas.setFocus()
    win.labels.set_current_label("circle")
    qtbot.keyClick(win.canvas, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)  # opens the label chooser
    chooser = win.tools.chooser
    assert chooser is not None and chooser.isVisible()
    qtbot.waitUntil(chooser.isActiveWindow)
    qtbot.keyClicks(chooser.text, "circle")
    qtbot.keyClick(chooser.text, Qt.Key.Key_Return)
    assert session.boxes(image)[0].label == "circle"
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow)
    win.canvas.select({row.id})
    qtbot.keyClick(win.canvas, Qt.Key.Key_Delete)
    assert session.boxes(image) == []
    session.undo_stack.undo()
    session.undo_stack.undo()
    assert session.boxes(image)[0].label == "square"

    # Mark reviewed; the "Unreviewed" filter hides it once we move on; Ctrl+Shift+D skips reviewed images.
    qtbot.keyClick(win.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert session.image(image).status is ImageStatus.reviewed
    win.files.filter.setCurrentText("Unreviewed")
    qtbot.keyClick(win.canvas, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert session.current_id != image
    assert not session.image(session.current_id or -1).reviewed
    assert win.files.model.row_of(image) is None  # filtered out
    qtbot.keyClick(win.canvas, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert session.current_id != image  # previous *unreviewed* skips it too


def test_the_gui_command_s_window_opens_the_folder_and_loads_the_model(
    qtbot: QtBot, image_folder: Path, tmp_path: Path
) -> None:
    from annotator.gui.app import create_window

    win = create_window(
        image_folder, store=tmp_path / "cli.minigpt.sqlite", source=ModelSource("local", str(SHIPPED_DIR), "cpu")
    )
    qtbot.addWidget(win)
    assert win.session is not None and win.ai is not None
    assert len(win.session.images()) == len(list(image_folder.iterdir()))
    assert win.session.current_id is not None  # the first image is shown straight away
    # Headers are read in the background: every file gets its size, or is marked unreadable, without a visit.
    qtbot.waitUntil(lambda: all(row.width is not None or row.error for row in win.session.images()), timeout=HANG_MS)
    broken = win.session.image(win.session.store.image_id("zz-broken.jpg") or -1)
    assert broken.error is not None and broken.width is None
    qtbot.waitUntil(lambda: win.ai.engine is not None, timeout=HANG_MS)
    assert win.model_status.text().startswith("Ready: local model tiny-shapes")


def test_batch_dialog_offers_the_labels_and_the_scope(qtbot: QtBot) -> None:
    from annotator.core.records import LabelRow
    from annotator.gui.dialogs import BatchDialog

    dialog = BatchDialog([LabelRow("square", "#000000"), LabelRow("circle", "#111111")])
    qtbot.addWidget(dialog)
    dialog.checks[1].setChecked(False)
    dialog.extra.setText("kite")
    dialog.everything.setChecked(True)
    options = dialog.options()
    assert (options.labels, options.extra, options.unreviewed_only) == (("square",), "kite", False)


def test_label_manager_renames_merges_and_deletes_with_undo(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    image = _go(win, "000004.png")
    _draw(win, "sqare", QPointF(10, 10), QPointF(60, 60))
    (row,) = session.boxes(image)

    win.rename_label("sqare", "square")
    assert [win.labels.list.item(i).text() for i in range(win.labels.list.count())] == ["square"]
    assert win.canvas.items_by_id()[row.id].row.label == "square"  # the canvas shows it at once
    win.delete_label("square")  # still used: refused with the reason, nothing changes
    assert "use the label" in win.ai_panel.status.text()
    session.undo_stack.undo()
    assert session.boxes(image)[0].label == "sqare"
    session.add_label("spare")
    win.delete_label("spare")
    assert "spare" not in [label.name for label in session.labels()]
    session.undo_stack.undo()
    assert "spare" in [label.name for label in session.labels()]


def test_identify_suggests_a_label_for_the_selected_box(qtbot: QtBot, window: MainWindow) -> None:
    win = window
    session = win.session
    assert session is not None
    image = _go(win, "000001.png")
    _draw(win, "thing", QPointF(5, 5), QPointF(120, 110))
    (row,) = session.boxes(image)
    win.canvas.select({row.id})

    win.ai_panel.set_task(Task.identify)
    win.ai_panel.query.clear()
    win.run_model()
    _wait_idle(qtbot, win)
    answer = win.ai_panel.answer.toPlainText()
    assert answer  # the model's words are shown
    assert session.boxes(image) == [row]  # and nothing was changed by the model itself
    assert win.ai_panel.apply_answer.isVisible(), answer  # the shapes model answers with a shape's name
    qtbot.mouseClick(win.ai_panel.apply_answer, Qt.MouseButton.LeftButton)
    (relabelled,) = session.boxes(image)
    assert relabelled.label == win._suggested_label and relabelled.label in answer
    session.undo_stack.undo()
    assert session.boxes(image)[0].label == "thing"


def _coco_for(folder: Path, name: str, boxes: int, path: Path) -> Path:
    """A COCO file with ``boxes`` boxes in a grid on the image ``name`` of ``folder``."""
    width, height = image_size(folder / name)
    annotations = [
        {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [(i % 20) * 10, (i // 20) * 10, 8, 8]}
        for i in range(boxes)
    ]
    image = {"id": 1, "file_name": name, "width": width, "height": height}
    path.write_text(
        json.dumps({"images": [image], "categories": [{"id": 1, "name": "cup"}], "annotations": annotations})
    )
    return path


def test_coco_import_runs_off_the_gui_thread_and_is_one_undo_step(
    qtbot: QtBot, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 10. Before: the import ran inside import_from, on the GUI thread, and froze the window."""
    import threading

    from annotator.core.exchange import read_coco_with_report

    # Where the slow parts run: reading the file, and comparing its boxes with the project's.
    threads: dict[str, set[int]] = {"read": set(), "compare": set()}
    read, iou = read_coco_with_report, Box.iou

    def watched_read(*args: Any, **kwargs: Any) -> Any:
        threads["read"].add(threading.get_ident())
        return read(*args, **kwargs)

    def watched_iou(self: Box, other: Box) -> float:
        threads["compare"].add(threading.get_ident())
        return iou(self, other)

    monkeypatch.setattr("annotator.core.exchange.read_coco_with_report", watched_read)
    monkeypatch.setattr(Box, "iou", watched_iou)
    win = MainWindow()
    qtbot.addWidget(win)
    win.open_folder(image_folder, tmp_path / "import.minigpt.sqlite")
    session = win.session
    assert session is not None
    target = _go(win, "photo-coffee.jpg")
    coco = _coco_for(image_folder, "photo-coffee.jpg", 300, tmp_path / "cups.json")

    # The person's own edit: one undo step.
    _draw(win, "saucer", QPointF(300, 200), QPointF(360, 240))
    assert session.undo_stack.count() == 1

    started = win.import_from(coco)
    assert len(session.boxes(target)) == 1  # nothing written yet: the file is read in the background
    assert started and win.importer is not None and win.importer.busy
    progress: list[tuple[int, int]] = []  # the worker's reports are delivered by the event loop, from here on
    win.importer.progress.connect(lambda done, total: progress.append((done, total)))
    qtbot.waitUntil(lambda: win.importer is not None and not win.importer.busy, timeout=HANG_MS)
    gui = threading.get_ident()
    assert threads["read"] and gui not in threads["read"]  # read in a worker
    assert progress == [(1, 1), (1, 1)]  # the file's one image read, then matched
    message = win.statusBar().currentMessage()
    assert message == "Imported cups.json: 300 boxes added on 1 images, 0 already there"
    assert len(session.boxes(target)) == 301
    assert len(win.canvas.items_by_id()) == 301  # the current image shows them at once

    # The import is one undo step (issue 17 bug 5), after the person's edit: undone and redone in order.
    assert session.undo_stack.count() == 2
    session.undo_stack.undo()
    assert [row.label for row in session.boxes(target)] == ["saucer"]
    session.undo_stack.undo()
    assert session.boxes(target) == []
    session.undo_stack.redo()
    session.undo_stack.redo()
    assert len(session.boxes(target)) == 301

    # Twice adds nothing, and the 300 boxes are compared with the project's in a worker, not on the GUI thread.
    threads["compare"].clear()
    assert win.import_from(coco)
    qtbot.waitUntil(lambda: win.importer is not None and not win.importer.busy, timeout=HANG_MS)
    assert threads["compare"] and gui not in threads["compare"]
    assert win.statusBar().currentMessage() == "Imported cups.json: 0 boxes added on 1 images, 300 already there"
    # A cancelled import changes nothing, even when the file was read already.
    other = _coco_for(image_folder, "photo-astronaut.jpg", 50, tmp_path / "astronaut.json")
    assert win.import_from(other)
    assert not win.import_from(coco)  # one at a time
    assert "still running" in win.ai_panel.status.text()
    win.importer.cancel()
    qtbot.waitUntil(lambda: win.importer is not None and not win.importer.busy, timeout=HANG_MS)
    assert win.statusBar().currentMessage() == "Import of astronaut.json cancelled: nothing was changed"
    assert session.boxes(session.store.image_id("photo-astronaut.jpg") or -1) == []

    # A broken file: one line saying why, nothing changed.
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    assert win.import_from(broken)
    qtbot.waitUntil(lambda: win.importer is not None and not win.importer.busy, timeout=HANG_MS)
    assert win.ai_panel.status.text().startswith("Import failed, nothing was changed: ")
    assert "\n" not in win.ai_panel.status.text()
    assert len(session.boxes(target)) == 301
    win.close()


def test_the_qt_binding_does_not_take_references_from_none() -> None:
    """PySide6 6.12.0 on Python < 3.12 drops a reference to None on every call that returns nothing (setPen,
    fillRect, setObjectName...). Painting an image with 10k boxes ran None's count out and aborted the app
    ("Fatal Python error: none_dealloc"). pyproject.toml excludes that release there."""
    import sys

    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(1000):
        probe.setObjectName("probe")
    assert sys.getrefcount(None) >= before - 10, "this PySide6 frees None: install another release (see pyproject)"


def test_store_problems_show_as_one_line_with_the_fix_never_as_a_traceback(
    qtbot: QtBot, image_folder: Path, tmp_path: Path
) -> None:
    """Issue 13 item 19. Before: a hand-edited row opened, then every view of it raised a raw validation error."""
    import sqlite3

    path = tmp_path / "edited.minigpt.sqlite"
    win = MainWindow()
    qtbot.addWidget(win)
    win.open_folder(image_folder, path)
    target = _go(win, "photo-coffee.jpg")
    _draw(win, "saucer", QPointF(300, 200), QPointF(360, 240))
    win.close_project()

    # Edited by hand while the app was closed: refused on opening, naming the row and the command that mends it.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE boxes SET x0 = x1 + 5")
    db.close()
    win.open_folder(image_folder, path)
    assert win.session is None
    status = win.ai_panel.status.text()
    assert "row id = 1 of table boxes has x0 >= x1" in status and "DELETE FROM boxes WHERE id = 1" in status
    assert "\n" not in status

    # Mended, it opens; edited by another program while open: the view says what is wrong instead of failing.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE boxes SET x0 = x1 - 20")
    db.close()
    win.open_folder(image_folder, path)
    assert win.session is not None
    assert len(win.session.boxes(target)) == 1
    with sqlite3.connect(path) as db:
        db.execute("UPDATE boxes SET y0 = y1 + 1")
    db.close()
    _go(win, "photo-astronaut.jpg")
    _go(win, "photo-coffee.jpg")
    assert "row id = 1 of table boxes cannot be read" in win.ai_panel.status.text()
    assert win.canvas.items_by_id() == {}
    win.close()


def test_riskiest_images_first_in_the_list_and_by_shortcut(qtbot: QtBot, window: MainWindow) -> None:
    """After a batch, "Riskiest first" lists the images by their weakest proposal's score, and Ctrl+Shift+R goes to
    the riskiest image still to review, then the next one once that is marked reviewed."""
    win = window
    session = win.session
    assert session is not None
    session.add_label("circle")  # one label keeps the batch short
    from annotator.core.runs import detection_prompts

    assert win.start_batch(detection_prompts(session.labels()), unreviewed_only=True)
    _wait_idle(qtbot, win)
    scored = sorted((r.lowest_score, r.path) for r in session.images() if r.lowest_score is not None)
    assert len(scored) >= 3, "the shipped model proposes boxes on the shape scenes"

    win.files.order.setCurrentText("Riskiest first")
    listed = [win.files.model.rows[i] for i in range(win.files.model.rowCount())]
    assert [(r.lowest_score, r.path) for r in listed[: len(scored)]] == scored
    assert all(r.lowest_score is None for r in listed[len(scored) :])
    label = win.files.model.data(win.files.model.index(0))
    assert f"lowest {scored[0][0]:.2f}" in str(label)

    riskiest = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(win.canvas, Qt.Key.Key_R, riskiest)
    assert session.current_id == session.store.image_id(scored[0][1])
    warned = ModalAnswer("Mark reviewed")  # it still has proposals: the window asks first
    win.toggle_reviewed()
    assert warned.answered
    qtbot.waitUntil(win.isActiveWindow)  # the keys go to the window again once the dialog is gone
    qtbot.keyClick(win.canvas, Qt.Key.Key_R, riskiest)
    assert session.current_id == session.store.image_id(scored[1][1])


def test_dragging_a_proposal_makes_it_edited_and_the_export_keeps_the_proposal(
    qtbot: QtBot, window: MainWindow, tmp_path: Path
) -> None:
    """A person drags a box the model proposed: it becomes their edited box, and the COCO export says so, with the
    proposal (box, label, score) beside it and without the model's score as the box's own."""
    win = window
    session = win.session
    assert session is not None
    first = _go(win, "000002.png")
    win.ai_panel.set_task(Task.detection)
    win.ai_panel.query.setText(", ".join(LABELS))
    win.run_model()
    _wait_idle(qtbot, win)
    proposals = {row.id: row for row in session.boxes(first) if row.is_proposal}
    assert proposals, f"no proposals: {win.ai_panel.status.text()!r}"
    assert all(row.origin is Origin.proposed and row.model_version for row in proposals.values())

    target = max(proposals.values(), key=lambda row: row.box.area)  # the largest: easy to grab
    size = image_size(session.folder / "000002.png")
    dx = 6.0 if target.box.x1 + 6 <= size[0] else -6.0
    centre = QPointF((target.box.x0 + target.box.x1) / 2, (target.box.y0 + target.box.y1) / 2)
    win.canvas.setFocus()
    _drag(win, centre, centre + QPointF(dx, 0))

    (edited,) = [row for row in session.boxes(first) if row.origin is Origin.edited]  # the topmost box there
    before = proposals[edited.id]
    assert (edited.state, edited.score) == (BoxState.annotation, None)
    assert edited.box.x0 == pytest.approx(before.box.x0 + dx, abs=1.5)
    assert edited.original is not None
    assert (edited.original.box, edited.original.label, edited.original.score) == (
        before.box,
        before.label,
        before.score,
    )
    assert edited.changed_at is not None and edited.changed_at >= (before.changed_at or edited.changed_at)
    assert not win.canvas.items_by_id()[edited.id].row.is_proposal  # drawn as the person's box now

    pending = any(row.is_proposal for row in session.boxes(first))
    warned = ModalAnswer("Mark reviewed") if pending else None  # other proposals pending: the window asks first
    qtbot.keyClick(win.canvas, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert warned is None or warned.answered
    out = tmp_path / "export.json"
    assert win.export_to(out) is not None
    coco = load_with_pycocotools(out)
    (exported,) = [a for a in coco.dataset["annotations"] if a.get("attributes", {}).get("origin") == "edited"]
    assert "score" not in exported
    assert exported["bbox"] == pytest.approx(list(edited.box.xywh))
    attributes = exported["attributes"]
    assert (attributes["original_label"], attributes["original_score"]) == (before.label, before.score)
    original = [attributes[f"original_{k}"] for k in ("x", "y", "width", "height")]
    assert original == pytest.approx(list(before.box.xywh))
    assert (attributes["model_version"], attributes["task"]) == (before.model_version, "detection")
    assert attributes["prompt"] == before.prompt
