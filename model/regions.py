"""Boxes between our pixels and Label Studio's regions (percent of the original image, top-left + size).

Plain geometry and JSON, no SDK: the backend and `autolabel` build the same regions from here.
"""

from __future__ import annotations

import math
import secrets

from model.annotations import Box


def region_id() -> str:
    """Short unique ids like Label Studio's own."""
    return secrets.token_urlsafe(8)


def box_to_value(box: Box, width: int, height: int) -> dict[str, float]:
    """Pixels of the upright image → Label Studio's percent geometry, clamped to 0-100."""
    x0, y0, x1, y1 = (
        min(max(box.x0, 0.0), width),
        min(max(box.y0, 0.0), height),
        min(max(box.x1, 0.0), width),
        min(max(box.y1, 0.0), height),
    )
    return {
        "x": 100.0 * x0 / width,
        "y": 100.0 * y0 / height,
        "width": 100.0 * (x1 - x0) / width,
        "height": 100.0 * (y1 - y0) / height,
        "rotation": 0.0,
    }


def value_to_box(value: dict, width: int, height: int) -> Box | None:
    """Label Studio's percent geometry → pixels, clamped to the image; None for a malformed or degenerate rectangle.

    A rotated rectangle becomes its axis-aligned hull, because COCO and the model only know upright boxes. Never
    raises: a missing or non-numeric field, or geometry so large that it overflows, gives None.
    """
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
        rotation = float(value.get("rotation") or 0.0)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None
    px, py, pw, ph = x * width / 100.0, y * height / 100.0, w * width / 100.0, h * height / 100.0
    if not all(math.isfinite(v) for v in (px, py, pw, ph, px + pw, py + ph, rotation)):
        return None  # `Infinity` in the JSON, or 1e308 percent: no box
    corners = [(px, py), (px + pw, py), (px + pw, py + ph), (px, py + ph)]
    if rotation % 360:
        corners = _rotated(corners, (px, py), rotation)
    xs = [min(max(cx, 0.0), float(width)) for cx, _ in corners]
    ys = [min(max(cy, 0.0), float(height)) for _, cy in corners]
    if not all(math.isfinite(v) for v in (*xs, *ys)) or max(xs) - min(xs) <= 0 or max(ys) - min(ys) <= 0:
        return None
    return Box(x0=min(xs), y0=min(ys), x1=max(xs), y1=max(ys))


def _rotated(corners: list[tuple[float, float]], origin: tuple[float, float], degrees: float) -> list:
    """Label Studio rotates a rectangle clockwise (y points down) about its top-left corner."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    ox, oy = origin
    return [(ox + (cx - ox) * cos - (cy - oy) * sin, oy + (cx - ox) * sin + (cy - oy) * cos) for cx, cy in corners]


def rectangle_region(
    box: Box,
    label: str,
    score: float | None,
    *,
    width: int,
    height: int,
    from_name: str,
    to_name: str,
    ident: str | None = None,
) -> dict:
    """One `rectanglelabels` result item as Label Studio stores it; ``ident`` fixes its id (default: a random one;
    files written from a journal need the same ids on every rewrite)."""
    region = {
        "id": ident if ident is not None else region_id(),
        "from_name": from_name,
        "to_name": to_name,
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {**box_to_value(box, width, height), "rectanglelabels": [label]},
    }
    if score is not None:
        region["score"] = float(score)
    return region


def prediction(regions: list[dict], model_version: str) -> dict:
    """One Label Studio prediction of ``regions``: its score is their mean score (0.0 when none has one)."""
    scores = [r["score"] for r in regions if "score" in r]
    return {"result": regions, "score": sum(scores) / len(scores) if scores else 0.0, "model_version": model_version}
