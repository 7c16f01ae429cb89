"""Issue 17, bugs 1-12: what a labeller's full day in the desktop annotator found, each driven through the real window
(pytest-qt, offscreen) or the real engine, with the shipped tiny shapes model on the CPU.

Each test failed before its fix; the docstrings say what it did then.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from backend_process import running_backend, serve_command
from ls_harness import free_port
from patience import HANG_MS
from PIL import Image
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot
from test_annotator_gui import LABELS, _draw, _go, _wait_idle, engine, image_folder, window

from annotator.core import geometry
from annotator.core.engines import EngineRequest, LocalEngine
from annotator.core.sources import ModelSource
from annotator.gui.app import create_window
from annotator.gui.main_window import MainWindow
from model.annotations import Origin, Task
from model.coco import load_with_pycocotools
from model.images import MODEL_FIT_PIXELS, image_size, load_image
from model.propose_api import MAX_UPLOAD_SIDE
from model.proposer import ProposeRequest
from model.request import Prompt
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

__all__ = ["engine", "image_folder", "window"]  # fixtures shared with the main GUI tests

LOCAL = ModelSource("local", str(SHIPPED_DIR), device="cpu")


def _open(qtbot: QtBot, folder: Path, store: Path) -> MainWindow:
    win = MainWindow()
    qtbot.addWidget(win)
    win.open_folder(folder, store)
    assert win.session is not None and win.ai is not None
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()  # keyboard shortcuts go to the active window, as on a desktop
    qtbot.waitUntil(win.isActiveWindow)
    return win


# --- bug 1 ----------------------------------------------------------------------------------------------------------
def test_the_command_line_model_wins_over_the_remembered_one(qtbot: QtBot, image_folder: Path, tmp_path: Path) -> None:
    """Before: the remembered server started loading on opening, and --model was refused ("a model is already
    loading"), so the laptop told one source loaded the other."""
    store = tmp_path / "cli.minigpt.sqlite"
    first = _open(qtbot, image_folder, store)
    assert first.session is not None
    first.session.remember_model_source(ModelSource("server", "http://127.0.0.1:9"))
    first.close()

    win = create_window(image_folder, store=store, source=LOCAL)  # what `minigpt-annotate gui --model` builds
    qtbot.addWidget(win)
    assert win.ai is not None and win.session is not None
    assert "already loading" not in win.ai_panel.status.text()
    assert win.ai.source == LOCAL
    _wait_idle(qtbot, win)
    assert win.model_status.text().startswith("Ready: local model tiny-shapes"), win.ai_panel.status.text()
    assert win.session.model_source() == LOCAL  # the command line's choice is the default from now on
    win.close()

    again = _open(qtbot, image_folder, store)  # without a command-line source, the remembered one loads
    assert again.ai is not None and again.ai.source == LOCAL
    _wait_idle(qtbot, again)
    again.close()


# --- bug 2 ----------------------------------------------------------------------------------------------------------
def test_a_remembered_model_folder_loads_from_any_working_directory(
    qtbot: QtBot, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `--model tiny-shapes` given in the model's parent folder was stored as "tiny-shapes", and reopening
    the project from any other folder failed to find it."""
    store = tmp_path / "relative.minigpt.sqlite"
    monkeypatch.chdir(SHIPPED_DIR.parent)
    first = _open(qtbot, image_folder, store)
    first.load_model(ModelSource("local", SHIPPED_DIR.name, device="cpu"))
    _wait_idle(qtbot, first)
    assert first.ai is not None and first.ai.engine is not None, first.ai_panel.status.text()
    first.close()

    monkeypatch.chdir(tmp_path)
    second = _open(qtbot, image_folder, store)
    assert second.session is not None and second.ai is not None
    saved = second.session.model_source()
    assert saved is not None and Path(saved.location).is_absolute()
    assert Path(saved.location) == SHIPPED_DIR.resolve()
    _wait_idle(qtbot, second)
    assert second.ai.engine is not None, second.ai_panel.status.text()
    second.close()


# --- bug 3 ----------------------------------------------------------------------------------------------------------
def test_arrow_keys_in_the_image_list_open_the_image(qtbot: QtBot, window: MainWindow) -> None:
    """Before: Down moved the list's highlight, and the canvas kept showing the image before."""
    win = window
    session = win.session
    assert session is not None
    first = _go(win, "000001.png")
    ids = [row.id for row in session.images()]
    win.files.view.setFocus()
    qtbot.keyClick(win.files.view, Qt.Key.Key_Down)
    following = ids[ids.index(first) + 1]
    assert session.current_id == following
    shown = session.path_of(session.image(following))
    assert win.canvas.image_size == tuple(float(v) for v in image_size(shown))
    qtbot.keyClick(win.files.view, Qt.Key.Key_Up)
    assert session.current_id == first
    # The list follows the window's own navigation without reopening anything (no loop between the two).
    qtbot.keyClick(win.canvas, Qt.Key.Key_D)
    assert session.current_id == following
    assert win.files.view.currentIndex().data(Qt.ItemDataRole.UserRole) == following


# --- bug 4 ----------------------------------------------------------------------------------------------------------
def test_an_error_stays_until_the_next_success(qtbot: QtBot, window: MainWindow) -> None:
    """Before: the failure was written to the AI panel and wiped the same moment, when the run ended."""
    win = window
    _go(win, "zz-broken.jpg")
    win.ai_panel.set_task(Task.detection)
    win.ai_panel.query.setText("square")
    win.run_model()
    _wait_idle(qtbot, win)
    assert "zz-broken.jpg" in win.ai_panel.status.text()
    _go(win, "000001.png")
    assert "zz-broken.jpg" in win.ai_panel.status.text()  # still there after moving on
    win.run_model()
    _wait_idle(qtbot, win)
    assert "zz-broken.jpg" not in win.ai_panel.status.text()  # a success replaces it


def test_the_status_says_when_the_server_stopped_answering(qtbot: QtBot, image_folder: Path, tmp_path: Path) -> None:
    """Before: after the server died the status bar kept saying "Ready: server …", and the error that said so was
    wiped from the AI panel when the run ended."""
    port = free_port()
    win = _open(qtbot, image_folder, tmp_path / "server.minigpt.sqlite")
    assert win.ai is not None and win.session is not None
    with running_backend(serve_command(port), port, tmp_path / "serve.log", dict(os.environ)) as url:
        win.load_model(ModelSource("server", url))
        _wait_idle(qtbot, win)
        assert win.model_status.text().startswith(f"Ready: server {url}"), win.ai_panel.status.text()
    _go(win, "000001.png")
    win.ai_panel.query.setText("square")
    win.run_model()
    _wait_idle(qtbot, win)
    assert not win.model_status.text().startswith("Ready"), win.model_status.text()
    assert url in win.model_status.text()
    assert "stopped" in win.ai_panel.status.text() and url in win.ai_panel.status.text()
    win.close()


# --- bug 5 ----------------------------------------------------------------------------------------------------------
def test_importing_coco_is_one_undo_step(qtbot: QtBot, image_folder: Path, tmp_path: Path) -> None:
    """Before: the import was no undo step, so Ctrl+Z right after it undid the person's earlier box instead."""
    win = _open(qtbot, image_folder, tmp_path / "undo-import.minigpt.sqlite")
    session = win.session
    assert session is not None
    target = _go(win, "photo-coffee.jpg")
    _draw(win, "saucer", QPointF(300, 200), QPointF(360, 240))
    width, height = image_size(image_folder / "photo-coffee.jpg")
    coco = tmp_path / "cups.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "photo-coffee.jpg", "width": width, "height": height}],
                "categories": [{"id": 1, "name": "cup"}],
                "annotations": [
                    {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [20 * i, 10, 15, 15]} for i in range(5)
                ],
            }
        )
    )
    assert win.import_from(coco)
    qtbot.waitUntil(lambda: win.importer is not None and not win.importer.busy, timeout=HANG_MS)
    assert sorted(row.label for row in session.boxes(target)) == ["cup"] * 5 + ["saucer"]
    assert session.undo_stack.count() == 2
    assert "Import" in session.undo_stack.undoText()
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert [row.label for row in session.boxes(target)] == ["saucer"]  # the import, not the saucer
    qtbot.keyClick(win.canvas, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert sorted(row.label for row in session.boxes(target)) == ["cup"] * 5 + ["saucer"]
    # Importing it again adds nothing, and so makes no undo step.
    assert win.import_from(coco)
    qtbot.waitUntil(lambda: win.importer is not None and not win.importer.busy, timeout=HANG_MS)
    assert session.undo_stack.count() == 2
    win.close()


# --- bug 6 ----------------------------------------------------------------------------------------------------------
def test_an_identify_suggestion_goes_when_the_image_changes(qtbot: QtBot, window: MainWindow) -> None:
    """Before: the "Label the box …" button stayed on the next image, and clicking it said the box was gone."""
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
    assert win.ai_panel.apply_answer.isVisible()
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_D)  # next image
    assert session.current_id != image
    assert not win.ai_panel.apply_answer.isVisible()
    qtbot.keyClick(win.canvas, Qt.Key.Key_A)  # and back: the suggestion was for a run that is over
    assert not win.ai_panel.apply_answer.isVisible()
    assert session.boxes(image)[0].label == "thing"


