"""Telling an image by its bytes: its type (magic numbers) and whether it is whole.

An image is complete when its bytes are a whole image of its type, not when
the socket closes: a server that closes early without a ``Content-Length``
leaves a body aiohttp reports as complete. The structural end of each
format (PNG's chunk walk to IEND, JPEG's EOI, WebP's RIFF size, GIF's
trailer) is what says so. No pixel is decoded.
"""

from __future__ import annotations

import struct

__all__ = ["HEAD_BYTES", "sniff", "why_not_whole"]

#: Bytes read before deciding whether a body is an image (WebP needs 12).
HEAD_BYTES = 64

#: Magic numbers: (bytes, offset, type).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"ftypavif", 4, "image/avif"),
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sniff(data: bytes) -> str | None:
    """The image type ``data`` starts with (``"image/png"``, ...), or ``None``.

    >>> sniff(b"\\x89PNG\\r\\n\\x1a\\n...")
    'image/png'
    """
    for magic, offset, kind in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if kind == "image/webp" and data[:4] != b"RIFF":
                continue
            return kind
    return None


def why_not_whole(kind: str | None, data: bytes) -> str | None:
    """Why ``data`` is not a whole image of ``kind``, or ``None`` if it is (or cannot be told).

    * PNG (ISO/IEC 15948 §5): the signature, IHDR first, each chunk's length
      inside the data, and the IEND chunk ending exactly at the last byte;
    * JPEG (ITU T.81 B.2): SOI first, EOI (``FF D9``) last (zero padding
      after it is tolerated, as every decoder does);
    * WebP (RFC 9649 §2.4): the RIFF size is the rest of the file;
    * GIF (GIF89a §27): the trailer byte ``0x3B`` last.

    Any other type is whole if not empty.
    """
    if not data:
        return "the body is empty"
    if kind == "image/png":
        return _png(data)
    if kind == "image/jpeg":
        if data[:2] != b"\xff\xd8":
            return "a JPEG without its start (SOI)"
        return None if data.rstrip(b"\x00").endswith(b"\xff\xd9") else "a JPEG cut short (no EOI)"
    if kind == "image/webp":
        if len(data) < 12:
            return "a WebP cut short in its header"
        declared = struct.unpack_from("<I", data, 4)[0] + 8
        size = len(data)
        if size < declared:
            return f"a WebP cut short ({size} of {declared} bytes)"
        if size > declared + 1:  # a RIFF pad byte is allowed
            return f"a WebP with {size - declared} bytes past its end"
        return None
    if kind == "image/gif":
        return None if data.endswith(b"\x3b") else "a GIF cut short (no trailer)"
    return None


def _png(data: bytes) -> str | None:
    if not data.startswith(_PNG_SIGNATURE):
        return "a PNG without its signature"
    at, first = len(_PNG_SIGNATURE), True
    size = len(data)
    while at + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, at)
        if first and kind != b"IHDR":
            return "a PNG whose first chunk is not IHDR"
        first = False
        end = at + 12 + length  # length, type, data, CRC
        if end > size:
            return f"a PNG cut short inside its {kind.decode('latin-1')!r} chunk"
        if kind == b"IEND":
            return None if end == size else f"a PNG with {size - end} bytes past IEND"
        at = end
    return "a PNG cut short (no IEND chunk)"
