"""Small dialogs: the shortcut list, the batch-run options, connecting to a server."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotator.core.records import LabelRow
from annotator.core.shortcuts import SHORTCUTS


class ShortcutsDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        table = QTableWidget(len(SHORTCUTS), 2)
        table.setHorizontalHeaderLabels(["Keys", "Action"])
        for row, shortcut in enumerate(SHORTCUTS):
            table.setItem(row, 0, QTableWidgetItem(", ".join(shortcut.keys)))
            table.setItem(row, 1, QTableWidgetItem(shortcut.text))
        table.resizeColumnsToContents()
        table.verticalHeader().setVisible(False)
        self.table = table
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(
            QLabel(
                "Mouse: wheel zooms, middle button or Space + drag pans, drag a box to move it and its handles to\n"
                "resize it, double-click a proposal to accept it. Arrow keys nudge the selection (Shift: 10 px)."
            )
        )
        layout.addWidget(table)
        layout.addWidget(buttons)
        self.resize(560, 640)


@dataclass(frozen=True)
class BatchOptions:
    labels: tuple[str, ...]
    extra: str  # comma-separated things to detect that are not labels yet
    unreviewed_only: bool


class BatchDialog(QDialog):
    """Which labels to detect over the folder, and on which images."""

    def __init__(self, labels: list[LabelRow], parent: QWidget | None = None, *, counts: tuple[int, int] | None = None):
        """``counts``: how many images the run covers (unreviewed only, all), to say before it starts."""
        super().__init__(parent)
        self.setWindowTitle("Detect over the folder")
        self._counts = counts
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Run [detection] for these labels; results are stored as proposals to review."))
        self.checks = []
        for label in labels:
            check = QCheckBox(label.name)
            check.setChecked(True)
            self.checks.append(check)
            layout.addWidget(check)
        self.extra = QLineEdit()
        self.extra.setPlaceholderText("more, comma-separated (e.g. red balloon, kite)")
        layout.addWidget(self.extra)
        self.unreviewed = QRadioButton("Unreviewed images only")
        self.unreviewed.setChecked(True)
        self.everything = QRadioButton("All images")
        layout.addWidget(self.unreviewed)
        layout.addWidget(self.everything)
        self.count = QLabel()
        layout.addWidget(self.count)
        self.unreviewed.toggled.connect(self._count_changed)
        self._count_changed()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _count_changed(self) -> None:
        if self._counts is None:
            self.count.setVisible(False)
            return
        n = self._counts[0] if self.unreviewed.isChecked() else self._counts[1]
        self.count.setText(f"Runs on {n} image{'s' if n != 1 else ''} (unreadable images are skipped)")

    def options(self) -> BatchOptions:
        chosen = tuple(check.text() for check in self.checks if check.isChecked())
        return BatchOptions(chosen, self.extra.text(), self.unreviewed.isChecked())
