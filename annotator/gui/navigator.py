"""The overview (navigator): the whole image small, with a frame around the part the canvas shows.

Clicking or dragging in it centres the canvas there, which is how one moves around an 8000 × 6000 photo at 100%.
It has its own scene holding the same (implicitly shared) pixmap, so the boxes' label tags, drawn at a constant
screen size, do not clutter it.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPen, QResizeEvent
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene, QGraphicsView, QWidget

from .canvas import Canvas


class Navigator(QGraphicsView):
    def __init__(self, canvas: Canvas, parent: QWidget | None = None):
        super().__init__(parent)
        self.canvas = canvas
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.SmoothPixmapTransform)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setBackgroundBrush(QColor("#202020"))
        self.setMinimumSize(160, 120)
        self.setToolTip("Overview: the frame is what the canvas shows; click or drag to move there")
        self._pixmap = QGraphicsPixmapItem()
        self.scene().addItem(self._pixmap)
        self.frame = QGraphicsRectItem()
        pen = QPen(QColor("#ff3d00"), 2)
        pen.setCosmetic(True)
        self.frame.setPen(pen)
        self.frame.setZValue(1)
        self.scene().addItem(self.frame)
        canvas.boxes_shown.connect(self._image_changed)
        canvas.view_changed.connect(self._follow)

    def _image_changed(self) -> None:
        pixmap = self.canvas.pixmap
        width, height = self.canvas.image_size
        if pixmap.cacheKey() != self._pixmap.pixmap().cacheKey():
            self._pixmap.setPixmap(pixmap)
            self._pixmap.setScale(width / pixmap.width() if not pixmap.isNull() else 1.0)
            self.scene().setSceneRect(QRectF(0, 0, max(width, 1), max(height, 1)))
            self._fit()
        self._follow()

    def _follow(self) -> None:
        self.frame.setRect(self.canvas.visible_area())

    def _fit(self) -> None:
        self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._centre(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._centre(event)

    def _centre(self, event: QMouseEvent) -> None:
        self.canvas.centerOn(self.mapToScene(event.position().toPoint()))
        event.accept()
