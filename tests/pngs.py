"""Real PNGs of any size written by hand, for tests that need an image but not a drawing."""

from __future__ import annotations

import struct
import zlib


def grey_png(width: int, height: int, shade: int = 0x80) -> bytes:
    """A valid 8-bit greyscale PNG, every pixel `shade`: no imaging library needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + bytes([shade]) * width) * height  # filter byte 0, then one byte per pixel
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
