"""Images for the canvas: upright, RGB, and never bigger in memory than the screen can use.

A 12000×9000 camera JPEG is 324 MB decoded; the canvas needs at most a few megapixels of it. So the header is read
first, a JPEG is decoded at a reduced scale by libjpeg itself (``draft``), the result is downscaled to fit
``max_pixels``, and only then is the EXIF orientation applied, to the small image. Other formats are decoded at full
size (their decoders cannot reduce) and downscaled at once; the 250 MP decompression-bomb limit of
:func:`model.images.load_image` bounds them.

Boxes stay in full-resolution upright pixels: ``DisplayImage.scale`` maps display pixels to image pixels. Errors are
:class:`~model.errors.ImageLoadError` with the same messages as :func:`model.images.load_image`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from PIL import Image, ImageOps

from model.errors import ImageLoadError
from model.image_errors import fail as _fail
from model.image_errors import pil_detail as _pil_detail

# The private helpers are the machinery load_image itself uses, so both report a bad file identically.
from model.images import (
    DEFAULT_MAX_PIXELS,
    _check_pixel_count,
    _opened_image,
    _pil_bomb_warning_ignored,
    _stored_size,
    _upright_size,
    to_rgb,
)

__all__ = ["DISPLAY_MAX_PIXELS", "DisplayImage", "load_display_image"]

DISPLAY_MAX_PIXELS = 16_000_000  # a 5K screen at 100 %, or a 4K one zoomed in a little: plenty for review
_STRIP_ROWS = 256
# A JPEG slightly above max_pixels is decoded whole and downscaled (peak 2.5 × max_pixels, 4 bytes a pixel in
# Pillow), not shown at a quarter of its pixels; one further above is decoded at the reduction that fits.
_DRAFT_SLACK = 1.5


@dataclass(frozen=True)
class DisplayImage:
    """An upright RGB image to draw, and the full-resolution size its boxes are measured in."""

    image: Image.Image  # mode "RGB", upright, at most max_pixels pixels
    width: int  # full upright width: the frame boxes live in (same as model.images.image_size)
    height: int
    scale: float  # full / display, >= 1: a display pixel x is image pixel x * scale

    @property
    def reduced(self) -> bool:
        return self.image.size != (self.width, self.height)


def load_display_image(path: str | os.PathLike[str], max_pixels: int = DISPLAY_MAX_PIXELS) -> DisplayImage:
    """Decode ``path`` upright and RGB, reduced to at most ``max_pixels`` pixels, with bounded memory for JPEG.

    Raises:
        ImageLoadError: the file is missing, unreadable, truncated, corrupt or above the decompression-bomb limit;
            the message names the file, the cause and the fix.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    with _opened_image(path) as (image, fp, name):
        _check_pixel_count(_stored_size(image), DEFAULT_MAX_PIXELS, name)
        width, height = _upright_size(image, fp)
        with _pil_bomb_warning_ignored():
            shown = _decode_reduced(image, name, max_pixels)
        return DisplayImage(image=shown, width=width, height=height, scale=width / shown.width)


def _decode_reduced(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """Decode (reduced, where the format allows), convert to RGB, downscale, then orient: in that order, so a big
    JPEG is never held at full size and the rotation works on the small image."""
    scale = _draft_scale(image.size, max_pixels)
    if scale > 1:  # JPEG: libjpeg decodes at exactly 1/scale; other formats ignore draft()
        image.draft(None, (image.width // scale, image.height // scale))
    image.load()  # truncation and corruption surface here, inside the caller's error translation
    metadata = dict(image.info)  # holds the EXIF / XMP orientation that exif_transpose reads
    try:
        rgb = to_rgb(image)
    except ImageLoadError as exc:
        raise _fail(
            name,
            f"its pixel mode {image.mode!r} cannot be converted to RGB ({_pil_detail(exc.__cause__ or exc)})",
            "save it as RGB or greyscale with an image editor first",
        ) from exc
    target = _fit(rgb.size, max_pixels)
    if rgb.size == target:
        if rgb is image:
            return ImageOps.exif_transpose(rgb)  # a copy: the opened file's pixels are released when it is closed
        ImageOps.exif_transpose(rgb, in_place=True)
        return rgb
    reduced = _resize_in_strips(rgb, target)
    del rgb
    image.close()  # release the decoded pixels before the rotation allocates its own
    reduced.info = metadata
    ImageOps.exif_transpose(reduced, in_place=True)
    return reduced


def _draft_scale(size: tuple[int, int], max_pixels: int) -> int:
    """The JPEG reduction (1, 2, 4 or 8) to decode at: the finest whose decode stays within ``_DRAFT_SLACK`` ×
    ``max_pixels``. A decode above ``max_pixels`` is then downscaled into a second buffer, so the peak stays under
    (1 + slack) × ``max_pixels`` pixels, and a JPEG is shown at no less than 3/8 of ``max_pixels``."""
    width, height = size
    for scale in (1, 2, 4):
        if math.ceil(width / scale) * math.ceil(height / scale) <= _DRAFT_SLACK * max_pixels:
            return scale
    return 8


def _resize_in_strips(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image.resize(size)``, a band of rows at a time: one resize keeps a source-height intermediate (62 MB for a
    6000×4500 draft) alive; bands of the same scale give the same pixels (the filter reads across band edges)."""
    width, height = size
    out = Image.new("RGB", size)
    row_scale = image.height / height
    for top in range(0, height, _STRIP_ROWS):
        bottom = min(height, top + _STRIP_ROWS)
        box = (0.0, top * row_scale, float(image.width), bottom * row_scale)
        out.paste(image.resize((width, bottom - top), Image.Resampling.LANCZOS, box=box), (0, top))
    return out


def _fit(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    width, height = size
    if width * height <= max_pixels:
        return size
    factor = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * factor)), max(1, math.floor(height * factor))
