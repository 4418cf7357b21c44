"""Small, valid PNG images that show which prompt made them.

Written with ``zlib`` and ``struct`` only, so the simulator needs no imaging
library. An image is a gradient and a disc whose colours come from a hash of
the prompt, with the start of the prompt lettered on a band in a built-in 5x7
font: two runs of the same prompt look alike, two prompts do not, and a
person opening the file can tell which request it answers.
"""

from __future__ import annotations

import hashlib
import struct
import textwrap
import zlib

__all__ = ["IMAGE_SIZES", "render_png"]

IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (256, 256),
    "3:2": (384, 256),
    "2:3": (256, 384),
}
"""Pixel size per aspect ratio: small enough to render and serve cheaply."""

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SCALE = 2  # font pixels per glyph dot: 5x7 dots become 10x14 pixels
_CELL_W = 6 * _SCALE  # glyph plus one dot of spacing
_CELL_H = 9 * _SCALE  # glyph plus two dots of leading
_MARGIN = 8
_MAX_LINES = 3

# Rows top to bottom, "1" = ink. Lower case is drawn as upper case and any
# character missing here as "?", which keeps the table short and readable.
_FONT_SOURCE = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "!": "00100 00100 00100 00100 00100 00000 00100",
    '"': "01010 01010 01010 00000 00000 00000 00000",
    "#": "01010 01010 11111 01010 11111 01010 01010",
    "$": "00100 01111 10100 01110 00101 11110 00100",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "&": "01100 10010 10100 01000 10101 10010 01101",
    "'": "00100 00100 01000 00000 00000 00000 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "*": "00000 00100 10101 01110 10101 00100 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    ";": "00000 01100 01100 00000 01100 00100 01000",
    "<": "00010 00100 01000 10000 01000 00100 00010",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    ">": "01000 00100 00010 00001 00010 00100 01000",
    "?": "01110 10001 00001 00010 00100 00000 00100",
    "@": "01110 10001 00001 01101 10101 10101 01110",
    "_": "00000 00000 00000 00000 00000 00000 11111",
}

# Each glyph as the (x, y) dots to ink, computed once.
_FONT: dict[str, tuple[tuple[int, int], ...]] = {
    char: tuple(
        (x, y) for y, row in enumerate(rows.split()) for x, bit in enumerate(row) if bit == "1"
    )
    for char, rows in _FONT_SOURCE.items()
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _encode(width: int, height: int, pixels: bytearray) -> bytes:
    stride = width * 3
    # Filter type 0 (None) on every scanline: the gradient compresses well anyway.
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _mix(a: bytes, b: bytes, t: float) -> bytes:
    return bytes(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _wrap(text: str, per_line: int) -> list[str]:
    return textwrap.wrap(text.upper(), per_line, max_lines=_MAX_LINES, placeholder="...")


def render_png(prompt: str, width: int, height: int, variant: int = 0) -> bytes:
    """Render the image for ``prompt``; ``variant`` tells images of one run apart."""
    seed = prompt if variant == 0 else f"{prompt}\x00{variant}"
    digest = hashlib.sha256(seed.encode()).digest()
    top, bottom, accent, disc = digest[0:3], digest[3:6], digest[6:9], digest[9:12]
    stride = width * 3
    pixels = bytearray()
    for y in range(height):
        pixels += _mix(top, bottom, y / max(height - 1, 1)) * width

    # A disc placed by the hash: a second feature that makes images differ at a glance.
    radius = min(width, height) // 5
    cx = radius + digest[12] * (width - 2 * radius) // 255
    cy = radius + digest[13] * (height - 2 * radius) // 255
    for y in range(cy - radius, cy + radius + 1):
        half = int((radius * radius - (y - cy) ** 2) ** 0.5)
        start = (y * width + cx - half) * 3
        pixels[start : start + (2 * half + 1) * 3] = disc * (2 * half + 1)

    per_line = (width - 2 * _MARGIN) // _CELL_W
    lines = _wrap(prompt, per_line)
    band_top = height - _MARGIN - len(lines) * _CELL_H - _MARGIN
    pixels[band_top * stride :] = accent * (width * (height - band_top))
    luminance = 0.299 * accent[0] + 0.587 * accent[1] + 0.114 * accent[2]
    ink = b"\x00\x00\x00" if luminance > 128 else b"\xff\xff\xff"
    dot = ink * _SCALE
    for row, line in enumerate(lines):
        y0 = band_top + _MARGIN + row * _CELL_H + _SCALE
        for col, char in enumerate(line):
            x0 = _MARGIN + col * _CELL_W
            for gx, gy in _FONT.get(char, _FONT["?"]):
                for dy in range(_SCALE):
                    start = ((y0 + gy * _SCALE + dy) * width + x0 + gx * _SCALE) * 3
                    pixels[start : start + len(dot)] = dot
    return _encode(width, height, pixels)
