"""The window's basics: Quit, File → Open recent, docks reopened from the View menu, the window's layout saved and
restored, room for the canvas on a small screen, the last server remembered, and a message on the canvas when the
image cannot be shown.

What is remembered across projects (recent folders, the last server, the layout) lives in the desktop's settings
file (:func:`app_settings`), not in a project's store. ``MINIGPT_ANNOTATE_CONFIG`` names the folder it lives in,
so tests (tests/conftest.py) never write to the real user's configuration.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QSettings, Qt
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QMenu

from annotator.core.window_basics import parse_recent, push_recent, recent_text

from .session import Session

if TYPE_CHECKING:
    from .main_window import MainWindow

CONFIG_ENV = "MINIGPT_ANNOTATE_CONFIG"
DEFAULT_SERVER = "http://localhost:9090"
# Dock widths that leave the canvas most of a 1024-pixel-wide window; each dock can be dragged wider.
DOCK_WIDTHS = {"Images": 180, "AI assistant": 220, "Labels": 220}
DEFAULT_SIZE = (1400, 900)


def app_settings() -> QSettings:
    """The desktop's own settings file: in ``$MINIGPT_ANNOTATE_CONFIG`` when set, else the user's config folder."""
    folder = os.environ.get(CONFIG_ENV)
    if folder:
        return QSettings(str(Path(folder) / "annotator.ini"), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "minigpt-annotate", "annotator")


def menu_named(window: QMainWindow, title: str) -> QMenu:
    """The window's menu called ``title`` (e.g. "&File")."""
    for action in window.menuBar().actions():
        if action.text() == title and action.menu() is not None:
            return action.menu()  # type: ignore[return-value]
    raise KeyError(title)


class WindowBasics(QObject):
    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.recent_menu = QMenu("Open &recent", window)
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._viewport = window.canvas.viewport()
        self.unreadable = QLabel(self._viewport)  # over the canvas while the image cannot be shown
        self.unreadable.setObjectName("unreadable_message")
        self.unreadable.setWordWrap(True)
        self.unreadable.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.unreadable.setStyleSheet("color: #ffffff; background: rgba(120, 20, 20, 200); padding: 16px;")
        self.unreadable.hide()
        self._viewport.installEventFilter(self)
        window.installEventFilter(self)
        window.project_opened.connect(self._opened)

    def handlers(self) -> dict[str, Callable[[], object]]:
        return {"quit": self.window.close}

    def install(self) -> None:
        """Add to the window's menus, and lay it out as last time (or to fit the screen the first time)."""
        window = self.window
        file_menu = menu_named(window, "&File")
        file_menu.insertMenu(window.actions_by_name["save"], self.recent_menu)
        file_menu.addSeparator()
        file_menu.addAction(window.actions_by_name["quit"])
        view = menu_named(window, "&View")
        view.addSeparator()
        for dock in self.docks():
            view.addAction(dock.toggleViewAction())  # a closed dock comes back from here
        self._restore_layout()

    def docks(self) -> list[QDockWidget]:
        return self.window.findChildren(QDockWidget)

    # --- layout ----------------------------------------------------------------------------------------------------
    def _restore_layout(self) -> None:
        window = self.window
        settings = app_settings()
        geometry, state = settings.value("window/geometry"), settings.value("window/state")
        if geometry is not None and state is not None:
            window.restoreGeometry(geometry)  # type: ignore[arg-type]
            window.restoreState(state)  # type: ignore[arg-type]
            return
        screen = window.screen().availableGeometry()
        window.resize(min(DEFAULT_SIZE[0], screen.width()), min(DEFAULT_SIZE[1], screen.height()))
        self.narrow_docks()

    def narrow_docks(self) -> None:
        """Give the canvas the room: docks at their narrow default widths."""
        docks = [dock for dock in self.docks() if dock.objectName() in DOCK_WIDTHS]
        widths = [DOCK_WIDTHS[dock.objectName()] for dock in docks]
        self.window.resizeDocks(docks, widths, Qt.Orientation.Horizontal)

    def save_layout(self) -> None:
        settings = app_settings()
        settings.setValue("window/geometry", self.window.saveGeometry())
        settings.setValue("window/state", self.window.saveState())
        settings.sync()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close and watched is self.window:
            self.save_layout()
        elif event.type() == QEvent.Type.Resize and watched is self._viewport:
            self._place_message()
        return False

    # --- recent folders --------------------------------------------------------------------------------------------
    def _opened(self, session: Session) -> None:
        settings = app_settings()
        entries = parse_recent(settings.value("recent"))
        entry = (str(session.folder.resolve()), str(session.store_path.resolve()))
        settings.setValue("recent", recent_text(push_recent(entries, entry)))
        settings.sync()
        session.current_changed.connect(lambda _: self._show_unreadable(session))
        session.images_changed.connect(lambda: self._show_unreadable(session))

    def recent(self) -> list[tuple[str, str]]:
        return parse_recent(app_settings().value("recent"))

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for folder, store in self.recent():
            action = self.recent_menu.addAction(folder)
            action.setToolTip(f"project store: {store}")
            action.setEnabled(Path(folder).is_dir())  # a folder moved or deleted since stays listed, greyed
            action.triggered.connect(lambda _=False, f=folder, s=store: self.window.open_folder(f, s))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(no folders opened yet)").setEnabled(False)

    # --- the last server -------------------------------------------------------------------------------------------
    def last_server(self) -> str:
        value = app_settings().value("last_server")
        return value if isinstance(value, str) and value else DEFAULT_SERVER

    def remember_server(self, url: str) -> None:
        settings = app_settings()
        settings.setValue("last_server", url)
        settings.sync()

    # --- an image that cannot be shown -----------------------------------------------------------------------------
    def _show_unreadable(self, session: Session) -> None:
        if session is not self.window.session:  # a closed project's late signal
            return
        image = session.image(session.current_id) if session.current_id is not None else None
        if image is None or image.error is None:
            self.unreadable.hide()
            return
        self.unreadable.setText(
            f"{image.path} cannot be shown\n\n{image.error}\n\n"
            "Fix or replace the file (batch runs skip it), or go on to the next image (D)."
        )
        self._place_message()
        self.unreadable.show()

    def _place_message(self) -> None:
        area = self._viewport.rect()
        margin = max(16, area.width() // 10)
        self.unreadable.setFixedWidth(max(100, area.width() - 2 * margin))
        self.unreadable.adjustSize()
        self.unreadable.move(margin, max(0, (area.height() - self.unreadable.height()) // 2))
