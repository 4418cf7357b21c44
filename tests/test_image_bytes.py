"""Whole images by their bytes (issue 20 item 3): each format's structural end, and variants."""

from __future__ import annotations

import pytest

from gptimage_async._image_bytes import sniff, why_not_whole
from gptimage_async.simulator._png import render_png

from ._images import GIF, JPEG, PNG, WEBP

WHOLE = [PNG, JPEG, WEBP, GIF, render_png("a lamp", 64, 48)]


@pytest.mark.parametrize("data", WHOLE)
def test_whole_images_are_whole(data: bytes) -> None:
    assert why_not_whole(sniff(data), data) is None


@pytest.mark.parametrize("data", WHOLE)
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_any_cut_is_seen(data: bytes, keep: float) -> None:
    cut = data[: max(1, int(len(data) * keep))]
    if cut == data:
        cut = data[:-1]
    assert why_not_whole(sniff(data), cut) is not None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (PNG + b"trailing", "past IEND"),
        (b"\x89PNG\r\n\x1a\n" + PNG[16:], "IHDR"),  # a chunk other than IHDR first
        (WEBP + b"xx", "past its end"),
        (JPEG + b"\x00\x00", None),  # zero padding after EOI: every decoder accepts it
    ],
)
def test_variants(data: bytes, why: str | None) -> None:
    kind = sniff(data) or "image/png"
    found = why_not_whole(kind, data)
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found
