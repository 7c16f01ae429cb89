"""Box geometry for the canvas, Qt-free: handle hit-testing, resizing, moving and drawing, always inside the image.

Coordinates are pixels of the upright image. ``tolerance`` is in the same pixels (the canvas converts its
on-screen handle size with the current zoom), so hit-testing feels the same at every zoom level.
"""

from __future__ import annotations

from enum import Enum

from model.annotations import Box

MIN_SIZE = 1.0  # pixels: smaller boxes are not boxes (COCO export drops them too)


class Handle(str, Enum):
    top_left = "top_left"
    top = "top"
    top_right = "top_right"
    right = "right"
    bottom_right = "bottom_right"
    bottom = "bottom"
    bottom_left = "bottom_left"
    left = "left"

    @property
    def moves_left(self) -> bool:
        return self in (Handle.top_left, Handle.left, Handle.bottom_left)

    @property
    def moves_right(self) -> bool:
        return self in (Handle.top_right, Handle.right, Handle.bottom_right)

    @property
    def moves_top(self) -> bool:
        return self in (Handle.top_left, Handle.top, Handle.top_right)

    @property
    def moves_bottom(self) -> bool:
        return self in (Handle.bottom_left, Handle.bottom, Handle.bottom_right)


def handle_points(box: Box) -> dict[Handle, tuple[float, float]]:
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    return {
        Handle.top_left: (box.x0, box.y0),
        Handle.top: (cx, box.y0),
        Handle.top_right: (box.x1, box.y0),
        Handle.right: (box.x1, cy),
        Handle.bottom_right: (box.x1, box.y1),
        Handle.bottom: (cx, box.y1),
        Handle.bottom_left: (box.x0, box.y1),
        Handle.left: (box.x0, cy),
    }


def handle_at(box: Box, x: float, y: float, tolerance: float) -> Handle | None:
    """The handle under (x, y), corners first; None when the point is not on a handle."""
    best: tuple[float, Handle] | None = None
    for handle, (hx, hy) in handle_points(box).items():
        distance = max(abs(x - hx), abs(y - hy))
        if distance <= tolerance and (best is None or distance < best[0]):
            best = (distance, handle)
    return best[1] if best else None


def contains(box: Box, x: float, y: float) -> bool:
    return box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1


def clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def resize(box: Box, handle: Handle, x: float, y: float, width: float, height: float) -> Box:
    """``box`` with ``handle`` dragged to (x, y). Dragging past the opposite side flips the box, like every
    editor does; the result stays inside the image and at least :data:`MIN_SIZE` wide and high."""
    x, y = clamp(x, 0, width), clamp(y, 0, height)
    x0, y0, x1, y1 = box.xyxy
    if handle.moves_left:
        x0 = x
    if handle.moves_right:
        x1 = x
    if handle.moves_top:
        y0 = y
    if handle.moves_bottom:
        y1 = y
    return _ordered(x0, y0, x1, y1, width, height)


def translate(box: Box, dx: float, dy: float, width: float, height: float) -> Box:
    """``box`` moved by (dx, dy), stopped at the image border without changing its size."""
    dx = clamp(dx, -box.x0, width - box.x1)
    dy = clamp(dy, -box.y0, height - box.y1)
    return Box(x0=box.x0 + dx, y0=box.y0 + dy, x1=box.x1 + dx, y1=box.y1 + dy)


def drawn_box(x0: float, y0: float, x1: float, y1: float, width: float, height: float) -> Box | None:
    """The box a drag from (x0, y0) to (x1, y1) draws, inside the image; None for a click or a sliver."""
    xs = sorted((clamp(x0, 0, width), clamp(x1, 0, width)))
    ys = sorted((clamp(y0, 0, height), clamp(y1, 0, height)))
    if xs[1] - xs[0] < MIN_SIZE or ys[1] - ys[0] < MIN_SIZE:
        return None
    return Box(x0=xs[0], y0=ys[0], x1=xs[1], y1=ys[1])


def _ordered(x0: float, y0: float, x1: float, y1: float, width: float, height: float) -> Box:
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 - x0 < MIN_SIZE:
        x1 = min(x0 + MIN_SIZE, width)
        x0 = x1 - MIN_SIZE
    if y1 - y0 < MIN_SIZE:
        y1 = min(y0 + MIN_SIZE, height)
        y0 = y1 - MIN_SIZE
    return Box(x0=x0, y0=y0, x1=x1, y1=y1)
