"""How a failed image load is worded: one line that names the file, the cause and the fix.

:mod:`model.images` raises these; the wording lives here so that every way of reading an image (a path, bytes,
a reduced decode) reports the same damage with the same message.
"""

from __future__ import annotations

import os
import struct
from typing import IO

from PIL import Image

from model.errors import ImageLoadError

__all__ = ["REEXPORT", "SUPPORTED", "decode_error", "fail", "os_error", "pil_detail", "unidentified_error"]

# Magic numbers of common formats, used only to word error messages (Pillow does the identification).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)

# The fixes most messages end with.
REEXPORT = "re-export or re-download it"
SUPPORTED = "check that it really is a JPEG, PNG, GIF, BMP, TIFF or WebP image, or convert it to one"


def fail(name: str, cause: str, fix: str) -> ImageLoadError:
    """The error for image ``name``: what is wrong with it, and what to do about it."""
    return ImageLoadError(f"cannot read image {name!r}: {cause}; {fix}")


def pil_detail(exc: BaseException) -> str:
    """Pillow's own words for ``exc``, on one line and at most 160 characters, to quote in a message."""
    text = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever Pillow put in it
    return text if len(text) <= 160 else text[:157] + "..."


def _announced_format(fp: IO[bytes]) -> tuple[str, bool] | None:
    """The format the first bytes announce, and whether the file ends inside that signature."""
    try:
        fp.seek(0)
        head = fp.read(16)
    except (OSError, ValueError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP", False
    for signature, format_name in _SIGNATURES:
        if head.startswith(signature):
            return format_name, False
    if len(head) >= 2:
        for signature, format_name in _SIGNATURES:
            if signature.startswith(head):  # e.g. a PNG cut off after 3 bytes
                return format_name, True
    return None


def _text_content(fp: IO[bytes]) -> str | None:
    """What a non-image file seems to contain, if it is text."""
    try:
        fp.seek(0)
        head = fp.read(512)
    except (OSError, ValueError):
        return None
    if not head or b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None  # could be UTF-8 cut mid-character, but binary data is far more likely
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html")):
        return "an HTML page, often an error or login page saved in place of the image"
    if start.startswith("<svg") or (start.startswith("<?xml") and "<svg" in start):
        return "an SVG drawing, and vector images are not supported"
    if start.startswith(("{", "[")):
        return "JSON"
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "text"
    return None


def unidentified_error(name: str, fp: IO[bytes]) -> ImageLoadError:
    """The error for a file Pillow does not recognise: a cut-off image, a text or HTML file, or another format."""
    # Pillow's own message ("cannot identify image file <_io.BufferedReader ...>") adds nothing.
    announced = _announced_format(fp)
    if announced is not None:
        image_format, cut_in_signature = announced
        if cut_in_signature:
            return fail(name, f"the file is truncated inside the {image_format} signature", REEXPORT)
        cause = f"the file starts like a {image_format} image, but its header is truncated or corrupt"
        return fail(name, cause, REEXPORT)
    content = _text_content(fp)
    if content is not None:
        return fail(name, f"the file is not an image, it contains {content}", SUPPORTED)
    return fail(name, "the file is not an image in a format Pillow can read", SUPPORTED)


def os_error(name: str, exc: OSError) -> ImageLoadError:
    """The error for a file that could not be opened at all."""
    if isinstance(exc, PermissionError):
        return fail(name, "permission denied", "check the file's permissions")
    if isinstance(exc, IsADirectoryError):
        return fail(name, "it is a directory, not an image file", "pass the path of an image file")
    return fail(
        name,
        f"the file cannot be opened ({exc.strerror or pil_detail(exc)})",
        "check the path and that the disk or network share is available",
    )


def _is_truncation(exc: BaseException, fp: IO[bytes] | None) -> bool:
    if isinstance(exc, EOFError) or (fp is not None and _shorter_than_declared(fp)):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in ("truncated", "premature end", "unexpected end", "not enough"))


def _shorter_than_declared(fp: IO[bytes]) -> bool:
    """True when a RIFF container (WebP) declares more bytes than the file has; its decoder only says
    "could not create decoder object" for a cut file."""
    try:
        fp.seek(0)
        head = fp.read(12)
        if len(head) < 12 or head[:4] != b"RIFF":
            return False
        declared = struct.unpack("<I", head[4:8])[0] + 8
        return fp.seek(0, os.SEEK_END) < declared
    except (OSError, ValueError):
        return False


def decode_error(name: str, exc: BaseException, fp: IO[bytes] | None = None) -> ImageLoadError:
    """Translate an exception raised while reading or decoding into a one-line ImageLoadError."""
    detail = pil_detail(exc)
    if isinstance(exc, Image.DecompressionBombError):
        # Only reachable for formats whose decoders re-check Pillow's global limit (e.g. TIFF, GIF).
        return fail(
            name,
            f"it is larger than Pillow's decompression-bomb limit (PIL: {detail})",
            "downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file",
        )
    if isinstance(exc, MemoryError):
        return fail(name, "there is not enough memory to decode it", "downscale the image or free memory")
    if _is_truncation(exc, fp):
        return fail(name, f"the file is truncated, e.g. by an interrupted copy or download (PIL: {detail})", REEXPORT)
    if isinstance(exc, OSError) and exc.errno is not None:  # a real I/O error, not a decoder complaint
        return fail(
            name,
            f"reading the file failed ({exc.strerror or detail})",
            "check that the disk or network share is available and try again",
        )
    announced = _announced_format(fp) if fp is not None else None
    what = f"the {announced[0]} data" if announced else "the image data"
    return fail(name, f"{what} is corrupt (PIL: {detail})", REEXPORT)
