"""Issue 17's object list, canvas basics and label tools, driven in the real main window with keys and the mouse
(pytest-qt, offscreen). No model is needed: proposals are stored as a model run stores them (``proposal_rows``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot
from test_annotator_gui import _drag, _go

from annotator.core import edits
from annotator.core.folder import open_project
from annotator.core.merging import proposal_rows
from annotator.core.objects import PASTE_OFFSET, matching_labels, pasted
from annotator.core.records import BoxRow, BoxState
from annotator.gui.label_chooser import LabelChooser
from annotator.gui.main_window import MainWindow
from model.annotations import Box, Origin, Proposal, Task
from model.synthetic.shapes import make_shapes

CTRL, SHIFT, ALT = (
    Qt.KeyboardModifier.ControlModifier,
    Qt.KeyboardModifier.ShiftModifier,
    Qt.KeyboardModifier.AltModifier,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shape scenes, a white and a black image (for what must show on any background) and a large scan."""
    root = tmp_path_factory.mktemp("canvas")
    make_shapes(root, images=2, seed=5, exif_fraction=0.0)
    images = root / "images"
    Image.new("RGB", (400, 300), "white").save(images / "plain-white.png")
    Image.new("RGB", (400, 300), "black").save(images / "plain-black.png")
    gradient = Image.linear_gradient("L").resize((3000, 6000)).convert("RGB")
    gradient.save(images / "zz-large.jpg", quality=80)
    return images


@pytest.fixture
def win(qtbot: QtBot, folder: Path, tmp_path: Path) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.open_folder(folder, tmp_path / "project.minigpt.sqlite")
    window.resize(1200, 800)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    window.canvas.setFocus()
    return window


def _propose(win: MainWindow, image_id: int, *boxes: tuple[str, float, Box]) -> list[BoxRow]:
    """Store proposals the way a model run does (one undo step of ``proposal_rows``)."""
    assert win.session is not None
    found = [
        Proposal(box=box, label=label, score=score, task=Task.detection, prompt=label, model_version="test")
        for label, score, box in boxes
    ]
    rows = proposal_rows(found, image_id, win.session.boxes(image_id))
    win.session.push(edits.add_boxes("Detect", image_id, rows))
    return [row for row in win.session.boxes(image_id) if row.is_proposal]


def _click(win: MainWindow, qtbot: QtBot, at: QPointF, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier):
    qtbot.mouseClick(win.canvas.viewport(), Qt.MouseButton.LeftButton, modifier, win.canvas.mapFromScene(at))


