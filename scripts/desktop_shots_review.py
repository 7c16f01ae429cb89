"""Take the README's screenshots of issue 17's review flow and window basics, from the real window (offscreen Qt):
`python scripts/desktop_shots_review.py`.

* ``docs/review-flow.png``: a batch over the folder running ("n / N, about … left" in the AI panel), and the warning
  Ctrl+K shows for an image that still has proposals (a dialog is its own window, so it is painted over the grab).
* ``docs/window-basics.png``: the window at 1024×680 (the canvas gets most of the width), the image list filtered by
  name, and the message the canvas shows for a file that cannot be read.
* ``docs/export-menu.png``: the File menu with Open recent, the YOLO and Pascal VOC exports, and Quit.

The settings file goes to a temporary folder, so taking the shots leaves the user's recent folders alone.
"""

from __future__ import annotations

import time
from pathlib import Path

from shot_window import ROOT, shapes_window


def main() -> None:
    from PySide6.QtCore import QPoint, QTimer
    from PySide6.QtGui import QPainter
    from PySide6.QtWidgets import QApplication

    from annotator.core.runs import detection_prompts
    from annotator.gui.window_basics import menu_named

    def damage(folder: Path) -> None:
        (folder / "zz-damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off by an interrupted copy")

    window_shot = shapes_window(images=12, size=(1024, 680), before_open=damage)
    app, window, session = window_shot.app, window_shot.window, window_shot.session

    def settle(until=lambda: False, seconds: float = 600) -> None:
        end = time.monotonic() + seconds
        while not until() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    settle(lambda: window.ai is not None and window.ai.engine is not None)
    docs = ROOT / "docs"

    # The review flow: a batch two images in, and the warning over the window.
    window.go_to(session.images()[0].id)
    window.start_batch(detection_prompts(session.labels()), unreviewed_only=True)
    settle(lambda: window.ai is not None and window.ai.busy and "left" in window.ai_panel.progress.format())
    settle(seconds=0.5)
    shot = window.grab()

    def grab_warning() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(20, grab_warning)
            return
        dialog.adjustSize()
        painter = QPainter(shot)
        picture = dialog.grab()
        painter.drawPixmap(QPoint((shot.width() - picture.width()) // 2, 160), picture)
        painter.end()
        dialog.reject()

    settle(lambda: bool(session.images()[0].proposals))
    QTimer.singleShot(0, grab_warning)
    window.review.confirm_reviewed(session.image(session.images()[0].id))
    shot.save(str(docs / "review-flow.png"))
    window.ai.cancel()
    settle(lambda: window.ai is not None and not window.ai.busy)

    # Window basics: the 1024×680 layout, the name filter, an unreadable image.
    window.files.name_filter.setText("zz")
    window.go_to(next(row.id for row in session.images() if row.path == "zz-damaged.jpg"))
    settle(seconds=0.3)
    window.grab().save(str(docs / "window-basics.png"))

    menu = menu_named(window, "&File")
    menu.aboutToShow.emit()
    window.basics.recent_menu.aboutToShow.emit()
    menu.adjustSize()
    menu.grab().save(str(docs / "export-menu.png"))
    for name in ("review-flow.png", "window-basics.png", "export-menu.png"):
        print(docs / name)
    window.close()


if __name__ == "__main__":
    main()
