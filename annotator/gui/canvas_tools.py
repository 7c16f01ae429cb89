"""Canvas basics, the object list and label tools around the main window (issue 17's "Add" items), in one
controller the window creates in one line, so the window stays thin.

* The object list dock mirrors the boxes the canvas shows; selection is kept in step both ways, and hiding a box or
  a label hides it on the canvas (a view filter: nothing is written).
* The overview dock, the zoom readout, 100% (`Ctrl+0`) and fit width; the status bar's cursor x, y, selected box
  x, y, w, h and "image 3 / 17"; show/hide all boxes, labels and scores.
* Copy, paste and duplicate go through the session's undo stack like every edit.
* Digit keys choose labels, `Ctrl+E` opens the label chooser, the label list follows the selected box, and a
  label's colour can be overridden (an undoable edit the store remembers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QColorDialog, QDockWidget, QLabel
from shiboken6 import isValid

from annotator.core import edits
from annotator.core.objects import (
    box_text,
    common_label,
    cursor_text,
    image_position,
    label_counts,
    label_for_digit,
    pasted,
    zoom_text,
)
from annotator.core.records import BoxRow

from .label_chooser import LabelChooser
from .navigator import Navigator
from .object_list import ObjectListPanel

if TYPE_CHECKING:
    from .main_window import MainWindow


class CanvasTools(QObject):
    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.canvas = window.canvas
        self.objects = ObjectListPanel()
        self.navigator = Navigator(self.canvas)
        self.object_dock = self._dock("Objects", self.objects, Qt.DockWidgetArea.RightDockWidgetArea)
        self.overview_dock = self._dock("Overview", self.navigator, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.cursor, self.selection, self.position, self.zoom_label = QLabel(), QLabel(), QLabel(), QLabel()
        for label in (self.cursor, self.selection, self.position, self.zoom_label):
            window.statusBar().addPermanentWidget(label)  # permanent: a status message does not hide them
        self.clipboard: list[BoxRow] = []
        self.chooser: LabelChooser | None = None
        self.color_dialog: QColorDialog | None = None
        self._syncing = False
        self._position_of: tuple[object, int | None] | None = None  # what "image n / N" was computed for

        self.canvas.boxes_shown.connect(self._refresh)
        self.canvas.view_changed.connect(lambda: self.zoom_label.setText(zoom_text(self.canvas.zoom_scale())))
        self.canvas.cursor_moved.connect(self._cursor_moved)
        self.canvas.scene().selectionChanged.connect(self._canvas_selected)
        self.objects.selection_changed.connect(self._list_selected)
        self.objects.box_visibility_changed.connect(self._box_visibility)
        self.objects.label_visibility_changed.connect(self._label_visibility)
        window.labels.color_requested.connect(self.choose_color)

    def _dock(self, title: str, widget: QObject, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self.window)
        dock.setObjectName(title)
        dock.setWidget(widget)  # type: ignore[arg-type]
        self.window.addDockWidget(area, dock)
        return dock

    def handlers(self) -> dict[str, Callable[[], object]]:
        """The window's actions for this part's rows of :data:`annotator.core.shortcuts.SHORTCUTS`."""
        digits = {f"label_{n}": self._digit_handler(n) for n in range(1, 10)}
        return digits | {
            "relabel": self.open_chooser,
            "zoom_100": lambda: self.canvas.zoom_to(1.0),
            "fit_width": self.canvas.fit_width,
            "toggle_boxes": lambda: self.toggle("boxes"),
            "toggle_labels": lambda: self.toggle("labels"),
            "toggle_scores": lambda: self.toggle("scores"),
            "copy": self.copy,
            "paste": self.paste,
            "duplicate": self.duplicate,
        }

    def _digit_handler(self, digit: int) -> Callable[[], None]:
        # Not ``lambda n=n: ...``: QAction.triggered would pass its ``checked`` flag into ``n``.
        return lambda: self.choose_digit(digit)

    # --- the object list and the status bar ------------------------------------------------------------------------
    def _rows(self) -> list[BoxRow]:
        return [item.row for item in self.canvas.items_by_id().values()]

    def _refresh(self) -> None:
        session = self.window.session
        labels = session.labels() if session is not None else []
        colors = {label.name: label.color for label in labels}
        rows = sorted(self._rows(), key=lambda row: row.id or 0)
        self.objects.set_rows(rows, label_counts(rows, labels), colors, self.canvas.visibility)
        self._syncing = True
        try:
            self.objects.select_ids({row.id for row in self.canvas.selected_rows() if row.id is not None})
        finally:
            self._syncing = False
        current = session.current_id if session is not None else None
        if (session, current) != self._position_of:  # the image list is read once per image shown, not per edit
            self._position_of = (session, current)
            ids = [row.id for row in session.images()] if session is not None else []
            self.position.setText(image_position(ids, current))
        self.zoom_label.setText(zoom_text(self.canvas.zoom_scale()))
        self._show_selection()

    def _cursor_moved(self, x: float, y: float) -> None:
        self.cursor.setText(cursor_text(x, y, *self.canvas.image_size))

    def _show_selection(self) -> None:
        self.selection.setText(box_text([row.box for row in self.canvas.selected_rows()]))

    def _canvas_selected(self) -> None:
        if self._syncing or not isValid(self.canvas):  # a closing window's scene deselects as it deletes the boxes
            return
        rows = self.canvas.selected_rows()
        self._syncing = True
        try:
            self.objects.select_ids({row.id for row in rows if row.id is not None})
        finally:
            self._syncing = False
        label = common_label(rows)
        if label is not None:
            self.window.labels.set_current_label(label)  # the label list follows the selected box
        self._show_selection()

    def _list_selected(self, ids: set[int]) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.canvas.select(ids)
        finally:
            self._syncing = False
        items = self.canvas.items_by_id()
        if ids & items.keys():
            self.canvas.ensureVisible(items[min(ids & items.keys())])
        label = common_label(self.canvas.selected_rows())
        if label is not None:
            self.window.labels.set_current_label(label)
        self._show_selection()

    def _box_visibility(self, box_id: int, shown: bool) -> None:
        self.canvas.visibility.set_box(box_id, shown)
        self.canvas.apply_view_filters()

    def _label_visibility(self, label: str, shown: bool) -> None:
        self.canvas.visibility.set_label(label, shown)
        self.canvas.apply_view_filters()

    def toggle(self, name: str) -> None:
        """Show or hide all boxes, their label tags, or the scores in the tags."""
        self.canvas.display = self.canvas.display.toggled(name)
        self.canvas.apply_view_filters()
        shown = getattr(self.canvas.display, name)
        self.window.statusBar().showMessage(f"{'Showing' if shown else 'Hiding'} {name}", 3000)

    # --- copy, paste, duplicate ------------------------------------------------------------------------------------
    def copy(self) -> None:
        rows = self.canvas.selected_rows()
        if rows:
            self.clipboard = rows
            self.window.statusBar().showMessage(f"Copied {len(rows)} box(es)", 3000)

    def paste(self) -> None:
        session = self.window.session
        if session is None or session.current_id is None or not self.clipboard:
            return
        same = {row.image_id for row in self.clipboard} == {session.current_id}
        self._add(pasted(self.clipboard, session.current_id, *self.canvas.image_size, shift=same), "Paste")

    def duplicate(self) -> None:
        session = self.window.session
        rows = self.canvas.selected_rows()
        if session is not None and session.current_id is not None and rows:
            self._add(pasted(rows, session.current_id, *self.canvas.image_size, shift=True), "Duplicate")

    def _add(self, rows: list[BoxRow], verb: str) -> None:
        session = self.window.session
        if session is None or session.current_id is None or not rows:
            return
        before = set(self.canvas.items_by_id())
        session.push(edits.add_boxes(f"{verb} {len(rows)} box(es)", session.current_id, rows))
        self.canvas.select(set(self.canvas.items_by_id()) - before)  # the new copies, ready to be dragged

    # --- labels ----------------------------------------------------------------------------------------------------
    def choose_digit(self, digit: int) -> None:
        session = self.window.session
        label = label_for_digit(session.labels(), digit) if session is not None else None
        if label is not None:
            self.window.labels.set_current_label(label)
            self.window.statusBar().showMessage(f"Label: {label}", 3000)

    def open_chooser(self) -> None:
        """`Ctrl+E`: ask which label the selected boxes get (never applied silently)."""
        session, rows = self.window.session, self.canvas.selected_rows()
        if session is None or not rows:
            self.window.statusBar().showMessage("Select the boxes to relabel first", 5000)
            return
        names = [label.name for label in session.labels()]
        current = common_label(rows) or self.window.labels.current_label()
        self.chooser = LabelChooser(names, current, len(rows), self.window)
        self.chooser.chosen.connect(lambda name: self._relabel(rows, name))
        self.chooser.open()  # window-modal, without blocking the event loop
        self.chooser.activateWindow()  # typing goes to it, not to the canvas's shortcuts

    def _relabel(self, rows: list[BoxRow], label: str) -> None:
        session = self.window.session
        if session is None:
            return
        session.add_label(label)
        changed = [row for row in rows if row.label != label]
        if changed:
            session.push(edits.replace_boxes(f"Relabel as {label}", changed, [r.relabelled(label) for r in changed]))
        self.window.labels.set_current_label(label)

    def choose_color(self, name: str) -> None:
        session = self.window.session
        if session is None:
            return
        color = next((label.color for label in session.labels() if label.name == name), "#ffcc00")
        self.color_dialog = QColorDialog(QColor(color), self.window)
        self.color_dialog.setWindowTitle(f"Colour of {name}")
        self.color_dialog.colorSelected.connect(lambda chosen: self.set_color(name, chosen.name()))
        self.color_dialog.open()

    def set_color(self, name: str, color: str) -> None:
        session = self.window.session
        if session is not None:
            session.push(edits.RecolorLabel(f"Colour of {name}", name, color))