def _move(win: MainWindow, at: QPointF, buttons: Qt.MouseButton = Qt.MouseButton.NoButton) -> None:
    viewport = win.canvas.viewport()
    pos = QPointF(win.canvas.mapFromScene(at))
    event = QMouseEvent(
        QEvent.Type.MouseMove,
        pos,
        viewport.mapToGlobal(pos),
        Qt.MouseButton.NoButton,
        buttons,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(viewport, event)


def _table_states(win: MainWindow) -> dict[str, str]:
    model = win.tools.objects.model
    return {model.index(i, 1).data(): model.index(i, 3).data() for i in range(model.rowCount())}


def test_the_object_list_shows_every_box_with_its_state_and_follows_the_selection_both_ways(
    qtbot: QtBot, win: MainWindow
) -> None:
    session = win.session
    assert session is not None
    image = _go(win, "000001.png")
    for name in ("square", "circle", "triangle", "star"):
        session.add_label(name)
    # A manual box drawn with the mouse, and three proposals stacked on objects, as a detector leaves them.
    win.labels.set_current_label("square")
    win.set_drawing(True)
    _drag(win, QPointF(10, 10), QPointF(60, 50))
    win.set_drawing(False)
    _propose(
        win,
        image,
        ("circle", 0.9, Box(x0=100, y0=100, x1=150, y1=150)),
        ("triangle", 0.6, Box(x0=160, y0=20, x1=220, y1=80)),
        ("star", 0.4, Box(x0=20, y0=150, x1=80, y1=210)),
    )
    rows = {row.label: row for row in session.boxes(image)}
    assert _table_states(win) == {"square": "manual", "circle": "proposal", "triangle": "proposal", "star": "proposal"}

    # Accept one with a click and Enter, drag another: the list says accepted and edited.
    _click(win, qtbot, QPointF(125, 125))
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    _click(win, qtbot, QPointF(190, 50))
    _drag(win, QPointF(190, 50), QPointF(200, 60))
    assert _table_states(win) == {"square": "manual", "circle": "accepted", "triangle": "edited", "star": "proposal"}
    counts = [win.tools.objects.counts.item(i).text() for i in range(win.tools.objects.counts.count())]
    assert counts == ["square: 1", "circle: 1", "triangle: 1", "star: 1 (1 proposed)"]
    scores = {win.tools.objects.model.index(i, 1).data(): win.tools.objects.model.index(i, 2).data() for i in range(4)}
    assert scores["star"] == "0.40" and scores["circle"] == "0.90" and scores["triangle"] == ""  # an edit drops it

    # Canvas → list: clicking a box selects its row, and the label list follows the box.
    _click(win, qtbot, QPointF(50, 180))
    assert win.tools.objects.selected_ids() == {rows["star"].id}
    assert win.labels.current_label() == "star"
    assert "w 60, h 60" in win.tools.selection.text()

    # List → canvas: clicking a row selects the box; Ctrl+click adds one.
    table = win.tools.objects.table
    square_row = win.tools.objects.model.row_of(rows["square"].id)
    circle_row = win.tools.objects.model.row_of(rows["circle"].id)
    assert square_row is not None and circle_row is not None
    qtbot.mouseClick(
        table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualRect(table.model().index(square_row, 1)).center()
    )
    assert {row.id for row in win.canvas.selected_rows()} == {rows["square"].id}
    assert win.labels.current_label() == "square"
    qtbot.mouseClick(
        table.viewport(), Qt.MouseButton.LeftButton, CTRL, table.visualRect(table.model().index(circle_row, 1)).center()
    )
    assert {row.id for row in win.canvas.selected_rows()} == {rows["square"].id, rows["circle"].id}
    assert win.tools.selection.text() == "2 boxes selected"

    # Another image: the list shows its boxes (none).
    qtbot.keyClick(win.canvas, Qt.Key.Key_D)
    assert win.tools.objects.model.rowCount() == 0 and win.tools.objects.counts.count() == 0


def test_boxes_hide_one_by_one_by_label_and_all_at_once_without_changing_the_store(
    qtbot: QtBot, win: MainWindow
) -> None:
    session = win.session
    assert session is not None
    image = _go(win, "000002.png")
    a, b, c = _propose(
        win,
        image,
        ("circle", 0.9, Box(x0=10, y0=10, x1=60, y1=60)),
        ("circle", 0.8, Box(x0=100, y0=100, x1=150, y1=150)),
        ("square", 0.7, Box(x0=160, y0=10, x1=220, y1=70)),
    )
    items = win.canvas.items_by_id()
    table = win.tools.objects.table

    # One box: Space on its row's Shown cell unticks it; the canvas hides it and deselects it.
    win.canvas.select({a.id})
    table.setFocus()
    table.setCurrentIndex(table.model().index(win.tools.objects.model.row_of(a.id), 0))
    qtbot.keyClick(table.viewport(), Qt.Key.Key_Space)
    assert not items[a.id].isVisible() and items[b.id].isVisible() and items[c.id].isVisible()
    assert not items[a.id].isSelected()
    # A click on the hidden box's place selects nothing there.
    _click(win, qtbot, QPointF(35, 35))
    assert win.canvas.selected_rows() == []

    # A label: untick "square" in the counts; it stays hidden on the next image's boxes too, until ticked again.
    counts = win.tools.objects.counts
    square = next(counts.item(i) for i in range(counts.count()) if counts.item(i).text().startswith("square"))
    counts.setFocus()
    counts.setCurrentItem(square)
    qtbot.keyClick(counts.viewport(), Qt.Key.Key_Space)
    assert not items[c.id].isVisible() and items[b.id].isVisible()
    assert len(session.boxes(image)) == 3  # a view filter: the store keeps every box

    # All boxes, their labels, their scores (Ctrl+H, Ctrl+Shift+H, Ctrl+Alt+H), each back with a second press.
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_H, CTRL)
    assert not items[b.id].isVisible()
    qtbot.keyClick(win.canvas, Qt.Key.Key_H, CTRL)
    assert items[b.id].isVisible() and not items[a.id].isVisible()  # the per-box choice survives
    assert items[b.id].tag.isVisible() and items[b.id].tag.text == "circle 0.80"
    qtbot.keyClick(win.canvas, Qt.Key.Key_H, ALT | CTRL)
    assert items[b.id].tag.text == "circle"
    qtbot.keyClick(win.canvas, Qt.Key.Key_H, SHIFT | CTRL)
    assert not items[b.id].tag.isVisible()
    qtbot.keyClick(win.canvas, Qt.Key.Key_H, SHIFT | CTRL)
    qtbot.keyClick(win.canvas, Qt.Key.Key_H, ALT | CTRL)
    assert items[b.id].tag.isVisible() and items[b.id].tag.text == "circle 0.80"


