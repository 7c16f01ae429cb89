"""Screenshots of issue 17's object list, canvas basics and label tools, from the real window (offscreen Qt):
`python scripts/desktop_shots_canvas.py`.

Opens a folder of synthetic shapes, runs the shipped tiny model's [detection] on one image, accepts one proposal,
moves another (edited) and draws one box (manual), then saves:

* ``docs/annotator-objects.png``: the window with the object list (states, scores, counts per label);
* ``docs/annotator-canvas.png``: drawing at 400 % with the crosshair guides, the draft rectangle, the overview
  and the status bar (cursor, selected box, zoom, "image n / N");
* ``docs/annotator-labels.png``: the `Ctrl+E` label chooser, narrowed by typing.
"""

from __future__ import annotations

from shot_window import ROOT, shapes_window


def main() -> None:
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    from annotator.core import edits
    from annotator.core.records import BoxRow, BoxState
    from model.annotations import Box, Origin

    shot = shapes_window(images=17)
    window, session, settle = shot.window, shot.session, shot.settle
    image_id = shot.busiest_image()  # the image where the tiny model proposes the most boxes
    window.go_to(image_id)
    proposals = sorted((r for r in session.boxes(image_id) if r.is_proposal), key=lambda r: -(r.score or 0))
    if proposals:
        session.push(edits.accept(proposals[:1]))
    if len(proposals) > 1:
        moved = proposals[1].moved_to(Box(**{k: v + 4 for k, v in proposals[1].box.model_dump().items()}))
        session.push(edits.replace_boxes("Move", [proposals[1]], [moved]))
    manual = BoxRow(image_id, "square", Box(x0=8, y0=8, x1=60, y1=50), BoxState.annotation, origin=Origin.manual)
    session.push(edits.add_boxes("Draw", image_id, [manual]))
    settle()
    shown = [row.id for row in session.boxes(image_id) if row.is_proposal]
    if shown:
        window.canvas.select({shown[0]})
    settle()
    out = ROOT / "docs"
    window.grab().save(str(out / "annotator-objects.png"))

    # Drawing at 400 %: crosshair guides and the draft rectangle, the overview's frame, the status bar.
    window.canvas.zoom_to(4.0)
    window.canvas.centerOn(QPointF(120, 120))
    window.set_drawing(True)
    viewport = window.canvas.viewport()

    def mouse(kind: QEvent.Type, at: QPointF, buttons: Qt.MouseButton) -> None:
        pos = QPointF(window.canvas.mapFromScene(at))
        button = Qt.MouseButton.LeftButton if kind == QEvent.Type.MouseButtonPress else Qt.MouseButton.NoButton
        event = QMouseEvent(kind, pos, viewport.mapToGlobal(pos), button, buttons, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(viewport, event)

    mouse(QEvent.Type.MouseButtonPress, QPointF(90, 80), Qt.MouseButton.LeftButton)
    mouse(QEvent.Type.MouseMove, QPointF(150, 140), Qt.MouseButton.LeftButton)
    settle()
    window.grab().save(str(out / "annotator-canvas.png"))
    mouse(QEvent.Type.MouseButtonRelease, QPointF(150, 140), Qt.MouseButton.NoButton)
    window.set_drawing(False)
    settle()

    # The label chooser, as Ctrl+E opens it on a selected box, narrowed by typing.
    boxes = session.boxes(image_id)
    window.canvas.select({boxes[0].id} if boxes[0].id is not None else set())
    window.tools.open_chooser()
    chooser = window.tools.chooser
    assert chooser is not None
    chooser.text.setText("le")
    chooser.resize(320, 260)
    settle()
    chooser.grab().save(str(out / "annotator-labels.png"))
    chooser.reject()
    for name in ("annotator-objects.png", "annotator-canvas.png", "annotator-labels.png"):
        print(out / name)
    window.close()


if __name__ == "__main__":
    main()
