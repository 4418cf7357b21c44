"""Whole images of each type, small, built by hand for the download tests.

Each is structurally complete (what ``_image_bytes.why_not_whole`` checks):
a PNG's chunks end with IEND, a JPEG ends with EOI, a WebP's RIFF size is the
rest of the file, a GIF ends with its trailer.
"""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(padding: int = 200) -> bytes:
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00\x00" + b"\x00" * padding))
        + _chunk(b"IEND", b"")
    )


def jpeg(padding: int = 200) -> bytes:
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * padding + b"\xff\xd9"


def webp(padding: int = 200) -> bytes:
    rest = b"WEBP" + b"VP8 " + b"\x00" * padding
    return b"RIFF" + struct.pack("<I", len(rest)) + rest


def gif(padding: int = 200) -> bytes:
    return b"GIF89a" + b"\x00" * padding + b"\x3b"


PNG, JPEG, WEBP, GIF = png(), jpeg(), webp(), gif()