def test_zoom_readout_100_percent_fit_width_and_the_overview(qtbot: QtBot, win: MainWindow) -> None:
    _go(win, "zz-large.jpg")
    canvas = win.canvas
    assert canvas.image_size == (3000.0, 6000.0)  # a scanned page: taller than the view
    fitted = canvas.zoom_scale()
    assert fitted < 0.5 and win.tools.zoom_label.text() == f"{fitted * 100:.0f}%"

    qtbot.keyClick(canvas, Qt.Key.Key_0, CTRL)
    assert canvas.zoom_scale() == pytest.approx(1.0)
    assert win.tools.zoom_label.text() == "100%"
    area = canvas.visible_area()
    assert area.width() == pytest.approx(canvas.viewport().width(), abs=2)

    # The overview's frame is what the canvas shows; a click in the overview moves the canvas there.
    nav = win.tools.navigator
    assert nav.frame.rect() == canvas.visible_area()
    target = QPointF(2000, 4500)
    qtbot.mouseClick(nav.viewport(), Qt.MouseButton.LeftButton, pos=nav.mapFromScene(target))
    centre = canvas.visible_area().center()
    assert abs(centre.x() - target.x()) < 30 and abs(centre.y() - target.y()) < 30
    assert nav.frame.rect() == canvas.visible_area()

    # Fit width: the whole width shows, from the top edge.
    qtbot.keyClick(canvas, Qt.Key.Key_F, CTRL | SHIFT)
    area = canvas.visible_area()
    assert area.left() == pytest.approx(0, abs=1) and area.right() == pytest.approx(3000, abs=1)
    assert area.top() == pytest.approx(0, abs=1) and area.height() < 6000
    assert win.tools.zoom_label.text() == f"{canvas.zoom_scale() * 100:.0f}%"


def test_status_bar_shows_cursor_selected_box_and_image_position(qtbot: QtBot, win: MainWindow) -> None:
    session = win.session
    assert session is not None
    ids = [row.id for row in session.images()]
    image = _go(win, "000002.png")
    assert win.tools.position.text() == f"image {ids.index(image) + 1} / {len(ids)}"
    _move(win, QPointF(120.4, 77.6))
    assert win.tools.cursor.text() in {"x 120, y 77", "x 120, y 78", "x 119, y 77", "x 121, y 78"}
    _move(win, QPointF(-50, -50))  # off the image: no coordinates
    assert win.tools.cursor.text() == ""
    _propose(win, image, ("circle", 0.9, Box(x0=30, y0=40, x1=90, y1=120)))
    _click(win, qtbot, QPointF(60, 80))
    assert win.tools.selection.text() == "box x 30, y 40, w 60, h 80"
    qtbot.keyClick(win.canvas, Qt.Key.Key_Right, SHIFT)  # a nudge updates it
    assert win.tools.selection.text() == "box x 40, y 40, w 60, h 80"
    qtbot.keyClick(win.canvas, Qt.Key.Key_A)
    assert win.tools.position.text() == f"image {ids.index(image)} / {len(ids)}"


