"""The label manager: the project's labels with their colours, the current label, adding labels, and a search
field that narrows the list (:func:`annotator.core.objects.matching_labels`)."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from annotator.core.objects import matching_labels
from annotator.core.records import LabelRow


def swatch(color: str) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(color))
    return QIcon(pixmap)


class LabelPanel(QWidget):
    label_added = Signal(str)
    apply_requested = Signal(str)  # give the selected boxes this label
    rename_requested = Signal(str)
    prompt_requested = Signal(str)  # set what the model is asked for this label
    delete_requested = Signal(str)
    color_requested = Signal(str)  # choose another colour for this label

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search labels…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._filter)
        self.search.returnPressed.connect(self._pick_first_match)
        self.list = QListWidget()
        self.list.setToolTip("The current label: new boxes get it. Double-click to give it to the selected boxes.")
        self.list.itemDoubleClicked.connect(lambda item: self.apply_requested.emit(item.text()))
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.new_label = QLineEdit()
        self.new_label.setPlaceholderText("New label…")
        self.new_label.returnPressed.connect(self._add)
        add = QPushButton("Add")
        add.clicked.connect(self._add)
        row = QHBoxLayout()
        row.addWidget(self.new_label)
        row.addWidget(add)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.list)
        layout.addLayout(row)

    def set_labels(self, labels: list[LabelRow]) -> None:
        current = self.current_label()
        self.list.clear()
        for label in labels:
            item = QListWidgetItem(swatch(label.color), label.name)
            item.setData(Qt.ItemDataRole.UserRole, label.color)
            if label.prompt:
                item.setToolTip(f"asks the model for: {label.prompt}")
            self.list.addItem(item)
        self.set_current_label(current or (labels[0].name if labels else None))
        self._filter(self.search.text())

    def current_label(self) -> str | None:
        item = self.list.currentItem()
        return item.text() if item is not None else None

    def set_current_label(self, name: str | None) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).text() == name:
                self.list.setCurrentRow(i)
                return

    def _menu(self, pos: QPoint) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        menu = QMenu(self)
        name = item.text()
        menu.addAction("Give to the selected boxes", lambda: self.apply_requested.emit(name))
        menu.addAction("Rename…", lambda: self.rename_requested.emit(name))
        menu.addAction("Set what the model is asked…", lambda: self.prompt_requested.emit(name))
        menu.addAction("Colour…", lambda: self.color_requested.emit(name))
        menu.addAction("Delete (if unused)", lambda: self.delete_requested.emit(name))
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def names(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def _filter(self, text: str) -> None:
        kept = set(matching_labels(self.names(), text))
        for i in range(self.list.count()):
            self.list.item(i).setHidden(self.list.item(i).text() not in kept)

    def _pick_first_match(self) -> None:
        """Enter in the search field makes the best match the current label."""
        matches = matching_labels(self.names(), self.search.text())
        if matches:
            self.set_current_label(matches[0])

    def _add(self) -> None:
        name = self.new_label.text().strip()
        if name:
            self.label_added.emit(name)
            self.new_label.clear()
            self.set_current_label(name)
