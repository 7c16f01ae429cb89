"""Label colours that never change: derived from the label's name, so the same label has the same colour on every
image, in every session and in every project (labelme's colours shift when the label order changes)."""

from __future__ import annotations

import colorsys
import hashlib


def color_for(label: str) -> str:
    """A saturated, readable ``#rrggbb`` colour for ``label``; the same name always gives the same colour."""
    digest = hashlib.sha256(label.strip().casefold().encode()).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    lightness = 0.45 + (digest[2] / 255.0) * 0.1  # dark enough for white text, light enough on dark photos
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, 0.85)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
