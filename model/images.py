"""Safe image loading: upright RGB images, or one-line errors that say what is wrong and how to fix it.

Every image that enters the annotation tool goes through :func:`load_image`, which

* opens paths, raw bytes (e.g. an HTTP response body) or already-open PIL images,
* refuses decompression bombs *before* any pixel data is decoded,
* decodes the whole image at once, so truncated or corrupt files fail here and not later inside the model,
* applies the EXIF orientation, so boxes are drawn on the image the user actually sees,
* converts every pixel format Pillow reads to 8-bit RGB with correct colours, a band of rows at a time,
* on request, decodes only as many pixels as the caller will use (``fit_pixels`` / ``fit_side``): a JPEG is
  decoded reduced by libjpeg itself, so a 108 MP photo never exists in memory at full size, while the result
  still reports the full upright size, the frame boxes are measured in,
* bounds the memory of decoding: what a decode holds at its peak is known from the header (pixels x bytes per
  pixel of the decoded mode, plus the result) and reserved in a process-wide budget
  (:mod:`model.decode_memory`) before any pixel is decoded, so concurrent decodes of huge images take turns.

Peak memory of one decode, above what the caller holds: the decoded pixels (at most ``max_pixels`` x 4 bytes,
1 GB at the default limit; 2 bytes a pixel for 16-bit grey, 1 for 8-bit grey or palette), plus the RGB result
(4 bytes a pixel of what was asked for), plus about 100 MB of conversion temporaries. Callers that feed the
model ask for :data:`MODEL_FIT_PIXELS`, so their result is at most 144 MB.

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

from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from model.decode_memory import process_decode_memory
from model.errors import ImageLoadError
from model.image_errors import REEXPORT, decode_error, fail, os_error, pil_detail, unidentified_error
from model.pixel_modes import BAND_PIXELS, bits_per_sample, bytes_per_pixel, converted_to_rgb, needs_conversion

__all__ = ["DEFAULT_MAX_PIXELS", "MODEL_FIT_PIXELS", "LoadedImage", "image_size", "load_image", "to_rgb"]

# Large enough for any real photo (a 12000x9000 = 108 MP camera image must open), small enough that a
# crafted header claiming e.g. 100000x100000 pixels is refused before gigabytes are allocated for it.
DEFAULT_MAX_PIXELS: int = 250_000_000

# The model sees every image at 448 x 448, so decoding more pixels only costs memory. Images up to this size are
# decoded whole, as the official code does (its preprocessing resizes the full image), so answers keep parity;
# larger ones are decoded reduced (JPEG) or downscaled a band at a time while converting (see load_image).
# 36 MP: every phone photo but the 48-200 MP modes, and 144 MB as RGB.
MODEL_FIT_PIXELS: int = 36_000_000

# Bytes a pixel costs while decoding, for formats whose decoders hold the frame more than once (peak RSS measured at
# 64-169 MP with Pillow 13: WebP 16, JPEG 2000 19, AVIF 10); the others decode straight into Pillow's image.
# They admit fewer pixels: at most 4 bytes x max_pixels may be decoded, what any mode takes at the pixel limit.
_DECODER_BYTES_PER_PIXEL = {"WEBP": 16, "JPEG2000": 20, "AVIF": 12}

# Temporaries of converting one band of rows (see model.pixel_modes): int64 for 16-bit grey, crop, grey and RGB.
_BAND_COST = BAND_PIXELS * 24

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
    upright size. A JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (the finest whose pixels stay within
    1.5 x the request); other formats are decoded whole, bounded by ``max_pixels``. Either is then converted to
    RGB and downscaled (Lanczos) a band of rows at a time, so no full-size RGB copy exists, and the EXIF
    orientation is applied last, to the small image. The call waits while other threads' decodes hold the
    process's decode memory budget.

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
            with _pil_bomb_warning_ignored(), _decode_memory_for(source, fit):
                source.load()  # a lazily opened image: its EXIF may follow the pixel data
                transpose = _orientation_transpose(source)
                return _decode(source, name, fit, transpose, owned=False, full=_upright(source.size, transpose))
        except ImageLoadError:
            raise
        except _LOAD_ERRORS as exc:
            raise decode_error(name, exc) from exc

    with _opened_image(source) as (image, fp, name):
        _check_pixel_count(image.size, max_pixels, name)
        header_transpose = _TRANSPOSES.get(_header_orientation(image, fp))
        full = _upright(_stored_size(image), header_transpose)  # before drafting shrinks the size
        if fit.needed(image.size):
            _draft(image, fit)
        _check_decoding_bytes(image, max_pixels, name)
        with _pil_bomb_warning_ignored(), _decode_memory_for(image, fit):
            image.load()
            # Pillow's TIFF loader applies the orientation itself while loading (and drops the tag), so ask the
            # loaded image; but a PNG's eXIf chunk may follow the pixel data, which only our header read found
            # (Pillow keeps the EXIF it had before loading).
            transpose = header_transpose if image.format == "PNG" else _orientation_transpose(image)
            return _decode(image, name, fit, transpose, owned=True, full=full)


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
    return _upright(_stored_size(image), _TRANSPOSES.get(_header_orientation(image, fp)))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert ``image`` to mode "RGB" with correct colours (see :mod:`model.pixel_modes`). EXIF orientation is not
    touched. An image that is already RGB (without a transparent colour) is returned as is, not copied.

    Raises:
        ImageLoadError: Pillow cannot convert the pixel mode.
    """
    if not needs_conversion(image):
        return image
    try:
        return converted_to_rgb(image, bits_per_sample(image))
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


