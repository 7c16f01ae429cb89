"""Pixel-mode conversion to 8-bit RGB, and downscaling, a band of rows at a time.

Converting a whole image at once costs several full-size temporaries: 16-bit grey scaled through int64 arrays took a
240 MP PNG from a 466 KB file to 5.3 GB. Here every conversion and every resize works on one band of rows at a time
(at most :data:`BAND_PIXELS` source pixels, plus the rows the resampling filter reads across the band's edges), so
the memory a conversion adds is the output image plus one band, whatever the input's size and mode. Decisions that
need the whole image (the value range of 32-bit and float grey) are taken in a first pass over the same bands.

* Alpha (RGBA, LA, PA, La, RGBa, a palette or single-colour transparency) is composited over white.
* 16- and 32-bit grey (I;16, I;16B, I, ...) is scaled by its real bit depth (16-bit 65535 -> 255) instead of being
  clipped. A TIFF's BitsPerSample is honoured (12-bit 4095 -> 255), and mode I holding only values in 0..65535 is
  taken as 16-bit data (how Pillow represents a 16-bit PGM).
* Float (F) in 0..1 is taken as normalised intensity (x 255); any other range is clipped to 0..255.
* 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX use Pillow's own conversions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

__all__ = ["BAND_PIXELS", "bits_per_sample", "bytes_per_pixel", "converted_to_rgb", "needs_conversion"]

# Source pixels per band: the temporaries of one band (int64 for 16-bit grey: 8 bytes a pixel, twice) stay near
# 64 MB, small next to the output, while bands stay tall enough that per-band overhead is negligible.
BAND_PIXELS = 4_000_000

# Transparent pixels are composited over white, not black: transparency means "no content" (logos, scans,
# screenshots, line drawings), and over black, dark strokes on a transparent background would vanish into
# the background - the model would see an image no user ever saw in a viewer.
BACKGROUND = (255, 255, 255)

# Lanczos reads 3 source pixels either side of a pixel's centre, scaled by the reduction factor.
_LANCZOS_SUPPORT = 3.0

Converter = Callable[[Image.Image], Image.Image]


def bytes_per_pixel(mode: str) -> int:
    """Bytes a pixel of ``mode`` takes in Pillow's memory (its single-band 8-bit modes take 1, 16-bit grey 2)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4  # RGB is stored as RGBX, and every other mode Pillow decodes to takes at most 4 bytes


def needs_conversion(image: Image.Image) -> bool:
    """Whether ``image`` is anything but plain RGB (no transparent colour)."""
    return image.mode != "RGB" or "transparency" in image.info


def bits_per_sample(image: Image.Image) -> int | None:
    """The bit depth a TIFF declares (e.g. 12 for 12-bit data that Pillow stores as I;16), if any."""
    tags = getattr(image, "tag_v2", None)
    value = tags.get(258) if tags is not None else None  # BitsPerSample
    if isinstance(value, tuple):
        value = value[0] if value else None
    return value if isinstance(value, int) and value > 0 else None


def converted_to_rgb(image: Image.Image, bits: int | None = None, size: tuple[int, int] | None = None) -> Image.Image:
    """A new RGB image of ``image`` converted, and downscaled (Lanczos) to ``size`` if given, a band at a time.

    ``bits``: the data's bit depth where the file declares one (see :func:`bits_per_sample`). The result has the
    same pixels as converting the whole image and then resizing it whole; ``image`` is not modified.

    Raises:
        ValueError: Pillow cannot convert the pixel mode.
    """
    convert = _converter(image, bits)
    width, height = image.size
    out_width, out_height = size or image.size
    out = Image.new("RGB", (out_width, out_height))
    resizing = (out_width, out_height) != image.size
    row_scale = height / out_height
    # Rows the filter reads beyond a band's own rows, so that band edges leave no seams.
    margin = math.ceil(_LANCZOS_SUPPORT * max(1.0, row_scale)) + 2 if resizing else 0
    rows = max(1, int(BAND_PIXELS / (width * max(1.0, row_scale))))  # output rows per band
    for top in range(0, out_height, rows):
        bottom = min(out_height, top + rows)
        start, stop = top * row_scale, bottom * row_scale
        first, last = max(0, math.floor(start) - margin), min(height, math.ceil(stop) + margin)
        band = convert(image.crop((0, first, width, last)))
        if resizing:
            box = (0.0, start - first, float(width), stop - first)
            band = band.resize((out_width, bottom - top), Image.Resampling.LANCZOS, box=box)
        out.paste(band, (0, top))
    return out


