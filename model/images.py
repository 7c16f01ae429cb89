"""Safe image loading: upright RGB images, or one-line errors that say what is wrong and how to fix it.

Every image that enters the annotation tool goes through :func:`load_image`, which

* opens paths, raw bytes (e.g. an HTTP response body) or already-open PIL images,
* refuses decompression bombs *before* any pixel data is decoded,
* decodes the whole image at once, so truncated or corrupt files fail here and not later inside the model,
* applies the EXIF orientation, so boxes are drawn on the image the user actually sees,
* converts every pixel format Pillow reads to 8-bit RGB with correct colours,
* on request, decodes only as many pixels as the caller will use (``fit_pixels`` / ``fit_side``): a JPEG is
  decoded reduced by libjpeg itself, so a 108 MP photo never exists in memory at full size, while the result
  still reports the full upright size, the frame boxes are measured in.

Failures raise :class:`~model.errors.ImageLoadError`, whose message names the file, the cause and the fix.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from model.errors import ImageLoadError
from model.image_errors import REEXPORT, decode_error, fail, os_error, pil_detail, unidentified_error

__all__ = ["DEFAULT_MAX_PIXELS", "LoadedImage", "image_size", "load_image", "to_rgb"]

# Large enough for any real photo (a 12000x9000 = 108 MP camera image must open), small enough that a
# crafted header claiming e.g. 100000x100000 pixels is refused before gigabytes are allocated for it.
DEFAULT_MAX_PIXELS: int = 250_000_000

# Transparent pixels are composited over white, not black: transparency means "no content" (logos, scans,
# screenshots, line drawings), and over black, dark strokes on a transparent background would vanish into
# the background - the model would see an image no user ever saw in a viewer.
_BACKGROUND = (255, 255, 255)

_ORIENTATION_TAG = int(ExifTags.Base.Orientation)
# Orientations that rotate by 90 or 270 degrees: the upright image has width and height swapped.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# What Pillow's parsers and decoders raise for damaged data, besides OSError.
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    zlib.error,
    # Pillow reports some damage (e.g. "Corrupt EXIF data") as warnings, which raise under ``-W error``.
    Warning,
    # Some plugins re-check Pillow's global limit while reading a header (GIF frames): a random GIF header
    # declaring a 585 MP frame raised it out of load_image.
    Image.DecompressionBombError,
)

_READ_ERRORS: tuple[type[Exception], ...] = (OSError, *_DECODE_ERRORS)
_LOAD_ERRORS: tuple[type[Exception], ...] = (MemoryError, *_READ_ERRORS)


ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image


@dataclass(frozen=True)
class LoadedImage:
    """An upright RGB image, the full upright size it was decoded from, and where it came from.

    ``image`` is the full size unless :func:`load_image` was asked for fewer pixels; ``width`` and ``height``
    are always the full upright size (what :func:`image_size` reports), so boxes keep being measured in the
    file's own pixels whatever size was decoded.
    """

    image: Image.Image  # mode "RGB", EXIF orientation already applied
    width: int  # full upright width in pixels
    height: int  # full upright height in pixels
    source: str  # the path as given, or a short description such as "<bytes>"

    @property
    def scale(self) -> float:
        """Full-size pixels per pixel of ``image`` (1.0 unless reduced): image x is full-size x * scale."""
        return self.width / self.image.width

    @property
    def reduced(self) -> bool:
        """Whether ``image`` is smaller than the full upright size."""
        return self.image.size != (self.width, self.height)


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fit_pixels: int | None = None,
    fit_side: int | None = None,
) -> LoadedImage:
    """Decode ``source`` into an upright RGB image, at full size or reduced to what the caller will use.

    ``source`` is a path, the encoded bytes of an image file, or a PIL image. Multi-frame files (GIF, TIFF)
    give their first frame; a PIL image is used at the frame it is on, and the caller's object is not
    modified (beyond Pillow's own lazy loading). Images with more than ``max_pixels`` pixels are refused
    before their pixel data is decoded.

    ``fit_pixels`` (at most this many pixels) and ``fit_side`` (the longer side at most this long) ask for a
    smaller image, aspect ratio kept and never enlarged; ``width`` / ``height`` of the result stay the full
    upright size. Memory stays bounded by the request, not by the file: a JPEG is decoded at 1/2, 1/4 or 1/8
    scale by libjpeg (the finest whose pixels stay within 1.5 x the request), then downscaled (Lanczos), and
    the EXIF orientation is applied last, to the small image. Other formats cannot decode reduced; they are
    decoded whole and downscaled at once, bounded by ``max_pixels``.

    Raises:
        ImageLoadError: the image is missing, unreadable, empty, truncated, corrupt, too large or has a
            pixel format that cannot be converted; the message names the source, the cause and the fix.
    """
    for argument, value in (("max_pixels", max_pixels), ("fit_pixels", fit_pixels), ("fit_side", fit_side)):
        if value is not None and value <= 0:
            raise ValueError(f"{argument} must be positive, got {value}")
    fit = _Fit(fit_pixels, fit_side)

    if isinstance(source, Image.Image):
        name = _pil_source_name(source)
        _check_pixel_count(source.size, max_pixels, name)
        try:
            with _pil_bomb_warning_ignored():
                return _shrunk(_decode(source, name), fit)  # already in memory: nothing to save by drafting
        except ImageLoadError:
            raise
        except _LOAD_ERRORS as exc:
            raise decode_error(name, exc) from exc

    with _opened_image(source) as (image, fp, name):
        _check_pixel_count(image.size, max_pixels, name)
        with _pil_bomb_warning_ignored():
            if fit.needed(image.size):
                return _decode_reduced(image, name, fit, _upright_size(image, fp))
            return _decode(image, name)


def image_size(source: str | os.PathLike[str]) -> tuple[int, int]:
    """Return the upright ``(width, height)`` of an image file without decoding its pixels.

    Reads only the header and the EXIF orientation, so it is cheap even for huge images, and agrees with
    ``load_image(source).width`` / ``.height``. No pixel limit applies, as nothing is decoded.

    Raises:
        ImageLoadError: the file is missing, empty, not an image, or its header is damaged.
    """
    with _opened_image(source, errors=_READ_ERRORS) as (image, fp, _name):
        return _upright_size(image, fp)


@contextmanager
def _opened_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview, errors: tuple[type[Exception], ...] = _LOAD_ERRORS
) -> Iterator[tuple[ImageFile.ImageFile, IO[bytes], str]]:
    """The identified (not yet decoded) image, its file and its name. ``errors`` raised inside become an
    :class:`ImageLoadError` naming the file, the cause and the fix; the image is closed on the way out."""
    with _open_source(source) as (fp, name):
        image = _identify(fp, name)
        try:
            yield image, fp, name
        except ImageLoadError:
            raise
        except errors as exc:
            raise decode_error(name, exc, fp) from exc
        finally:
            image.close()


def _upright_size(image: ImageFile.ImageFile, fp: IO[bytes]) -> tuple[int, int]:
    """(width, height) once the EXIF orientation is applied, from the header alone."""
    width, height = _stored_size(image)
    return (height, width) if _header_orientation(image, fp) in _SWAPPING_ORIENTATIONS else (width, height)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert ``image`` to mode "RGB" with correct colours. EXIF orientation is not touched.

    * Alpha (RGBA, LA, PA, La, RGBa, a palette or single-colour transparency) is composited over white.
    * 16- and 32-bit grey (I;16, I;16B, I, ...) is scaled by its real bit depth (16-bit 65535 -> 255)
      instead of being clipped. A TIFF's BitsPerSample is honoured (12-bit 4095 -> 255), and mode I
      holding only values in 0..65535 is taken as 16-bit data (how Pillow represents a 16-bit PGM).
    * Float (F) in 0..1 is taken as normalised intensity (x 255); any other range is clipped to 0..255.
    * 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX use Pillow's own conversions.

    An image that is already RGB (without a transparent colour) is returned as is, not copied.

    Raises:
        ImageLoadError: Pillow cannot convert the pixel mode.
    """
    try:
        return _to_rgb(image, _bits_per_sample(image))
    except ValueError as exc:
        raise ImageLoadError(
            f"cannot convert an image of mode {image.mode!r} to RGB ({pil_detail(exc)}); "
            "save it as RGB or greyscale with an image editor first"
        ) from exc


# --------------------------------------------------------------------------------------------------------
# Opening


@contextmanager
def _open_source(source: object) -> Iterator[tuple[IO[bytes], str]]:
    """Yield a binary file object and a display name; the file is closed on exit, also on errors."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "<bytes>"
        data = bytes(source)
        if not data:
            raise fail(name, "the data is empty (0 bytes)", "check that the download returned an image")
        yield io.BytesIO(data), name
        return

    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a path, bytes or a PIL image, not {type(source).__name__}")
    name = os.fsdecode(os.fspath(source))
    try:
        info = os.stat(name)
    except FileNotFoundError as exc:
        raise fail(name, "file not found", "check the path and the working directory") from exc
    except OSError as exc:
        raise os_error(name, exc) from exc
    if stat.S_ISDIR(info.st_mode):
        raise fail(name, "it is a directory, not an image file", "pass the path of an image file")
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        raise fail(name, "the file is empty (0 bytes), e.g. from an interrupted copy or download", REEXPORT)
    try:
        fp = open(name, "rb")  # noqa: SIM115 - closed by the with-block below
    except OSError as exc:
        raise os_error(name, exc) from exc
    with fp:
        yield fp, name


@contextmanager
def _pil_bomb_warning_ignored() -> Iterator[None]:
    # Pillow warns above its global Image.MAX_IMAGE_PIXELS (~89 MP), which is below our limit: a legitimate
    # 108 MP photo would warn, or fail under ``-W error``. ``max_pixels`` is checked by us instead.
    # (catch_warnings swaps process-wide filters; the worst a concurrent thread can see is a stray warning.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _identify(fp: IO[bytes], name: str) -> ImageFile.ImageFile:
    """Read the header (no pixel data) with our own pixel limit instead of Pillow's global one."""
    try:
        with _pil_bomb_warning_ignored():
            return Image.open(fp)
    except Image.DecompressionBombError:
        pass  # above 2 * MAX_IMAGE_PIXELS; ``max_pixels`` decides instead, see below
    except UnidentifiedImageError as exc:
        raise unidentified_error(name, fp) from exc
    except _READ_ERRORS as exc:
        raise decode_error(name, exc, fp) from exc
    # Raising Image.MAX_IMAGE_PIXELS for this call would weaken the check for every other caller in the
    # process, so identify the header through Pillow's plugin registry without the global check.
    try:
        return _open_without_pil_limit(fp)
    except UnidentifiedImageError as exc:
        raise unidentified_error(name, fp) from exc
    except _READ_ERRORS as exc:
        raise decode_error(name, exc, fp) from exc


def _open_without_pil_limit(fp: IO[bytes]) -> ImageFile.ImageFile:
    """``Image.open`` minus its global decompression-bomb check, via the public plugin registry."""
    fp.seek(0)
    prefix = fp.read(16)
    Image.init()
    for format_id in Image.ID:
        factory, accept = Image.OPEN[format_id]
        if accept is not None and accept(prefix) is not True:  # a str result is a rejection with a reason
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # the "not this format" exceptions Image.open also skips over
    raise UnidentifiedImageError("cannot identify image file")


def _check_pixel_count(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise fail(name, f"its header declares an empty size of {width}x{height} pixels", REEXPORT)
    pixels = width * height
    if pixels > max_pixels:
        raise fail(
            name,
            f"it has {width}x{height} = {pixels:,} pixels, more than the limit of {max_pixels:,} pixels "
            "(a possible decompression bomb)",
            "downscale the image, or pass a larger max_pixels if you trust the file",
        )


# --------------------------------------------------------------------------------------------------------
# Decoding and pixel-mode conversion


def _decode(image: Image.Image, name: str) -> LoadedImage:
    # Decode everything now, inside the caller's try, so truncation surfaces here as ImageLoadError.
    # ImageFile.LOAD_TRUNCATED_IMAGES stays False (never set here): it would silently grey-fill cut files.
    image.load()
    bits = _bits_per_sample(image)  # read before transposing: the transposed copy has no TIFF tags
    upright = ImageOps.exif_transpose(image)  # always a new image, so the result never aliases the input
    rgb = _converted(upright, bits, name, image.mode)
    return LoadedImage(image=rgb, width=rgb.width, height=rgb.height, source=name)


def _decode_reduced(image: ImageFile.ImageFile, name: str, fit: _Fit, full: tuple[int, int]) -> LoadedImage:
    """Decode reduced (where the format allows), convert to RGB, downscale, then orient: in that order, so a big
    JPEG is never held at full size and the rotation works on the small image. ``full``: the upright size."""
    scale = _draft_scale(image.size, fit.budget(image.size))
    if scale > 1:  # JPEG: libjpeg decodes at exactly 1/scale; other formats ignore draft()
        image.draft(None, (image.width // scale, image.height // scale))
    image.load()  # truncation and corruption surface here, inside the caller's error translation
    bits = _bits_per_sample(image)
    target = fit.size(image.size)  # the bounds hold in either orientation, so the stored one will do
    if image.size == target:  # the draft alone was enough
        upright = ImageOps.exif_transpose(image)  # a copy: the file's pixels go when it is closed
        return LoadedImage(_converted(upright, bits, name, image.mode), *full, source=name)
    transpose = _orientation_transpose(image)  # the transposition exif_transpose would apply
    rgb = _converted(image, bits, name, image.mode)
    reduced = _resize_in_strips(rgb, target)
    del rgb
    image.close()  # release the decoded pixels before the rotation allocates its own
    if transpose is not None:
        reduced = reduced.transpose(transpose)
    return LoadedImage(reduced, *full, source=name)


def _converted(image: Image.Image, bits: int | None, name: str, mode: str) -> Image.Image:
    """``_to_rgb``, with a refused pixel mode (``mode``, as the file has it) reported like any other bad file."""
    try:
        return _to_rgb(image, bits)
    except ValueError as exc:
        raise fail(
            name,
            f"its pixel mode {mode!r} cannot be converted to RGB ({pil_detail(exc)})",
            "save it as RGB or greyscale with an image editor first",
        ) from exc


def _to_rgb(image: Image.Image, bits: int | None) -> Image.Image:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I"):
        return _transparent_to_background(_integer_to_grey(image, bits), image)
    if mode == "F":
        return _float_to_grey(image).convert("RGB")
    if mode == "La":
        # Pillow cannot convert premultiplied "La"; over white it is simply L + (255 - A).
        values = np.asarray(image, dtype=np.int32)
        grey = np.clip(values[..., 0] + 255 - values[..., 1], 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if _has_transparency(image):
        rgba = image.convert("RGBA")  # applies palette alpha, tRNS colours and premultiplied RGBa too
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _has_transparency(image: Image.Image) -> bool:
    # Image.has_transparency_data only exists from Pillow 10.1; the project supports 10.0.
    if image.mode in ("LA", "PA", "RGBA", "RGBa") or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode.endswith("A")


def _bits_per_sample(image: Image.Image) -> int | None:
    """The bit depth a TIFF declares (e.g. 12 for 12-bit data that Pillow stores as I;16), if any."""
    tags = getattr(image, "tag_v2", None)
    value = tags.get(258) if tags is not None else None  # BitsPerSample
    if isinstance(value, tuple):
        value = value[0] if value else None
    return value if isinstance(value, int) and value > 0 else None


def _integer_to_grey(image: Image.Image, bits: int | None) -> Image.Image:
    """Scale 16/32-bit integer grey to 8 bits by the data's bit depth: full scale -> 255, not clipping."""
    values = np.asarray(image)
    dtype_max = int(np.iinfo(values.dtype).max)
    if bits is not None and bits < 32:
        full_scale = min(2**bits - 1, dtype_max)
    elif bits is None and dtype_max > 65535 and values.size and values.min() >= 0 and values.max() <= 65535:
        full_scale = 65535  # mode "I" is how Pillow holds 16-bit PGM (and, in old versions, 16-bit PNG)
    else:
        full_scale = dtype_max
    scaled = (np.clip(values.astype(np.int64), 0, full_scale) * 255 + full_scale // 2) // full_scale
    return Image.fromarray(scaled.astype(np.uint8))


def _float_to_grey(image: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=np.inf, neginf=0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0  # a normalised float image (the numpy / scikit-image convention)
    return Image.fromarray(np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8))


def _transparent_to_background(grey: Image.Image, original: Image.Image) -> Image.Image:
    transparency = original.info.get("transparency")
    if not isinstance(transparency, int):
        return grey.convert("RGB")
    # A tRNS grey level in 16-bit data: pixels of exactly that level are transparent.
    rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=2)
    rgb[np.asarray(original) == transparency] = _BACKGROUND
    return Image.fromarray(rgb)


# --------------------------------------------------------------------------------------------------------
# Decoding fewer pixels

# A JPEG slightly above the request is decoded whole and downscaled (peak 2.5 x the request, 4 bytes a pixel in
# Pillow), not delivered at a quarter of its pixels; one further above is decoded at the reduction that fits.
_DRAFT_SLACK = 1.5
_STRIP_ROWS = 256
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class _Fit:
    """What ``load_image`` was asked to fit in: at most ``pixels`` pixels, the longer side at most ``side``."""

    pixels: int | None
    side: int | None

    def _factors(self, size: tuple[int, int]) -> tuple[float, float]:
        width, height = size
        by_pixels = math.sqrt(self.pixels / (width * height)) if self.pixels else 1.0
        by_side = self.side / max(width, height) if self.side else 1.0
        return by_pixels, by_side

    def needed(self, size: tuple[int, int]) -> bool:
        return min(self._factors(size)) < 1.0

    def budget(self, size: tuple[int, int]) -> float:
        """The most pixels the result may have, before rounding to whole pixels."""
        factor = min(1.0, *self._factors(size))
        return size[0] * size[1] * factor * factor

    def size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` shrunk (never enlarged) to fit, aspect ratio kept, rounded down to whole pixels."""
        width, height = size
        by_pixels, by_side = self._factors(size)
        if min(by_pixels, by_side) >= 1.0:
            return size
        if by_pixels < by_side:
            return max(1, math.floor(width * by_pixels)), max(1, math.floor(height * by_pixels))
        assert self.side is not None  # by_side < 1 only when a side was asked for
        # Integer arithmetic: the longer side is exactly ``side``, not 447.99... rounded down.
        if width >= height:
            return self.side, max(1, height * self.side // width)
        return max(1, width * self.side // height), self.side


def _shrunk(loaded: LoadedImage, fit: _Fit) -> LoadedImage:
    """A decoded full-size image downscaled to ``fit`` (for PIL images, which are in memory already)."""
    target = fit.size(loaded.image.size)
    if target == loaded.image.size:
        return loaded
    return LoadedImage(_resize_in_strips(loaded.image, target), loaded.width, loaded.height, loaded.source)


def _draft_scale(size: tuple[int, int], budget: float) -> int:
    """The JPEG reduction (1, 2, 4 or 8) to decode at: the finest whose decode stays within ``_DRAFT_SLACK`` x
    ``budget`` pixels. A decode above ``budget`` is then downscaled into a second buffer, so the peak stays under
    (1 + slack) x ``budget`` pixels, and the result has no less than 3/8 of ``budget``."""
    width, height = size
    for scale in (1, 2, 4):
        if math.ceil(width / scale) * math.ceil(height / scale) <= _DRAFT_SLACK * budget:
            return scale
    return 8


def _resize_in_strips(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image.resize(size)``, a band of rows at a time: one resize keeps a source-height intermediate (62 MB for a
    6000x4500 draft) alive; bands of the same scale give the same pixels (the filter reads across band edges)."""
    width, height = size
    out = Image.new("RGB", size)
    row_scale = image.height / height
    for top in range(0, height, _STRIP_ROWS):
        bottom = min(height, top + _STRIP_ROWS)
        box = (0.0, top * row_scale, float(image.width), bottom * row_scale)
        out.paste(image.resize((width, bottom - top), Image.Resampling.LANCZOS, box=box), (0, top))
    return out


def _orientation_transpose(image: Image.Image) -> Image.Transpose | None:
    """The transposition ``ImageOps.exif_transpose`` would apply to the loaded ``image``, from the same tag."""
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    return _TRANSPOSES.get(orientation) if isinstance(orientation, int) else None


# --------------------------------------------------------------------------------------------------------
# Size and EXIF orientation without decoding


def _stored_size(image: ImageFile.ImageFile) -> tuple[int, int]:
    """The size as stored in the file, before any orientation is applied."""
    # Pillow >= 11 already reports a TIFF's size upright (its loader applies the orientation itself);
    # every other format reports the stored size. A TIFF's tags hold the stored size in every version.
    tags = getattr(image, "tag_v2", None)
    if tags is not None:
        width, height = tags.get(256), tags.get(257)  # ImageWidth, ImageLength
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return image.size


def _header_orientation(image: ImageFile.ImageFile, fp: IO[bytes]) -> int:
    """The orientation ``ImageOps.exif_transpose`` will apply, read without decoding pixels."""
    # PngImageFile.getexif() decodes the whole image when no eXIf chunk came before the image data, so use
    # the base implementation (header metadata only) and look for a trailing eXIf chunk ourselves.
    orientation = Image.Image.getexif(image).get(_ORIENTATION_TAG)
    if orientation is None and image.format == "PNG" and "exif" not in image.info:
        trailing = _png_trailing_exif(fp)
        if trailing is not None:
            exif = Image.Exif()
            exif.load(trailing)
            orientation = exif.get(_ORIENTATION_TAG)
    return orientation if isinstance(orientation, int) else 1


def _png_trailing_exif(fp: IO[bytes]) -> bytes | None:
    """The data of an eXIf chunk after the image data; IDAT chunks are skipped with seek, not read."""
    fp.seek(8)  # past the PNG signature
    while True:
        header = fp.read(8)
        if len(header) < 8:
            return None
        length, chunk_type = struct.unpack(">I4s", header)
        if chunk_type == b"eXIf":
            data = fp.read(length)
            return data if len(data) == length else None
        if chunk_type == b"IEND":
            return None
        fp.seek(length + 4, os.SEEK_CUR)  # chunk data + CRC


# --------------------------------------------------------------------------------------------------------
# Naming


def _pil_source_name(image: Image.Image) -> str:
    filename = getattr(image, "filename", None)
    return filename if isinstance(filename, str) and filename else "<PIL image>"
