"""The label chooser `Ctrl+E` opens (as labelme's does): type to narrow the project's labels, Enter or a
double-click gives the selected boxes the highlighted label, and a name that matches none creates that label."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QLineEdit, QListWidget, QVBoxLayout, QWidget

from annotator.core.objects import matching_labels


class LabelChooser(QDialog):
    chosen = Signal(str)

    def __init__(self, labels: Sequence[str], current: str | None, boxes: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Choose a label")
        self.labels = list(labels)
        self.text = QLineEdit()
        self.text.setPlaceholderText("Type to search, or a new label")
        self.text.textChanged.connect(self._narrow)
        self.text.installEventFilter(self)
        self.text.returnPressed.connect(self._accept)  # Enter in the field applies, whichever button is default
        self._done = False
        self.list = QListWidget()
        self.list.itemDoubleClicked.connect(lambda item: self._choose(item.text()))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Label for the {boxes} selected box(es):"))
        layout.addWidget(self.text)
        layout.addWidget(self.list)
        layout.addWidget(buttons)
        self._narrow("")
        if current in self.labels:
            self.list.setCurrentRow(self.labels.index(current))
        self.text.setFocus()

    def _narrow(self, text: str) -> None:
        current = self.list.currentItem().text() if self.list.currentItem() else None
        self.list.clear()
        matches = matching_labels(self.labels, text)
        self.list.addItems(matches)
        if matches:
            self.list.setCurrentRow(matches.index(current) if current in matches and not text else 0)

    def eventFilter(self, watched: object, event: object) -> bool:
        """Up and Down in the text field move through the list, so the keyboard never has to leave the field."""
        if watched is self.text and isinstance(event, QKeyEvent) and event.type() == QKeyEvent.Type.KeyPress:
            step = {Qt.Key.Key_Up: -1, Qt.Key.Key_Down: 1}.get(Qt.Key(event.key()))
            if step is not None and self.list.count():
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, self.list.currentRow() + step)))
                return True
        return super().eventFilter(watched, event)  # type: ignore[arg-type]

    def _accept(self) -> None:
        item = self.list.currentItem()
        typed = self.text.text().strip()
        self._choose(item.text() if item is not None else typed)

    def _choose(self, name: str) -> None:
        if name.strip() and not self._done:  # the field's Enter may reach the default button as well
            self._done = True
            self.chosen.emit(name.strip())
            self.accept()
