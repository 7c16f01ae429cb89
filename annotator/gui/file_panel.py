"""The file list: every image of the folder with its status, filters by status and by file name, and a reviewed
counter."""

from __future__ import annotations

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QComboBox, QLabel, QLineEdit, QListView, QVBoxLayout, QWidget

from annotator.core.records import ImageRow, ImageStatus
from annotator.core.review_order import riskiest_first
from annotator.core.window_basics import matches_name

STATUS_COLORS = {
    ImageStatus.not_started: "#9e9e9e",
    ImageStatus.has_proposals: "#ffb300",
    ImageStatus.in_progress: "#42a5f5",
    ImageStatus.reviewed: "#43a047",
    ImageStatus.unreadable: "#e53935",
}

FILTERS: dict[str, set[ImageStatus] | None] = {
    "All images": None,
    "Unreviewed": {ImageStatus.not_started, ImageStatus.has_proposals, ImageStatus.in_progress},
    "Has proposals": {ImageStatus.has_proposals},
    "Reviewed": {ImageStatus.reviewed},
    "Unreadable": {ImageStatus.unreadable},
}

ORDERS = {  # how the list is sorted: the folder's order, or the review order of annotator.core.review_order
    "Folder order": None,
    "Riskiest first": riskiest_first,
}

_Index = QModelIndex | QPersistentModelIndex


def _dot(color: str) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(color))
    painter.setPen(QColor(color).darker(140))
    painter.drawEllipse(1, 1, 10, 10)
    painter.end()
    return QIcon(pixmap)


class FileListModel(QAbstractListModel):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[ImageRow] = []
        self._icons = {status: _dot(color) for status, color in STATUS_COLORS.items()}

    def set_rows(self, rows: list[ImageRow]) -> None:
        if [r.id for r in rows] == [r.id for r in self.rows]:
            self.rows = rows  # same files: repaint in place, keep the scroll position and selection
            if rows:
                self.dataChanged.emit(self.index(0), self.index(len(rows) - 1))
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            counts = []
            if row.annotations:
                counts.append(f"{row.annotations} box{'es' if row.annotations != 1 else ''}")
            if row.proposals:
                lowest = f", lowest {row.lowest_score:.2f}" if row.lowest_score is not None else ""
                counts.append(f"{row.proposals} proposed{lowest}")
            return row.path + (f"  ({', '.join(counts)})" if counts else "")
        if role == Qt.ItemDataRole.DecorationRole:
            return self._icons[row.status]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{row.path}\n{row.status.value}" + (f"\n{row.error}" if row.error else "")
        if role == Qt.ItemDataRole.UserRole:
            return row.id
        return None

    def row_of(self, image_id: int) -> int | None:
        for i, row in enumerate(self.rows):
            if row.id == image_id:
                return i
        return None


class FilePanel(QWidget):
    image_chosen = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.filter = QComboBox()
        self.filter.addItems(list(FILTERS))
        self.filter.setToolTip("Show only images with this status")
        self.name_filter = QLineEdit()
        self.name_filter.setPlaceholderText("Filter by file name (part of it, or *.png)")
        self.name_filter.setClearButtonEnabled(True)
        self.order = QComboBox()
        self.order.addItems(list(ORDERS))
        self.order.setToolTip("Riskiest first: images whose weakest proposal scores lowest come first")
        self.counter = QLabel()
        self.model = FileListModel()
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setUniformItemSizes(True)  # fast with 10k files
        self.view.clicked.connect(self._clicked)
        self.view.activated.connect(self._clicked)
        # The keyboard moves the current row (arrows, Page Up/Down, Home/End): it opens that image, like a click.
        self.view.selectionModel().currentChanged.connect(self._current_moved)
        self._refiltering = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.filter)
        layout.addWidget(self.name_filter)
        layout.addWidget(self.order)
        layout.addWidget(self.view)
        layout.addWidget(self.counter)
        self._all: list[ImageRow] = []
        self._current: int | None = None
        self.filter.currentTextChanged.connect(lambda _: self._refilter())
        self.name_filter.textChanged.connect(lambda _: self._refilter())
        self.order.currentTextChanged.connect(lambda _: self._refilter())

    def set_images(self, rows: list[ImageRow]) -> None:
        self._all = rows
        reviewed = sum(row.reviewed for row in rows)
        unreadable = sum(row.error is not None for row in rows)
        text = f"{reviewed} / {len(rows)} reviewed"
        self.counter.setText(text + (f", {unreadable} unreadable" if unreadable else ""))
        self._refilter()

    def set_current(self, image_id: int | None) -> None:
        changed = image_id != self._current
        self._current = image_id
        if changed:
            self._refilter()  # the filter keeps the current image listed, and drops the one we left
        else:
            self._select_current()

    def _select_current(self) -> None:
        row = self.model.row_of(self._current) if self._current is not None else None
        if row is None:
            self.view.clearSelection()
            return
        index = self.model.index(row)
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)

    def _refilter(self) -> None:
        wanted = FILTERS[self.filter.currentText()]
        name = self.name_filter.text()
        rows = [
            r
            for r in self._all
            if ((wanted is None or r.status in wanted) and matches_name(r.path, name)) or r.id == self._current
        ]
        order = ORDERS[self.order.currentText()]
        self._refiltering = True  # the rows' reset moves the current row; that is no choice of the person's
        try:
            self.model.set_rows(order(rows) if order is not None else rows)
            self._select_current()
        finally:
            self._refiltering = False

    def _current_moved(self, index: QModelIndex, _previous: QModelIndex) -> None:
        if self._refiltering or not index.isValid():
            return
        image_id = int(self.model.data(index, Qt.ItemDataRole.UserRole))  # type: ignore[arg-type]
        if image_id != self._current:
            self.image_chosen.emit(image_id)

    def _clicked(self, index: QModelIndex) -> None:
        self.image_chosen.emit(int(self.model.data(index, Qt.ItemDataRole.UserRole)))  # type: ignore[arg-type]