# --- bugs 7 and 8 ---------------------------------------------------------------------------------------------------
def test_a_run_asked_for_while_the_model_loads_runs_when_it_is_ready(
    qtbot: QtBot, image_folder: Path, tmp_path: Path
) -> None:
    """Before: "No model loaded", and the request was dropped."""
    win = _open(qtbot, image_folder, tmp_path / "early.minigpt.sqlite")
    assert win.ai is not None and win.session is not None
    image = _go(win, "000001.png")
    win.load_model(LOCAL)
    assert win.ai.loading  # the loader reports through the event loop, which has not run yet
    win.ai_panel.set_task(Task.detection)
    win.ai_panel.query.setFocus()  # the person clicks into the query field, and presses Enter
    win.ai_panel.query.setText(", ".join(LABELS))
    qtbot.keyClick(win.ai_panel.query, Qt.Key.Key_Return)
    status = win.ai_panel.status.text()
    assert "No model" not in status and "loading" in status and "when it is ready" in status, status
    _wait_idle(qtbot, win)
    assert [row for row in win.session.boxes(image) if row.is_proposal], win.ai_panel.status.text()
    win.close()


def test_cancel_while_a_model_loads(qtbot: QtBot, image_folder: Path, tmp_path: Path, engine: LocalEngine) -> None:
    """Before: Cancel did nothing while a model loaded: the panel stayed busy and the model arrived anyway."""
    win = _open(qtbot, image_folder, tmp_path / "cancel-load.minigpt.sqlite")
    assert win.ai is not None and win.session is not None
    image = _go(win, "000001.png")
    win.load_model(ModelSource("local", str(SHIPPED_DIR), device="cpu"))
    win.run_model()  # waits for the model
    assert win.ai_panel.cancel_button.isEnabled()
    qtbot.mouseClick(win.ai_panel.cancel_button, Qt.MouseButton.LeftButton)
    assert not win.ai.busy
    assert win.ai_panel.run_button.isEnabled() and not win.ai_panel.cancel_button.isEnabled()
    assert "ancel" in win.ai_panel.status.text()
    assert win.ai.wait()  # the loading thread cannot be stopped mid-way; what it loads is dropped
    QApplication.processEvents()
    assert win.ai.engine is None and not win.ai.busy
    assert win.session.model_source() is None  # not remembered either
    assert win.session.boxes(image) == []  # the run that waited for it was cancelled with it
    assert not win.model_status.text().startswith("Ready")

    # With a model in use, a cancelled load keeps it.
    win.ai.use(engine, LOCAL)
    win.load_model(ModelSource("server", "http://127.0.0.1:9"))
    win.ai.cancel()
    assert win.ai.wait()
    QApplication.processEvents()
    assert win.ai.engine is engine and win.ai.source == LOCAL
    assert win.model_status.text().startswith("Ready: local model")
    win.close()