def _back_to_canvas(qtbot: QtBot, win: MainWindow) -> None:
    """After a dialog closed: the main window has the keyboard again, the canvas the focus."""
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow)
    win.canvas.setFocus()


def _active_chooser(qtbot: QtBot, win: MainWindow) -> LabelChooser:
    """The label chooser Ctrl+E opened, once it has the keyboard (as it does on a desktop)."""
    chooser = win.tools.chooser
    assert chooser is not None and chooser.isVisible()
    qtbot.waitUntil(lambda: chooser.isActiveWindow() and chooser.text.hasFocus())
    return chooser


def _dark_and_light(image: QImage, xs: range, y: int) -> tuple[int, int]:
    colours = [QColor(image.pixel(x, yy)) for x in xs for yy in (y - 1, y, y + 1)]
    return sum(c.lightness() < 60 for c in colours), sum(c.lightness() > 200 for c in colours)


@pytest.mark.parametrize("name", ["plain-white.png", "plain-black.png"])
def test_the_draft_rectangle_and_crosshair_guides_show_on_any_background(
    qtbot: QtBot, win: MainWindow, name: str
) -> None:
    assert win.session is not None
    image = _go(win, name)
    win.session.add_label("thing")
    canvas = win.canvas
    qtbot.keyClick(canvas, Qt.Key.Key_R)  # draw mode
    start, end = QPointF(100, 80), QPointF(300, 220)
    _move(win, QPointF(200, 150))
    # Crosshair guides: the cursor's row crosses the whole image in both a dark and a light colour.
    grab = canvas.viewport().grab().toImage()
    row = canvas.mapFromScene(QPointF(200, 150)).y()
    left, right = canvas.mapFromScene(QPointF(5, 0)).x(), canvas.mapFromScene(QPointF(395, 0)).x()
    dark, light = _dark_and_light(grab, range(left, right, 7), row)
    assert dark > 10 and light > 10, (dark, light)

    # The draft rectangle while dragging: its top edge, away from the guides, shows dark and light too.
    viewport = canvas.viewport()
    a = QPointF(canvas.mapFromScene(start))
    press = QMouseEvent(
        QEvent.Type.MouseButtonPress,
        a,
        viewport.mapToGlobal(a),
        Qt.MouseButton.LeftButton,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(viewport, press)
    _move(win, end, Qt.MouseButton.LeftButton)
    grab = canvas.viewport().grab().toImage()
    top = canvas.mapFromScene(start).y()
    x0, x1 = canvas.mapFromScene(QPointF(120, 0)).x(), canvas.mapFromScene(QPointF(280, 0)).x()
    dark, light = _dark_and_light(grab, range(x0, x1, 3), top)
    assert dark > 5 and light > 5, (dark, light)
    b = QPointF(canvas.mapFromScene(end))
    release = QMouseEvent(
        QEvent.Type.MouseButtonRelease,
        b,
        viewport.mapToGlobal(b),
        Qt.MouseButton.LeftButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(viewport, release)
    assert [row.box.xyxy for row in win.session.boxes(image)] == [pytest.approx((100, 80, 300, 220), abs=1)]
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    # Out of draw mode the guides are gone: the cursor's row, left of the new box, is the plain image again.
    grab = canvas.viewport().grab().toImage()
    dark, light = _dark_and_light(grab, range(left, canvas.mapFromScene(QPointF(95, 0)).x(), 3), row)
    assert (dark == 0) != (light == 0), (dark, light)


def test_copy_paste_and_duplicate_are_undoable_manual_boxes(qtbot: QtBot, win: MainWindow) -> None:
    session = win.session
    assert session is not None
    first = _go(win, "000001.png")
    (proposal,) = _propose(win, first, ("circle", 0.9, Box(x0=30, y0=40, x1=90, y1=120)))
    _click(win, qtbot, QPointF(60, 80))
    qtbot.keyClick(win.canvas, Qt.Key.Key_C, CTRL)

    # Paste onto the next image: same place, the person's own box; undo removes it.
    qtbot.keyClick(win.canvas, Qt.Key.Key_D)
    second = session.current_id
    assert second is not None and second != first
    steps = session.undo_stack.count()
    qtbot.keyClick(win.canvas, Qt.Key.Key_V, CTRL)
    (pasted,) = session.boxes(second)
    assert pasted.box == proposal.box and pasted.label == "circle"
    assert not pasted.is_proposal and pasted.origin is Origin.manual and pasted.score is None
    assert {row.id for row in win.canvas.selected_rows()} == {pasted.id}  # ready to be moved
    assert session.undo_stack.count() == steps + 1
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, CTRL)
    assert session.boxes(second) == []

    # Paste back onto the image it came from, and duplicate that copy: each is shifted so nothing hides.
    qtbot.keyClick(win.canvas, Qt.Key.Key_A)
    qtbot.keyClick(win.canvas, Qt.Key.Key_V, CTRL)
    copy = next(row for row in session.boxes(first) if row.id != proposal.id)
    assert copy.box.xyxy == pytest.approx((40, 50, 100, 130))
    qtbot.keyClick(win.canvas, Qt.Key.Key_D, CTRL)
    boxes = sorted(row.box.x0 for row in session.boxes(first))
    assert boxes == pytest.approx([30, 40, 50])
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, CTRL)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, CTRL)
    assert session.boxes(first) == [proposal]
    qtbot.keyClick(win.canvas, Qt.Key.Key_Y, CTRL)
    assert len(session.boxes(first)) == 2


