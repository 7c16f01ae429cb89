"""The image canvas: a ``QGraphicsView`` whose scene coordinates are pixels of the upright image.

Wheel zooms around the cursor, the middle button (or Space + drag) pans, and Fit shows the whole image. In draw
mode a left drag draws a box; otherwise boxes are selected, moved and resized through their handles. The canvas
only reports what the person did (``box_drawn``, ``box_edited``); the window turns that into undoable edits.

While drawing, crosshair guides follow the cursor, and the guides and the draft rectangle are drawn twice (a dark
wide line under a light dashed one) so they stay visible on any background. Boxes can be hidden one by one, by
label, or all at once (:class:`annotator.core.objects.Visibility`, :class:`~annotator.core.objects.DisplayOptions`):
hiding is a view filter and never changes the store.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QResizeEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from annotator.core import geometry
from annotator.core.objects import DisplayOptions, Visibility, tag_text
from annotator.core.records import BoxRow
from model.annotations import Box

from .box_item import BoxItem

ZOOM_STEP = 1.25
MAX_ZOOM = 40.0  # screen pixels per image pixel
MIN_ZOOM_OF_FIT = 0.5  # zoom out stops at half the fitted size: smaller shows nothing, and tags pile up


def contrast_pens() -> tuple[QPen, QPen]:
    """A dark wide pen and a light dashed one drawn over it: one of the two always contrasts with the image."""
    under = QPen(QColor(0, 0, 0, 200), 3)
    over = QPen(QColor("#ffffff"), 1, Qt.PenStyle.DashLine)
    for pen in (under, over):
        pen.setCosmetic(True)  # constant on-screen width at every zoom
    return under, over


class DraftItem(QGraphicsRectItem):
    """The rectangle being drawn, visible on white, black and busy images alike."""

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)  # crisp lines: no blend into grey
        for pen in contrast_pens():
            painter.setPen(pen)
            painter.drawRect(self.rect())


class Canvas(QGraphicsView):
    box_drawn = Signal(object)  # Box
    box_edited = Signal(object, object)  # BoxRow as stored, Box after the drag
    box_activated = Signal(object)  # BoxRow double-clicked
    nudge_requested = Signal(float, float)  # arrow keys: move the selection by (dx, dy) image pixels
    cursor_moved = Signal(float, float)  # the cursor in image pixels
    view_changed = Signal()  # zoomed or scrolled
    boxes_shown = Signal()  # the image or its boxes changed: lists that mirror the canvas refresh

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setBackgroundBrush(QColor("#303030"))
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setMouseTracking(True)
        self._pixmap = QGraphicsPixmapItem()
        self._pixmap.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self._pixmap)
        self._items: dict[int, BoxItem] = {}
        self.image_size: tuple[float, float] = (0.0, 0.0)
        self.drawing = False
        self._draft: DraftItem | None = None
        self._draft_start: QPointF | None = None
        self._panning: QPointF | None = None
        self._space_down = False
        self._fitted = True  # keep fitting on resize until the user zooms
        self._cursor: QPointF | None = None  # in scene coordinates, for the crosshair guides
        self.display = DisplayOptions()
        self.visibility = Visibility()

    # --- content ---------------------------------------------------------------------------------------------------
    def show_image(self, image: QImage | None, width: int, height: int) -> None:
        """Show ``image`` (possibly downscaled for display) stretched over the full ``width`` × ``height``."""
        self.clear_boxes()
        self.image_size = (float(width), float(height))
        if image is None or image.isNull():
            self._pixmap.setPixmap(QPixmap())
        else:
            self._pixmap.setPixmap(QPixmap.fromImage(image))
            self._pixmap.setScale(width / image.width())
        self.scene().setSceneRect(QRectF(0, 0, max(width, 1), max(height, 1)))
        self.fit()
        self.boxes_shown.emit()

    @property
    def pixmap(self) -> QPixmap:
        return self._pixmap.pixmap()

    def set_boxes(self, rows: list[BoxRow], colors: dict[str, str]) -> None:
        """Show exactly ``rows``, updating items in place so the selection survives."""
        wanted = {row.id: row for row in rows if row.id is not None}
        for box_id in list(self._items):
            if box_id not in wanted:
                self.scene().removeItem(self._items.pop(box_id))
        for box_id, row in wanted.items():
            color = colors.get(row.label, "#ffcc00")
            item = self._items.get(box_id)
            if item is None:
                item = BoxItem(row, color, self.image_size, self._edited, self.box_activated.emit)
                self._items[box_id] = item
                self.scene().addItem(item)
            elif item.row != row or item.color != QColor(color):
                item.set_row(row, color)
        self.apply_view_filters()

    def apply_view_filters(self) -> None:
        """Show, hide and tag the boxes as the display toggles and the visibility filter say; a box that is hidden
        is also deselected, so no key acts on a box the person cannot see."""
        for item in self._items.values():
            shown = self.display.boxes and self.visibility.shows(item.row)
            if not shown:
                item.setSelected(False)
            item.setVisible(shown)
            item.set_tag(tag_text(item.row, self.display))
        self.boxes_shown.emit()

    def clear_boxes(self) -> None:
        for item in self._items.values():
            self.scene().removeItem(item)
        self._items.clear()

    def items_by_id(self) -> dict[int, BoxItem]:
        return dict(self._items)

    def selected_rows(self) -> list[BoxRow]:
        return [item.row for item in self._items.values() if item.isSelected()]

    def select(self, ids: set[int]) -> None:
        self.scene().clearSelection()
        for box_id in ids:
            if box_id in self._items:
                self._items[box_id].setSelected(True)

    def _edited(self, row: BoxRow, box: Box) -> None:
        self.box_edited.emit(row, box)

    # --- modes and zoom --------------------------------------------------------------------------------------------
    def set_drawing(self, drawing: bool) -> None:
        self.drawing = drawing
        self.viewport().setCursor(Qt.CursorShape.CrossCursor if drawing else Qt.CursorShape.ArrowCursor)
        for item in self._items.values():
            item.setFlag(item.GraphicsItemFlag.ItemIsSelectable, not drawing)
        if drawing:
            self.scene().clearSelection()
        self.viewport().update()  # the crosshair guides appear or go

    def fit(self) -> None:
        self._fitted = True
        self.fitInView(self._fit_rect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.view_changed.emit()

    def _fit_rect(self) -> QRectF:
        rect = self.sceneRect()
        margin = 0.04 * max(rect.width(), rect.height())  # room for the label tags of boxes at the top edge
        return rect.adjusted(-margin, -margin, margin, margin)

    def zoom(self, factor: float) -> None:
        scale = self.transform().m11()
        factor = min(factor, MAX_ZOOM / max(scale, 1e-9))
        factor = max(factor, MIN_ZOOM_OF_FIT * self._fit_scale() / max(scale, 1e-9))
        if factor == 1.0:
            return
        self._fitted = False
        self.scale(factor, factor)
        self.view_changed.emit()

    def zoom_scale(self) -> float:
        """Screen pixels per image pixel (1.0 is 100%)."""
        return self.transform().m11()

    def zoom_to(self, scale: float) -> None:
        """Show the image at ``scale`` screen pixels per image pixel, keeping the centre of the view in place."""
        centre = self.mapToScene(self.viewport().rect().center())
        self._fitted = False
        self.setTransform(QTransform.fromScale(scale, scale))
        self.centerOn(centre)
        self.view_changed.emit()

    def fit_width(self) -> None:
        """The image's full width in the view, its top edge (with room for label tags) at the top."""
        width = self.image_size[0]
        if width <= 0:
            return
        self.zoom_to(self.viewport().width() / (width * 1.04))
        self.verticalScrollBar().setValue(self.verticalScrollBar().minimum())

    def visible_area(self) -> QRectF:
        """The part of the image the view shows, in image pixels."""
        return self.mapToScene(self.viewport().rect()).boundingRect().intersected(self.sceneRect())

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self.view_changed.emit()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        """Crosshair guides through the cursor, across the whole image, while drawing."""
        if not self.drawing or self._cursor is None or not self.sceneRect().contains(self._cursor):
            return
        area, here = self.sceneRect(), self._cursor
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)  # crisp lines: no blend into grey
        for pen in contrast_pens():
            painter.setPen(pen)
            painter.drawLine(QPointF(area.left(), here.y()), QPointF(area.right(), here.y()))
            painter.drawLine(QPointF(here.x(), area.top()), QPointF(here.x(), area.bottom()))

    def _fit_scale(self) -> float:
        """The zoom at which Fit would show the whole image (with its margin) in the viewport as it is now."""
        rect, view = self._fit_rect(), self.viewport().rect()
        return min(view.width() / max(rect.width(), 1e-9), view.height() / max(rect.height(), 1e-9))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom(ZOOM_STEP**steps)
        event.accept()

    # --- mouse: pan, draw ------------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton or (
            event.button() == Qt.MouseButton.LeftButton and self._space_down
        ):
            self._panning = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        if self.drawing and event.button() == Qt.MouseButton.LeftButton:
            self._draft_start = self.mapToScene(event.position().toPoint())
            self._draft = DraftItem()
            self._draft.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, False)
            self._draft.setZValue(10)
            self.scene().addItem(self._draft)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._cursor = self.mapToScene(event.position().toPoint())
        self.cursor_moved.emit(self._cursor.x(), self._cursor.y())
        if self.drawing:
            self.viewport().update()  # the crosshair guides follow the cursor
        if self._panning is not None:
            delta = event.position() - self._panning
            self._panning = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(delta.y()))
            event.accept()
            return
        if self._draft is not None and self._draft_start is not None:
            here = self.mapToScene(event.position().toPoint())
            self._draft.setRect(QRectF(self._draft_start, here).normalized())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._panning is not None:
            self._panning = None
            self.viewport().setCursor(Qt.CursorShape.CrossCursor if self.drawing else Qt.CursorShape.ArrowCursor)
            event.accept()
            return
        if self._draft is not None and self._draft_start is not None:
            end = self.mapToScene(event.position().toPoint())
            self.scene().removeItem(self._draft)
            self._draft = None
            start, self._draft_start = self._draft_start, None
            box = geometry.drawn_box(start.x(), start.y(), end.x(), end.y(), *self.image_size)
            if box is not None:
                self.box_drawn.emit(box)
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        arrows = {Qt.Key.Key_Left: (-1, 0), Qt.Key.Key_Right: (1, 0), Qt.Key.Key_Up: (0, -1), Qt.Key.Key_Down: (0, 1)}
        if event.key() in arrows and self.selected_rows():
            step = 10.0 if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 1.0
            dx, dy = arrows[Qt.Key(event.key())]
            self.nudge_requested.emit(dx * step, dy * step)
            return
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self.viewport().setCursor(Qt.CursorShape.CrossCursor if self.drawing else Qt.CursorShape.ArrowCursor)
            return
        super().keyReleaseEvent(event)
