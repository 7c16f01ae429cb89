"""The desktop's layers hold by construction: scans of the source for the rules, and the real window driven through
every flow that could break them (pytest-qt, offscreen, the shipped tiny model on the CPU).

* The desktop uses only public names of ``model``.
* Only the session talks to the project store, and only the session emits the session's signals; every change the
  window or the model makes is announced by them.
* The window and the AI controller use the AI panel through its own methods and signals, never its child widgets.
* The package's docstring says what is there.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from patience import HANG_MS
from PIL import Image
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from annotator.core.engines import LocalEngine
from annotator.core.exchange import ImportPlan, ImportReport
from annotator.core.folder import open_project
from annotator.core.records import ImageStatus
from annotator.core.runs import detection_prompts
from annotator.core.sources import ModelSource
from annotator.core.store import ProjectStore
from annotator.gui.ai_panel import AIPanel
from annotator.gui.main_window import MainWindow
from annotator.gui.session import Session
from model.annotations import Task
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

REPO = Path(__file__).resolve().parents[1]
GUI = REPO / "annotator" / "gui"


def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}: {ast.unparse(node)}"


def _nodes(paths: list[Path]) -> Iterator[tuple[Path, ast.AST]]:
    for path in paths:
        for node in ast.walk(_parsed(path)):
            yield path, node


def _gui_files_but_the_session() -> list[Path]:
    files = [path for path in sorted(GUI.glob("*.py")) if path.name != "session.py"]
    assert len(files) >= 10, files  # the scan sees the real package
    return files


# ======================================================================================================================
# Structure


def _class_body(path: Path, name: str) -> list[ast.stmt]:
    (found,) = [node for node in ast.walk(_parsed(path)) if isinstance(node, ast.ClassDef) and node.name == name]
    return found.body


def _signals(body: list[ast.stmt]) -> set[str]:
    return {
        target.id
        for node in body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and ast.unparse(node.value.func) == "Signal"
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _panel_api() -> set[str]:
    """The panel's own methods and signals, as declared on the class: not the child widgets it holds."""
    body = _class_body(GUI / "ai_panel.py", "AIPanel")
    methods = {node.name for node in body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    return methods | _signals(body)


def test_the_desktop_imports_only_public_names_of_model() -> None:
    """Private helpers of ``model`` may change at any time; a surface that imports them breaks with them."""
    files = sorted((REPO / "annotator").rglob("*.py")) + sorted((REPO / "ml_backend").rglob("*.py"))
    private = [
        _where(path, node)
        for path, node in _nodes(files)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").split(".")[0] == "model"
        and any(alias.name.startswith("_") for alias in node.names)
    ]
    assert private == []


def test_only_the_session_touches_the_store() -> None:
    reaching = [
        _where(path, node)
        for path, node in _nodes(_gui_files_but_the_session())
        if isinstance(node, ast.Attribute) and node.attr == "store"
    ]
    assert reaching == []


def test_only_the_session_emits_its_signals() -> None:
    signals = _signals(_class_body(GUI / "session.py", "Session"))
    assert {"images_changed", "boxes_changed", "labels_changed", "error"} <= signals

    def is_session(node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id == "session") or (
            isinstance(node, ast.Attribute) and node.attr == "session"
        )

    emitting = [
        _where(path, node)
        for path, node in _nodes(_gui_files_but_the_session())
        if isinstance(node, ast.Attribute)
        and node.attr == "emit"
        and isinstance(node.value, ast.Attribute)
        and node.value.attr in signals
        and is_session(node.value.value)
    ]
    assert emitting == []


def test_the_window_uses_the_ai_panel_only_through_its_api() -> None:
    api = _panel_api()
    assert {"current_task", "set_busy", "run_requested"} <= api
    assert not {"query", "status", "answer", "apply_answer", "model_status", "task", "threshold"} & api
    reaching = []
    for path, node in _nodes([GUI / "main_window.py", GUI / "ai_controller.py"]):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
            continue
        if node.value.attr == "ai_panel" and node.attr not in api:  # a child widget or other inner state
            reaching.append(_where(path, node))
        inner = node.value
        if isinstance(inner.value, ast.Attribute) and inner.value.attr == "ai_panel" and node.attr != "connect":
            reaching.append(_where(path, node))  # a member's member: only a signal's connect is the panel's API
    assert reaching == []


def test_the_annotator_package_says_what_it_is() -> None:
    import annotator

    doc = annotator.__doc__ or ""
    assert "later" not in doc  # it is built: the docstring describes it, it does not promise it
    named = {
        "annotator.core": "annotator/core",
        "annotator.gui": "annotator/gui",
        "gui.session": "annotator/gui/session.py",
        "annotator.commands": "annotator/commands.py",
    }
    for name, path in named.items():
        assert name in doc and (REPO / path).exists(), name


# ======================================================================================================================
# Behaviour: only the session writes, and every change is announced


class WatchedStore:
    """The real store, with every call checked: the innermost ``annotator.gui`` code on the stack must be the
    session's (tests and the Qt-free core may call freely: the core runs on the session's behalf)."""

    def __init__(self, store: ProjectStore):
        self._store = store
        self.strangers: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def checked(*args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if module.startswith("annotator.gui"):
                    if module != "annotator.gui.session":
                        self.strangers.append(f"{module}.{frame.f_code.co_name} called store.{name}")
                    break
                frame = frame.f_back
            return value(*args, **kwargs)

        return checked


class Announcements:
    """Every signal of a session, as it fires."""

    def __init__(self, session: Session):
        self.images = 0
        self.boxes: list[int] = []
        self.errors: list[str] = []
        session.images_changed.connect(self._image)
        session.boxes_changed.connect(self.boxes.append)
        session.error.connect(self.errors.append)

    def _image(self) -> None:
        self.images += 1


@pytest.fixture(scope="module")
def engine() -> LocalEngine:
    return LocalEngine.load(SHIPPED_DIR, device="cpu")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_shapes(tmp_path, images=4, seed=3, exif_fraction=0.0)
    images = tmp_path / "images"
    (images / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return images


def _wait_until(qtbot: QtBot, condition: Callable[[], bool], timeout: int = 60_000) -> None:
    qtbot.waitUntil(condition, timeout=timeout)


def test_every_store_change_goes_through_the_session_and_is_announced(
    qtbot: QtBot, folder: Path, tmp_path: Path, engine: LocalEngine
) -> None:
    store = WatchedStore(open_project(folder, tmp_path / "watched.minigpt.sqlite"))
    win = MainWindow()
    qtbot.addWidget(win)
    session = Session(store, folder.resolve(), win)  # type: ignore[arg-type]  # the real store, watched
    heard = Announcements(session)
    ids = {row.path: row.id for row in session.images()}

    # Opening: the window restores settings and probes every header in the background; the results are saved and
    # the file list follows, because the session says the images changed.
    win.set_session(session)
    _wait_until(qtbot, lambda: all(row.width is not None or row.error for row in session.images()))
    _wait_until(qtbot, lambda: win.files.model.rows == session.images())
    assert store.strangers == [], "\n".join(store.strangers)
    assert heard.images >= 1
    assert session.image(ids["zz-broken.jpg"]).status is ImageStatus.unreadable

    # Showing an image records the size it really has (the file changed since the probe).
    assert session.current_id == ids["000001.png"]  # the first image is shown on opening
    Image.new("RGB", (50, 30), (200, 10, 10)).save(folder / "000004.png")
    before = heard.images
    win.go_to(ids["000004.png"])
    assert (session.image(ids["000004.png"]).width, session.image(ids["000004.png"]).height) == (50, 30)
    assert heard.images > before and win.files.model.rows == session.images()
    before = heard.images
    win.go_to(ids["zz-broken.jpg"])  # cannot be shown: marked again, and announced
    assert heard.images > before
    assert store.strangers == [], "\n".join(store.strangers)

    # A model source is remembered; the panel's settings are saved as the user leaves them.
    assert win.ai is not None
    win.ai.use(engine, ModelSource("local", str(SHIPPED_DIR), device="cpu"))
    win.go_to(ids["000002.png"])
    win.ai_panel.set_task(Task.detection)
    win.ai_panel.query.setFocus()
    qtbot.keyClicks(win.ai_panel.query, "circle, square, triangle")
    qtbot.keyClick(win.ai_panel.query, Qt.Key.Key_Return)  # runs on Enter
    _wait_until(qtbot, lambda: not win.ai.busy)
    assert ids["000002.png"] in heard.boxes
    win.accept_all()

    # A batch over the folder, during which one file is damaged after it was probed: each image's proposals are
    # saved as they arrive and announced; the damaged file is marked unreadable and announced.
    for label in ("circle", "square", "triangle"):
        session.add_label(label)
    (folder / "000003.png").write_bytes(b"not a PNG any more")
    heard.boxes.clear()
    before = heard.images
    assert win.start_batch(detection_prompts(session.labels()), unreviewed_only=False)
    _wait_until(qtbot, lambda: not win.ai.busy)
    with_proposals = {row.id for row in session.images() if row.proposals}
    assert with_proposals and with_proposals <= set(heard.boxes)
    assert store.strangers == [], "\n".join(store.strangers)
    assert session.image(ids["000003.png"]).status is ImageStatus.unreadable
    assert heard.images > before and win.files.model.rows == session.images()
    assert heard.errors == []

    # A COCO import: read in a worker, written by the session in one transaction, announced image by image.
    coco = tmp_path / "more.json"
    first = session.image(ids["000001.png"])
    image = {"id": 1, "file_name": first.path, "width": first.width, "height": first.height}
    annotation = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}
    coco.write_text(
        json.dumps({"images": [image], "categories": [{"id": 1, "name": "dot"}], "annotations": [annotation]})
    )
    heard.boxes.clear()
    assert win.import_from(coco)
    _wait_until(qtbot, lambda: win.importer is not None and not win.importer.busy)
    assert [row.label for row in session.boxes(ids["000001.png"])].count("dot") == 1
    assert heard.boxes == [ids["000001.png"]]
    assert store.strangers == [], "\n".join(store.strangers)

    win.close()  # saves the settings and closes the store
    assert store.strangers == [], "\n".join(store.strangers)
    reopened = ProjectStore.open(tmp_path / "watched.minigpt.sqlite")
    try:
        assert reopened.setting("query") == "circle, square, triangle"
        assert ModelSource.from_setting(reopened.setting("model_source") or "").location == str(SHIPPED_DIR)
    finally:
        reopened.close()


def test_reports_arriving_after_the_project_closed_are_dropped(qtbot: QtBot, folder: Path, tmp_path: Path) -> None:
    """Workers report by queued signals: one sent just before closing arrives after it, and must not crash."""
    session = Session(open_project(folder, tmp_path / "closed.minigpt.sqlite"), folder)
    image_id = session.images()[0].id
    heard = Announcements(session)
    session.close()
    session.record_probes([(image_id, (10, 10))])
    session.mark_unreadable(image_id, "gone")
    assert session.save_batch_proposals(image_id, []) == []
    assert session.apply_import(ImportPlan(labels=("late",), images=(), report=ImportReport())) is None
    assert (heard.images, heard.boxes, heard.errors) == (0, [], [])


# ======================================================================================================================
# Behaviour: the AI panel's own API


def test_the_ai_panel_says_what_the_user_did_and_shows_what_it_is_told(qtbot: QtBot) -> None:
    panel = AIPanel()
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)

    # What the person set, read and restored through the panel's own methods.
    panel.set_task(Task.refer)
    panel.set_query("the cup")
    panel.set_threshold(0.25)
    assert (panel.current_task(), panel.query_text(), panel.threshold_value_f()) == (Task.refer, "the cup", 0.25)

    # Finishing an edit (leaving the query field, picking a task) is one signal, however it was done.
    with qtbot.waitSignal(panel.settings_edited, timeout=HANG_MS):
        panel.query.editingFinished.emit()
    with qtbot.waitSignal(panel.settings_edited, timeout=HANG_MS):
        panel.task.setCurrentIndex(0)
    with qtbot.waitSignal(panel.run_requested, timeout=HANG_MS):
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)

    # What the window tells it to show.
    panel.show_model_status("Ready: tiny")
    panel.show_status("No model loaded")
    assert panel.model_status.text() == "Ready: tiny" and panel.status.text() == "No model loaded"
    panel.set_busy(True, "Running the model…")
    assert not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
    panel.set_busy(False)
    assert panel.run_button.isEnabled()
    panel.suggest_label("circle")
    assert panel.apply_answer.isVisible() and "circle" in panel.apply_answer.text()
    with qtbot.waitSignal(panel.apply_answer_requested, timeout=HANG_MS):
        qtbot.mouseClick(panel.apply_answer, Qt.MouseButton.LeftButton)
    panel.suggest_label(None)
    assert not panel.apply_answer.isVisible()
    panel.focus_query()
    qtbot.waitUntil(panel.query.hasFocus, timeout=HANG_MS)
