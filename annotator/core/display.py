"""Images for the canvas: upright, RGB, and never bigger in memory than the screen can use.

A 12000×9000 camera JPEG is 324 MB decoded; the canvas needs at most a few megapixels of it. How to decode only
those pixels (libjpeg's reduced decoding, the decompression-bomb limit, EXIF orientation, RGB) is
:func:`model.images.load_image`'s business, shared with the model; this module only says how many pixels the
canvas wants.

Boxes stay in full-resolution upright pixels: ``DisplayImage.scale`` maps display pixels to image pixels. Errors are
:class:`~model.errors.ImageLoadError` with the same messages as any other :func:`model.images.load_image`.
"""

from __future__ import annotations

import os

from model.images import LoadedImage, load_image

__all__ = ["DISPLAY_MAX_PIXELS", "DisplayImage", "load_display_image"]

DISPLAY_MAX_PIXELS = 16_000_000  # a 5K screen at 100 %, or a 4K one zoomed in a little: plenty for review

# What the canvas draws: an upright RGB image of at most the display's pixels, with ``width`` × ``height`` the full
# upright size its boxes are measured in, and ``scale`` = full / display (>= 1).
DisplayImage = LoadedImage


def load_display_image(path: str | os.PathLike[str], max_pixels: int = DISPLAY_MAX_PIXELS) -> DisplayImage:
    """Decode ``path`` upright and RGB, reduced to at most ``max_pixels`` pixels, with bounded memory for JPEG.

    Raises:
        ImageLoadError: the file is missing, unreadable, truncated, corrupt or above the decompression-bomb limit;
            the message names the file, the cause and the fix.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    return load_image(path, fit_pixels=max_pixels)