def _decode(
    image: Image.Image,
    name: str,
    fit: _Fit,
    transpose: Image.Transpose | None,
    *,
    owned: bool,
    full: tuple[int, int],
) -> LoadedImage:
    """Decode ``image``, convert it to RGB and downscale it to ``fit`` a band at a time, then apply ``transpose``:
    in that order, so no full-size RGB copy exists when a smaller one was asked for and the rotation works on the
    result. ``owned``: the image is ours to close (opened from a file), so its decoded pixels go before the
    rotation allocates its own. ``full``: the upright size of the file (a drafted ``image`` is smaller).
    """
    # Decode everything now, inside the caller's try, so truncation surfaces here as ImageLoadError.
    # ImageFile.LOAD_TRUNCATED_IMAGES stays False (never set here): it would silently grey-fill cut files.
    image.load()
    bits = bits_per_sample(image)  # read before anything else: derived images have no TIFF tags
    target = fit.size(image.size)  # the bounds hold in either orientation, so the stored one will do
    if owned or transpose is None or needs_conversion(image) or target != image.size:
        # A new image, so the result never aliases the caller's image or the file's (closed on return).
        rgb = _converted(image, bits, name, image.mode, target)
    else:
        rgb = image  # the caller's RGB image, which the rotation below copies
    if owned:
        image.close()
    if transpose is not None:
        rgb = rgb.transpose(transpose)
    return LoadedImage(rgb, *full, source=name)


def _upright(size: tuple[int, int], transpose: Image.Transpose | None) -> tuple[int, int]:
    return (size[1], size[0]) if transpose in _SWAPPING_TRANSPOSES else size


def _converted(
    image: Image.Image, bits: int | None, name: str, mode: str, size: tuple[int, int] | None = None
) -> Image.Image:
    """:func:`converted_to_rgb`, with a refused pixel mode (``mode``, as the file has it) reported like any other
    bad file."""
    try:
        return converted_to_rgb(image, bits, size)
    except ValueError as exc:
        raise fail(
            name,
            f"its pixel mode {mode!r} cannot be converted to RGB ({pil_detail(exc)})",
            "save it as RGB or greyscale with an image editor first",
        ) from exc


def _decoding_bytes(image: Image.Image) -> int:
    """Bytes decoding ``image`` (as drafted) holds before conversion, from its header: pixels x bytes per pixel of
    the decoded mode, or of the decoder itself for formats whose decoders buffer the frame more than once."""
    width, height = image.size
    per_pixel = _DECODER_BYTES_PER_PIXEL.get(image.format or "", bytes_per_pixel(image.mode))
    return width * height * per_pixel


def _check_decoding_bytes(image: Image.Image, max_pixels: int, name: str) -> None:
    limit = max_pixels * bytes_per_pixel("RGB")  # what any mode at the pixel limit takes
    needed = _decoding_bytes(image)
    if needed > limit:
        width, height = image.size
        raise fail(
            name,
            f"decoding this {width}x{height} {image.format} image needs about {needed // 1_000_000:,} MB, more "
            f"than the {limit // 1_000_000:,} MB one image may take ({image.format} decoders buffer the pixels "
            "several times)",
            "downscale the image or save it as PNG or JPEG, or pass a larger max_pixels if you trust the file",
        )


@contextmanager
def _decode_memory_for(image: Image.Image, fit: _Fit) -> Iterator[None]:
    """Reserve, in the process's decode budget, the bytes decoding ``image`` (as drafted) to ``fit`` holds at its
    peak: the decoded pixels and the RGB result, or the result twice while it is rotated, plus one band of
    conversion temporaries. Computed from the header, before any pixel is decoded."""
    out_width, out_height = fit.size(image.size)
    rgb = out_width * out_height * bytes_per_pixel("RGB")
    with process_decode_memory().reserved(max(_decoding_bytes(image), rgb) + rgb + _BAND_COST):
        yield


# --------------------------------------------------------------------------------------------------------
# Decoding fewer pixels

# A JPEG slightly above the request is decoded whole and downscaled (peak 2.5 x the request, 4 bytes a pixel in
# Pillow), not delivered at a quarter of its pixels; one further above is decoded at the reduction that fits.
_DRAFT_SLACK = 1.5
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPPING_TRANSPOSES = frozenset(_TRANSPOSES[orientation] for orientation in _SWAPPING_ORIENTATIONS)


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


def _draft(image: ImageFile.ImageFile, fit: _Fit) -> None:
    """Ask a JPEG to decode reduced, at the finest of 1/2, 1/4, 1/8 that still needs downscaling little; other
    formats ignore it and decode whole (bounded by the pixel limit)."""
    scale = _draft_scale(image.size, fit.budget(image.size))
    if scale > 1:  # libjpeg decodes at exactly 1/scale
        image.draft(None, (image.width // scale, image.height // scale))


def _draft_scale(size: tuple[int, int], budget: float) -> int:
    """The JPEG reduction (1, 2, 4 or 8) to decode at: the finest whose decode stays within ``_DRAFT_SLACK`` x
    ``budget`` pixels. A decode above ``budget`` is then downscaled into a second buffer, so the peak stays under
    (1 + slack) x ``budget`` pixels, and the result has no less than 3/8 of ``budget``."""
    width, height = size
    for scale in (1, 2, 4):
        if math.ceil(width / scale) * math.ceil(height / scale) <= _DRAFT_SLACK * budget:
            return scale
    return 8


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
