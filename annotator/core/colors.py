"""Label colours that never change: derived from the label's name and kept in the project store, so a label has the
same colour on every image and in every session (labelme's colours shift when the label order changes). A name
whose colour would be hard to tell from another label's in the same project is moved to a clear hue once, when the
label is created."""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Iterable

GOLDEN = 0.618033988749895  # hue step that spreads successive colours evenly around the wheel
MIN_HUE_GAP = 0.06  # closer hues are hard to tell apart on a photo


def color_for(label: str, taken: Iterable[str] = ()) -> str:
    """A saturated, readable ``#rrggbb`` colour for ``label``; the same name always gives the same colour.

    ``taken``: colours of the project's other labels. When the name's own hue is too close to one of them, the hue
    steps around the wheel until it is clear, so a project's labels stay distinguishable. The store keeps the
    result, so it still never changes for that project.
    """
    digest = hashlib.sha256(label.strip().casefold().encode()).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    lightness = 0.45 + (digest[2] / 255.0) * 0.1  # dark enough for white text, light enough on dark photos
    others = [_hue(color) for color in taken]
    for _ in range(64):
        if all(_hue_gap(hue, other) >= MIN_HUE_GAP for other in others):
            break
        hue = (hue + GOLDEN) % 1.0
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, 0.85)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"


def _hue(color: str) -> float:
    red, green, blue = (int(color[i : i + 2], 16) / 255.0 for i in (1, 3, 5))
    return colorsys.rgb_to_hls(red, green, blue)[0]


def _hue_gap(a: float, b: float) -> float:
    gap = abs(a - b) % 1.0
    return min(gap, 1.0 - gap)
