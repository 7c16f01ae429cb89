"""Small files that decode into huge images, written without ever holding the image in memory.

A PNG of one flat colour compresses about 500:1 with zlib, so a 15000x16000 16-bit grey PNG (240 MP, under the
250 MP pixel limit) is a 466 KB file: the file an attacker sends to make a decoder allocate gigabytes.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

# PNG colour types and their channels: grey, RGB, grey + alpha, RGBA.
GREY, RGB, GREY_ALPHA, RGBA = 0, 2, 4, 6
_CHANNELS = {GREY: 1, RGB: 3, GREY_ALPHA: 2, RGBA: 4}


def write_flat_png(path: Path, width: int, height: int, *, bit_depth: int = 16, colour_type: int = GREY) -> Path:
    """A PNG of ``width`` x ``height`` zero-valued pixels, streamed row by row (memory: one row)."""
    row = b"\x00" + bytes(width * _CHANNELS[colour_type] * bit_depth // 8)  # filter byte 0, then the pixels
    compressor = zlib.compressobj(9)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)))
        pending = b""
        for _ in range(height):
            pending += compressor.compress(row)
            if len(pending) >= 1 << 20:
                out.write(_chunk(b"IDAT", pending))
                pending = b""
        out.write(_chunk(b"IDAT", pending + compressor.flush()))
        out.write(_chunk(b"IEND", b""))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