# --- bug 9 ----------------------------------------------------------------------------------------------------------
def test_a_person_s_change_drops_the_model_s_score_and_phrase_from_the_export(
    qtbot: QtBot, image_folder: Path, tmp_path: Path
) -> None:
    """Before: a box imported with a score (a detector's output read as a person's box) kept that score and its
    phrase after the person relabelled and resized it, and the export presented both as the box's own."""
    win = _open(qtbot, image_folder, tmp_path / "stale.minigpt.sqlite")
    session = win.session
    assert session is not None
    target = _go(win, "photo-coffee.jpg")
    width, height = image_size(image_folder / "photo-coffee.jpg")
    coco = tmp_path / "detector.json"
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [40, 40, 100, 80], "score": 0.91, "phrase": "the cup"},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [300, 60, 90, 90], "score": 0.55, "phrase": "a cup"},
    ]
    image = {"id": 1, "file_name": "photo-coffee.jpg", "width": width, "height": height}
    categories = [{"id": 1, "name": "cup"}, {"id": 2, "name": "mug"}]
    coco.write_text(json.dumps({"images": [image], "categories": categories, "annotations": annotations}))
    assert win.import_from(coco)
    qtbot.waitUntil(lambda: win.importer is not None and not win.importer.busy, timeout=HANG_MS)
    first, second = sorted(session.boxes(target), key=lambda row: row.box.x0)
    assert (first.score, first.phrase, first.origin) == (0.91, "the cup", Origin.manual)

    # Relabel the first with Ctrl+E, nudge the second with an arrow key.
    win.canvas.setFocus()
    win.canvas.select({first.id})
    qtbot.keyClick(win.canvas, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)  # the label chooser
    chooser = win.tools.chooser
    qtbot.waitUntil(lambda: chooser is not None and chooser.isActiveWindow(), timeout=HANG_MS)
    qtbot.keyClicks(chooser.text, "mug")
    qtbot.keyClick(chooser.text, Qt.Key.Key_Return)
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=HANG_MS)
    win.canvas.setFocus()
    win.canvas.select({second.id})
    qtbot.keyClick(win.canvas, Qt.Key.Key_Right)
    relabelled, moved = sorted(session.boxes(target), key=lambda row: row.box.x0)
    assert (relabelled.label, relabelled.score, relabelled.phrase) == ("mug", None, None)
    assert (moved.score, moved.phrase) == (None, "a cup")  # same object, same words; the score was for the old box
    out = tmp_path / "export.json"
    assert win.export_to(out) is not None
    exported = sorted(load_with_pycocotools(out).dataset["annotations"], key=lambda a: a["bbox"][0])
    assert ["score" in a for a in exported] == [False, False]
    assert "phrase" not in exported[0]
    assert [a["attributes"]["origin"] for a in exported] == ["manual", "manual"]
    win.close()


