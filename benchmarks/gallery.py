"""The gallery page at 10,000 images: how long it takes to write, and how big it is.

A batch rewrites ``DIR/index.html`` every few seconds while it runs (in a
worker thread from ``THREAD_FROM`` entries on), so its cost per rewrite is
what matters. The entries are made up, shaped like a real batch's (one image
each, one in ten failed with a reason); no server is involved.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

import gptimage_async as gi
from gptimage_async._gallery import render_gallery, write_gallery
from gptimage_async._manifest import ManifestEntry

__all__ = ["GalleryRow", "measure", "section"]

#: Rewrites timed; the median is reported.
ROUNDS = 5


@dataclass(slots=True)
class GalleryRow:
    """Times (seconds) to render and to write (render, temporary file, rename) the page."""

    entries: int
    bytes: int = 0
    render: list[float] = field(default_factory=list)
    write: list[float] = field(default_factory=list)


def _entries(n: int) -> list[ManifestEntry]:
    out = []
    for line in range(1, n + 1):
        failed = line % 10 == 0
        prompt = f"a ceramic table lamp with a linen shade, studio product photo, variant {line}"
        out.append(
            ManifestEntry(
                line=line,
                key=f"{line:020x}-1",
                input=gi.ImageRequest(prompt),
                status="failed" if failed else "succeeded",
                run_id=f"run_{line:016x}",
                files=() if failed else (f"{line:05d}-a-ceramic-table-lamp-{line:08x}-1.png",),
                error="The prompt was rejected by the safety system." if failed else None,
                error_type="RunFailedError" if failed else None,
                provider="apiinone",
                key_fingerprint="3f9a1c2b",
                seconds=8.25,
                cost=None if failed else 10,
                cost_unit=None if failed else "credits",
            )
        )
    return out


def measure(n: int) -> GalleryRow:
    """Render and write the page of ``n`` entries ``ROUNDS`` times each."""
    entries = _entries(n)
    row = GalleryRow(n)
    with tempfile.TemporaryDirectory() as out:
        for _ in range(ROUNDS):
            started = time.perf_counter()
            page = render_gallery(entries, title="out")
            row.render.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_gallery(out, entries)
            row.write.append(time.perf_counter() - started)
        row.bytes = len(page.encode())
    return row


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def section(row: GalleryRow) -> list[str]:
    """RESULTS.md's section for ``row``."""
    return [
        f"## Gallery page at {row.entries:,} images",
        "",
        "`DIR/index.html`, rewritten every 3 s while a batch runs (in a worker thread once "
        "it holds 500 entries or more) and once at the end. Made-up entries shaped like a "
        f"real batch's; median of {ROUNDS} rounds. The browser loads only the images near "
        'the screen (`loading="lazy"`, checked in tests/test_gallery.py).',
        "",
        "| figure | value |",
        "|---|---|",
        f"| render the page | {_median(row.render) * 1000:.0f} ms |",
        f"| write it (render, temporary file, rename) | {_median(row.write) * 1000:.0f} ms |",
        f"| page size | {row.bytes / 1e6:.1f} MB ({row.bytes / row.entries:,.0f} B per image) |",
        "",
    ]
