"""The desktop's layers hold by construction: scans of the source for the rules, and the real window driven through
every flow that could break them (pytest-qt, offscreen, the shipped tiny model on the CPU).

* The desktop uses only public names of ``model``.
* Only the session talks to the project store, and only the session emits the session's signals; every change the
  window or the model makes is announced by them.
* The window and the AI controller use the AI panel through its own methods and signals, never its child widgets.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from annotator.gui.ai_panel import AIPanel
from model.annotations import Task

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
    with qtbot.waitSignal(panel.settings_edited, timeout=1000):
        panel.query.editingFinished.emit()
    with qtbot.waitSignal(panel.settings_edited, timeout=1000):
        panel.task.setCurrentIndex(0)
    with qtbot.waitSignal(panel.run_requested, timeout=1000):
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
    with qtbot.waitSignal(panel.apply_answer_requested, timeout=1000):
        qtbot.mouseClick(panel.apply_answer, Qt.MouseButton.LeftButton)
    panel.suggest_label(None)
    assert not panel.apply_answer.isVisible()
    panel.focus_query()
    qtbot.waitUntil(panel.query.hasFocus, timeout=1000)