# --- bug 10 ---------------------------------------------------------------------------------------------------------
def test_image_ids_stay_the_same_between_exports(qtbot: QtBot, image_folder: Path, tmp_path: Path) -> None:
    """Before: ids counted the exported images in order, so an image annotated later shifted every id after it."""
    win = _open(qtbot, image_folder, tmp_path / "ids.minigpt.sqlite")
    _go(win, "000003.png")
    _draw(win, "square", QPointF(10, 10), QPointF(60, 60))

    def ids(path: Path) -> dict[str, int]:
        assert win.export_to(path) is not None
        return {image["file_name"]: image["id"] for image in load_with_pycocotools(path).dataset["images"]}

    before = ids(tmp_path / "first.json")
    _go(win, "000001.png")  # sorts before it
    _draw(win, "square", QPointF(10, 10), QPointF(60, 60))
    after = ids(tmp_path / "second.json")
    assert len(after) == 2
    assert {name: after[name] for name in before} == before
    win.close()


# --- bug 11 ---------------------------------------------------------------------------------------------------------
def test_zoom_out_stops_and_tags_leave_the_handles_free(qtbot: QtBot, window: MainWindow) -> None:
    """Before: zoom out went on to a speck of an image, and a box's own tag covered its top handles once the box
    was narrower on screen than its tag."""
    win = window
    session = win.session
    assert session is not None
    image = _go(win, "photo-astronaut.jpg")
    _draw(win, "a-long-label-name", QPointF(200, 200), QPointF(230, 230))
    (row,) = session.boxes(image)
    canvas = win.canvas
    canvas.fit()
    fitted = canvas.transform().m11()
    canvas.setFocus()
    for _ in range(40):
        qtbot.keyClick(canvas, Qt.Key.Key_Minus, Qt.KeyboardModifier.ControlModifier)
    lowest = canvas.transform().m11()
    assert lowest < fitted  # it does zoom out
    assert lowest >= fitted / 2 - 1e-9  # but stops at half the fitted size
    canvas.select({row.id})
    item = canvas.items_by_id()[row.id]
    to_view = canvas.viewportTransform()
    tag = item.tag.deviceTransform(to_view).mapRect(item.tag.boundingRect())
    assert tag.width() > canvas.mapFromScene(QPointF(230, 0)).x() - canvas.mapFromScene(QPointF(200, 0)).x()
    size = 8.0
    for x, y in geometry.handle_points(row.box).values():
        centre = canvas.mapFromScene(QPointF(x, y))
        handle = QRectF(centre.x() - size / 2, centre.y() - size / 2, size, size)
        assert not tag.intersects(handle), (x, y, tag, handle)