def test_digit_keys_search_the_label_chooser_and_colour_overrides(
    qtbot: QtBot, win: MainWindow, tmp_path: Path, folder: Path
) -> None:
    session = win.session
    assert session is not None
    image = _go(win, "000001.png")
    for name in ("square", "circle", "triangle"):
        session.add_label(name)

    # Digit keys pick the n-th label; a digit past the end changes nothing.
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_2)
    assert win.labels.current_label() == "circle"
    qtbot.keyClick(win.canvas, Qt.Key.Key_3)
    assert win.labels.current_label() == "triangle"
    qtbot.keyClick(win.canvas, Qt.Key.Key_9)
    assert win.labels.current_label() == "triangle"

    # The search field narrows the list; Enter makes the best match current.
    win.labels.search.setFocus()  # the person clicks into the field: letters type there, not into shortcuts
    qtbot.keyClicks(win.labels.search, "CIR")
    shown = [
        win.labels.list.item(i).text() for i in range(win.labels.list.count()) if not win.labels.list.item(i).isHidden()
    ]
    assert shown == ["circle"]
    qtbot.keyClick(win.labels.search, Qt.Key.Key_Return)
    assert win.labels.current_label() == "circle"
    win.labels.search.clear()

    # Ctrl+E asks: nothing is relabelled until a label is chosen; Escape leaves the box as it was.
    (row,) = _propose(win, image, ("square", 0.9, Box(x0=30, y0=40, x1=90, y1=120)))
    _click(win, qtbot, QPointF(60, 80))
    assert win.labels.current_label() == "square"  # follows the selected box
    qtbot.keyClick(win.canvas, Qt.Key.Key_E, CTRL)
    chooser = _active_chooser(qtbot, win)
    assert session.boxes(image)[0].label == "square"
    qtbot.keyClick(chooser.text, Qt.Key.Key_Escape)
    assert not chooser.isVisible() and session.boxes(image)[0].label == "square"
    # Type to search, Down to the next match, Enter to apply.
    _back_to_canvas(qtbot, win)
    qtbot.keyClick(win.canvas, Qt.Key.Key_E, CTRL)
    chooser = _active_chooser(qtbot, win)
    qtbot.keyClicks(chooser.text, "le")
    assert [chooser.list.item(i).text() for i in range(chooser.list.count())] == ["circle", "triangle"]
    qtbot.keyClick(chooser.text, Qt.Key.Key_Down)
    assert chooser.list.currentItem().text() == "triangle"
    qtbot.keyClick(chooser.text, Qt.Key.Key_Up)
    qtbot.keyClick(chooser.text, Qt.Key.Key_Return)
    assert session.boxes(image)[0].label == "circle" and win.labels.current_label() == "circle"
    # A name matching no label creates it.
    _back_to_canvas(qtbot, win)
    qtbot.keyClick(win.canvas, Qt.Key.Key_E, CTRL)
    chooser = _active_chooser(qtbot, win)
    qtbot.keyClicks(chooser.text, "hexagon")
    qtbot.keyClick(chooser.text, Qt.Key.Key_Return)
    assert session.boxes(image)[0].label == "hexagon" and "hexagon" in [label.name for label in session.labels()]
    _back_to_canvas(qtbot, win)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, CTRL)
    assert session.boxes(image)[0].label == "circle"

    # A colour override: chosen in the colour dialog, drawn on the canvas, undoable, remembered in the store.
    derived = next(label.color for label in session.labels() if label.name == "circle")
    win.tools.choose_color("circle")  # what the label list's context menu "Colour…" does
    dialog = win.tools.color_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.setCurrentColor(QColor("#123456"))
    dialog.accept()
    _back_to_canvas(qtbot, win)
    item = win.canvas.items_by_id()[row.id]
    assert item.color == QColor("#123456")
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, CTRL)
    assert win.canvas.items_by_id()[row.id].color == QColor(derived)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Y, CTRL)
    win.close_project()
    store = open_project(folder, tmp_path / "project.minigpt.sqlite")
    try:
        assert next(label.color for label in store.labels() if label.name == "circle") == "#123456"
    finally:
        store.close()


