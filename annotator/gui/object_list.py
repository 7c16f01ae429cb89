"""The per-image object list (a dock): every box the canvas shows, with label, score and review state, a shown
checkbox per box, and the counts per label with a shown checkbox per label.

A Qt model/view over the image's box rows (:class:`ObjectTableModel`); it only reports what the person did
(selection, visibility), and :mod:`annotator.gui.canvas_tools` keeps it and the canvas in step.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QListWidget,
    QListWidgetItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from annotator.core.objects import LabelCount, ObjectState, Visibility, object_state
from annotator.core.records import BoxRow

from .label_panel import swatch

_Index = QModelIndex | QPersistentModelIndex
COLUMNS = ("Shown", "Label", "Score", "State")
STATE_COLORS = {  # the state column's text colour: what still needs a look stands out
    ObjectState.proposal: "#ef6c00",
    ObjectState.accepted: "#2e7d32",
    ObjectState.edited: "#1565c0",
    ObjectState.manual: "#424242",
}


class ObjectTableModel(QAbstractTableModel):
    visibility_toggled = Signal(int, bool)  # box id, shown

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[BoxRow] = []
        self.colors: dict[str, str] = {}
        self.visibility = Visibility()

    def set_rows(self, rows: Sequence[BoxRow], colors: dict[str, str], visibility: Visibility) -> None:
        self.beginResetModel()
        self.rows, self.colors, self.visibility = list(rows), colors, visibility
        self.endResetModel()

    def row_of(self, box_id: int) -> int | None:
        return next((i for i, row in enumerate(self.rows) if row.id == box_id), None)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        return flags | Qt.ItemFlag.ItemIsUserCheckable if index.column() == 0 else flags

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        row, column = self.rows[index.row()], index.column()
        state = object_state(row)
        if role == Qt.ItemDataRole.CheckStateRole and column == 0:
            return Qt.CheckState.Checked if self.visibility.shows(row) else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 1:
                return row.label
            if column == 2:
                return "" if row.score is None else f"{row.score:.2f}"
            if column == 3:
                return state.value
        if role == Qt.ItemDataRole.DecorationRole and column == 1:
            return swatch(self.colors.get(row.label, "#ffcc00"))
        if role == Qt.ItemDataRole.ForegroundRole and column == 3:
            return QColor(STATE_COLORS[state])
        if role == Qt.ItemDataRole.ToolTipRole:
            box = row.box
            return f"{row.label} ({state.value}) at x {box.x0:.0f}, y {box.y0:.0f}, {box.width:.0f}×{box.height:.0f}"
        return None

    def setData(self, index: _Index, value: object, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.CheckStateRole or index.column() != 0:
            return False
        row = self.rows[index.row()]
        if row.id is None:
            return False
        shown = Qt.CheckState(value) == Qt.CheckState.Checked  # type: ignore[call-overload]
        self.visibility_toggled.emit(row.id, shown)
        return True


class ObjectListPanel(QWidget):
    selection_changed = Signal(object)  # set of box ids the person selected in the list
    box_visibility_changed = Signal(int, bool)
    label_visibility_changed = Signal(str, bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = ObjectTableModel()
        self.model.visibility_toggled.connect(self.box_visibility_changed)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMNS)):  # the label takes what the narrow dock has left
            mode = QHeaderView.ResizeMode.Stretch if column == 1 else QHeaderView.ResizeMode.ResizeToContents
            header.setSectionResizeMode(column, mode)
        self.table.setToolTip("Every box on this image; select here or on the canvas. Untick to hide a box.")
        self.table.selectionModel().selectionChanged.connect(self._selected)
        self.counts = QListWidget()
        self.counts.setToolTip("Boxes per label on this image. Untick to hide a label's boxes (on every image).")
        self.counts.setMaximumHeight(110)
        self.counts.itemChanged.connect(self._label_ticked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.table, 3)
        layout.addWidget(self.counts, 1)
        self._syncing = False

    def set_rows(
        self, rows: Sequence[BoxRow], counts: Sequence[LabelCount], colors: dict[str, str], visibility: Visibility
    ) -> None:
        selected = self.selected_ids()
        self._syncing = True
        try:
            self.model.set_rows(rows, colors, visibility)
            self.counts.clear()
            for count in counts:
                item = QListWidgetItem(swatch(colors.get(count.label, "#ffcc00")), count.text)
                item.setData(Qt.ItemDataRole.UserRole, count.label)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                shown = count.label not in visibility.hidden_labels
                item.setCheckState(Qt.CheckState.Checked if shown else Qt.CheckState.Unchecked)
                self.counts.addItem(item)
        finally:
            self._syncing = False
        self.select_ids(selected)

    def selected_ids(self) -> set[int]:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        return {box_id for i in rows if (box_id := self.model.rows[i].id) is not None}

    def select_ids(self, ids: set[int]) -> None:
        """Select these boxes' rows (the canvas's selection), without reporting it back."""
        selection = QItemSelection()
        for box_id in ids:
            row = self.model.row_of(box_id)
            if row is not None:
                selection.select(self.model.index(row, 0), self.model.index(row, len(COLUMNS) - 1))
        self._syncing = True
        try:
            self.table.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
            if not selection.isEmpty():
                self.table.scrollTo(selection.indexes()[0])
        finally:
            self._syncing = False

    def _selected(self) -> None:
        if not self._syncing:
            self.selection_changed.emit(self.selected_ids())

    def _label_ticked(self, item: QListWidgetItem) -> None:
        if not self._syncing:
            shown = item.checkState() == Qt.CheckState.Checked
            self.label_visibility_changed.emit(item.data(Qt.ItemDataRole.UserRole), shown)