# --- bug 12 ---------------------------------------------------------------------------------------------------------
def test_a_large_jpeg_is_decoded_at_the_size_the_model_needs(
    engine: LocalEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: an image up to 36 MP went through decode and preprocessing at full size (a 2736x4016 scene here); now
    at most MAX_UPLOAD_SIDE on its long side (JPEG draft mode), as `serve`'s clients send it, with the same boxes in
    the file's own pixels."""
    make_shapes(tmp_path / "scene", images=1, seed=6, max_shapes=2, exif_fraction=0.0)
    (small,) = (tmp_path / "scene" / "images").iterdir()
    upright = Image.open(small).convert("RGB")
    factor = 4032 // max(upright.size)
    large = tmp_path / "large.jpg"
    upright.resize((upright.width * factor, upright.height * factor), Image.Resampling.BICUBIC).save(large, quality=92)
    full_size = image_size(large)
    assert max(full_size) > MAX_UPLOAD_SIDE

    handed: list[tuple[tuple[int, int], tuple[int, int]]] = []  # (pixels given to preprocessing, frame of boxes)
    propose_batch = engine.proposer.propose_batch

    def watched(batch, **kwargs):  # type: ignore[no-untyped-def]
        handed.extend((request.image.image.size, (request.image.width, request.image.height)) for request in batch)
        return propose_batch(batch, **kwargs)

    monkeypatch.setattr(engine.proposer, "propose_batch", watched)
    prompts = [Prompt(Task.detection, "circle")]  # one prompt: a batch of several is slower to generate on a CPU
    reduced = engine.propose([EngineRequest(large, p) for p in prompts])
    ((pixels, frame),) = set(handed)
    assert 448 <= max(pixels) <= MAX_UPLOAD_SIDE and pixels[0] * full_size[1] == pytest.approx(
        pixels[1] * full_size[0], rel=0.01
    )
    assert frame == full_size

    # What the model answered on the whole decode, the old path, in the same frame.
    whole = load_image(large, fit_pixels=MODEL_FIT_PIXELS)
    assert whole.image.size == full_size
    expected = propose_batch([ProposeRequest.of(whole, p) for p in prompts])
    assert sum(len(r.proposals) for r in expected) == 2  # the scene's two circles, both found
    for a, b in zip(reduced, expected, strict=True):
        assert [p.label for p in a.proposals] == [p.label for p in b.proposals]
        for p, q in zip(a.proposals, b.proposals, strict=True):
            assert list(p.box.xyxy) == pytest.approx(list(q.box.xyxy), abs=0.5)