_coords = st.floats(min_value=-500, max_value=3000, allow_nan=False)


@given(
    corners=st.lists(st.tuples(_coords, _coords, _coords, _coords), min_size=1, max_size=5),
    size=st.tuples(st.integers(1, 2000), st.integers(1, 2000)),
    shift=st.booleans(),
)
def test_pasted_boxes_are_manual_inside_the_image_and_keep_their_size_when_they_fit(
    corners: list[tuple[float, float, float, float]], size: tuple[int, int], shift: bool
) -> None:
    width, height = size
    rows = []
    for x0, y0, x1, y1 in corners:
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        box = Box(x0=x0, y0=y0, x1=x1 + 1, y1=y1 + 1)
        rows.append(BoxRow(1, "thing", box, BoxState.proposal, origin=Origin.proposed, score=0.5, id=7))
    made = pasted(rows, 2, width, height, shift=shift)
    for row in made:
        assert row.image_id == 2 and row.id is None and row.state is BoxState.annotation
        assert row.origin is Origin.manual and row.score is None and row.task is None
        assert 0 <= row.box.x0 < row.box.x1 <= width and 0 <= row.box.y0 < row.box.y1 <= height
    for source in rows:  # a box that fits is copied whole, moved by the offset at most
        box = source.box
        if box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height:
            assert any(
                row.box.width == pytest.approx(box.width)
                and row.box.height == pytest.approx(box.height)
                and -1e-6 <= row.box.x0 - box.x0 <= (PASTE_OFFSET if shift else 0) + 1e-6
                and -1e-6 <= row.box.y0 - box.y0 <= (PASTE_OFFSET if shift else 0) + 1e-6
                for row in made
            ), (box, made)


@given(names=st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=8), text=st.text(max_size=4))
def test_label_search_keeps_exactly_the_names_containing_the_text_prefixes_first(names: list[str], text: str) -> None:
    found = matching_labels(names, text)
    needle = text.strip().casefold()
    assert sorted(found) == sorted(name for name in names if needle in name.casefold())
    starts = [name.casefold().startswith(needle) for name in found]
    assert starts == sorted(starts, reverse=True)