# --------------------------------------------------------------------------------------------------------
# One band's conversion, with whatever it needs to know about the whole image decided first


def _converter(image: Image.Image, bits: int | None) -> Converter:
    mode = image.mode
    if not needs_conversion(image):
        return lambda band: band
    if mode.startswith("I"):
        full_scale = _integer_full_scale(image, bits)
        return lambda band: _transparent_to_background(_integer_to_grey(band, full_scale), band)
    if mode == "F":
        normalised = _float_is_normalised(image)
        return lambda band: _float_to_grey(band, normalised).convert("RGB")
    if mode == "La":
        return _premultiplied_grey_to_rgb
    if _has_transparency(image):
        return _composited
    _check_convertible(image)
    return lambda band: band.convert("RGB")


def _check_convertible(image: Image.Image) -> None:
    # Fail before the output is allocated, with Pillow's own ValueError, for modes it cannot convert.
    image.crop((0, 0, 1, 1)).convert("RGB")


def _bands(image: Image.Image) -> Iterator[Image.Image]:
    width, height = image.size
    rows = max(1, BAND_PIXELS // width)
    for top in range(0, height, rows):
        yield image.crop((0, top, width, min(height, top + rows)))


def _integer_full_scale(image: Image.Image, bits: int | None) -> int:
    """The value that becomes 255: the declared bit depth's maximum, 65535 for 16-bit data in mode I, else the
    type's maximum."""
    dtype_max = int(np.iinfo(np.asarray(image.crop((0, 0, 1, 1))).dtype).max)
    if bits is not None and bits < 32:
        return min(2**bits - 1, dtype_max)
    if bits is None and dtype_max > 65535:
        low, high = _extrema(image, lambda values: values)
        if low >= 0 and high <= 65535:
            return 65535  # mode "I" is how Pillow holds 16-bit PGM (and, in old versions, 16-bit PNG)
    return dtype_max


def _float_is_normalised(image: Image.Image) -> bool:
    low, high = _extrema(image, _finite_floats)
    return low >= 0.0 and high <= 1.0  # a normalised float image (the numpy / scikit-image convention)


def _extrema(image: Image.Image, values_of: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    low, high = math.inf, -math.inf
    for band in _bands(image):
        values = values_of(np.asarray(band))
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    return low, high


def _finite_floats(values: np.ndarray) -> np.ndarray:
    return np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=np.inf, neginf=0.0)


def _integer_to_grey(band: Image.Image, full_scale: int) -> Image.Image:
    """Scale integer grey to 8 bits, full scale -> 255 with rounding, in one int64 buffer."""
    scaled = np.clip(np.asarray(band), 0, full_scale).astype(np.int64)
    scaled *= 255
    scaled += full_scale // 2
    scaled //= full_scale
    return Image.fromarray(scaled.astype(np.uint8))


def _float_to_grey(band: Image.Image, normalised: bool) -> Image.Image:
    values = _finite_floats(np.asarray(band))
    if normalised:
        values *= 255.0
    return Image.fromarray(np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8))


def _transparent_to_background(grey: Image.Image, original: Image.Image) -> Image.Image:
    transparency = original.info.get("transparency")
    if not isinstance(transparency, int):
        return grey.convert("RGB")
    # A tRNS grey level in 16-bit data: pixels of exactly that level are transparent.
    rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=2)
    rgb[np.asarray(original) == transparency] = BACKGROUND
    return Image.fromarray(rgb)


def _premultiplied_grey_to_rgb(band: Image.Image) -> Image.Image:
    # Pillow cannot convert premultiplied "La"; over white it is simply L + (255 - A).
    values = np.asarray(band, dtype=np.int32)
    grey = np.clip(values[..., 0] + 255 - values[..., 1], 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _composited(band: Image.Image) -> Image.Image:
    rgba = band.convert("RGBA")  # applies palette alpha, tRNS colours and premultiplied RGBa too
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _has_transparency(image: Image.Image) -> bool:
    # Image.has_transparency_data only exists from Pillow 10.1; the project supports 10.0.
    if image.mode in ("LA", "PA", "RGBA", "RGBa") or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode.endswith("A")
