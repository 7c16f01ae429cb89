"""Answering the window's modal dialogs in GUI tests: ``exec()`` blocks the test until the dialog is closed, so a timer
clicks the dialog's button the way a person would, once the dialog is up."""

from __future__ import annotations

from patience import HANG_MS
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QAbstractButton, QApplication, QWidget

POLL_MS = 20


class ModalAnswer:
    """Click the button labelled ``button`` on the next modal dialog; ``seen`` holds the dialog's text once done.

    ``before(dialog)`` runs first (to read or fill the dialog). Gives up after the hang bound, so a dialog that never
    opens leaves no timer behind to click a later one.
    """

    def __init__(self, button: str, before=None):
        self.button = button
        self.before = before
        self.dialog: QWidget | None = None
        self.seen = ""
        self._polls = HANG_MS // POLL_MS
        QTimer.singleShot(0, self._poll)

    def _poll(self) -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            self._polls -= 1
            if self._polls > 0:
                QTimer.singleShot(POLL_MS, self._poll)
            return
        self.dialog = dialog
        self.seen = " ".join(label.text() for label in dialog.findChildren(QWidget) if hasattr(label, "text"))
        if self.before is not None:
            self.before(dialog)
        buttons = [b for b in dialog.findChildren(QAbstractButton) if b.text().replace("&", "") == self.button]
        assert buttons, f"no button {self.button!r} on {dialog.windowTitle()!r}"
        buttons[0].click()

    @property
    def answered(self) -> bool:
        return self.dialog is not None
