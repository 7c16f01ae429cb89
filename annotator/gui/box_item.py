"""One box on the canvas: drawn in its label's colour, dashed while it is a proposal, with handles when selected.

Geometry lives in scene coordinates, which are pixels of the upright image. Dragging uses the Qt-free helpers of
:mod:`annotator.core.geometry`; the item reports the finished drag once, on release, so one drag is one undo step.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsSceneHoverEvent,
    QGraphicsSceneMouseEvent,
    QStyleOptionGraphicsItem,
    QWidget,
)

from annotator.core import geometry
from annotator.core.geometry import Handle
from annotator.core.records import BoxRow
from model.annotations import Box

HANDLE_PX = 8.0  # on-screen size of a handle, whatever the zoom
TAG_GAP_PX = HANDLE_PX / 2 + 1  # between a box's top edge and its tag, on screen: the handles' room

_CURSORS = {
    Handle.top_left: Qt.CursorShape.SizeFDiagCursor,
    Handle.bottom_right: Qt.CursorShape.SizeFDiagCursor,
    Handle.top_right: Qt.CursorShape.SizeBDiagCursor,
    Handle.bottom_left: Qt.CursorShape.SizeBDiagCursor,
    Handle.top: Qt.CursorShape.SizeVerCursor,
    Handle.bottom: Qt.CursorShape.SizeVerCursor,
    Handle.left: Qt.CursorShape.SizeHorCursor,
    Handle.right: Qt.CursorShape.SizeHorCursor,
}

EditedCallback = Callable[[BoxRow, Box], None]


class LabelTag(QGraphicsItem):
    """The label (and score) above a box, at a constant on-screen size."""

    def __init__(self, parent: QGraphicsItem):
        super().__init__(parent)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.text = ""
        self.color = QColor("white")
        self._font = QFont()
        self._font.setPointSizeF(9)

    def set_text(self, text: str, color: QColor) -> None:
        self.prepareGeometryChange()
        self.text, self.color = text, color
        self.update()

    def boundingRect(self) -> QRectF:
        width = 7.0 * len(self.text) + 8
        # Above the top row of handles (half a handle reaches above the edge), so it never covers them, however
        # narrow the box is on screen.
        return QRectF(0, -18 - TAG_GAP_PX, width, 18)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        rect = self.boundingRect()
        painter.fillRect(rect, self.color)
        painter.setPen(QColor("white"))
        painter.setFont(self._font)
        painter.drawText(rect.adjusted(4, 0, 0, 0), Qt.AlignmentFlag.AlignVCenter, self.text)


class BoxItem(QGraphicsItem):
    def __init__(
        self,
        row: BoxRow,
        color: str,
        bounds: tuple[float, float],
        on_edited: EditedCallback,
        on_activated: Callable[[BoxRow], None] | None = None,
    ):
        super().__init__()
        self._on_activated = on_activated
        self.row = row
        self.box = row.box  # follows the drag; row.box is what the store holds
        self.color = QColor(color)
        self.bounds = bounds  # image width, height
        self._on_edited = on_edited
        self._drag: tuple[Handle | None, QPointF, Box] | None = None
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsFocusable)
        self.setAcceptHoverEvents(True)
        self.setZValue(self._base_z())
        self.tag = LabelTag(self)
        self._refresh_tag()

    # --- state -----------------------------------------------------------------------------------------------------
    def set_row(self, row: BoxRow, color: str) -> None:
        self.prepareGeometryChange()
        self.row, self.box, self.color = row, row.box, QColor(color)
        self.setZValue(3 if self.isSelected() else self._base_z())
        self._refresh_tag()
        self.update()

    def _refresh_tag(self) -> None:
        text = self.row.label
        if self.row.is_proposal and self.row.score is not None:
            text += f" {self.row.score:.2f}"
        self.tag.set_text(text, self.color)
        self._place_tag()

    def set_tag(self, text: str | None) -> None:
        """The tag's text, or None to hide it: the canvas decides from its show/hide toggles."""
        self.tag.setVisible(text is not None)
        if text is not None:
            self.tag.set_text(text, self.color)

    def _place_tag(self) -> None:
        self.tag.setPos(self.box.x0, self.box.y0)  # above the box; the canvas keeps a margin above the image

    def _base_z(self) -> float:
        return 2 if self.row.is_proposal else 1

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: object) -> object:
        if change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self.setZValue(3 if value else self._base_z())  # the selected box and its tag on top
        return super().itemChange(change, value)

    def _view_scale(self) -> float:
        scene = self.scene()
        views = scene.views() if scene is not None else []
        return views[0].transform().m11() if views else 1.0

    def _tolerance(self) -> float:
        return HANDLE_PX / max(self._view_scale(), 1e-6)

    # --- painting --------------------------------------------------------------------------------------------------
    def boundingRect(self) -> QRectF:
        margin = self._tolerance()
        return QRectF(self.box.x0, self.box.y0, self.box.width, self.box.height).adjusted(
            -margin, -margin, margin, margin
        )

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        selected = self.isSelected()
        pen = QPen(self.color, 3 if selected else 2)
        pen.setCosmetic(True)  # constant on-screen width at every zoom
        if self.row.is_proposal:
            pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        fill = QColor(self.color)
        fill.setAlpha(70 if selected else (0 if self.row.is_proposal else 35))
        painter.setBrush(QBrush(fill))
        painter.drawRect(QRectF(self.box.x0, self.box.y0, self.box.width, self.box.height))
        if selected:
            size = self._tolerance()
            painter.setBrush(QBrush(QColor("white")))
            for x, y in geometry.handle_points(self.box).values():
                painter.drawRect(QRectF(x - size / 2, y - size / 2, size, size))

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRect(self.boundingRect())
        return path

    # --- interaction -----------------------------------------------------------------------------------------------
    def hoverMoveEvent(self, event: QGraphicsSceneHoverEvent) -> None:
        handle = self._handle_at(event.pos()) if self.isSelected() else None
        self.setCursor(_CURSORS[handle] if handle else Qt.CursorShape.SizeAllCursor)
        super().hoverMoveEvent(event)

    def _handle_at(self, pos: QPointF) -> Handle | None:
        return geometry.handle_at(self.box, pos.x(), pos.y(), self._tolerance())

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            event.ignore()
            return
        handle = self._handle_at(event.pos()) if self.isSelected() else None
        super().mousePressEvent(event)  # selection (Ctrl+click adds)
        self._drag = (handle, event.scenePos(), self.box)
        event.accept()

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._drag is None:
            return
        handle, start, box = self._drag
        width, height = self.bounds
        pos = event.scenePos()
        if handle is None:
            moved = geometry.translate(box, pos.x() - start.x(), pos.y() - start.y(), width, height)
        else:
            moved = geometry.resize(box, handle, pos.x(), pos.y(), width, height)
        self.prepareGeometryChange()
        self.box = moved
        self._place_tag()
        self.update()

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._on_activated is not None:
            self._on_activated(self.row)  # a double-click accepts a proposal
        event.accept()

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        if self._drag is not None and self.box != self.row.box:
            self._on_edited(self.row, self.box)
        self._drag = None
