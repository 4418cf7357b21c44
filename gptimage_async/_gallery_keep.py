"""Keeping a running batch's gallery page current (``DIR/index.html``; ``_gallery`` renders it).

The page is rewritten atomically every :data:`DEFAULT_INTERVAL` seconds when
an entry changed, at least every :data:`REWRITE_SECONDS` even when none did
(its time then says the batch still lives: a page left by a killed batch says
it may have stopped), and once more when the batch ends, stopped or crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from ._gallery import GALLERY_NAME, RELOAD_SECONDS, STALE_RELOADS, write_gallery
from ._manifest import ManifestEntry

__all__ = ["DEFAULT_INTERVAL", "REWRITE_SECONDS", "THREAD_FROM", "GalleryPage", "keep_gallery"]

#: Seconds between two rewrites of the page while a batch runs (only when something changed).
DEFAULT_INTERVAL = 3.0
#: Seconds after which a running batch rewrites its page even when nothing changed.
REWRITE_SECONDS = STALE_RELOADS * RELOAD_SECONDS / 2
#: Entries from which the page is rendered in a worker thread. Below, rendering takes
#: under ~7 ms and is done on the loop: a thread costs more than it saves, and a test's
#: fake clock, which jumps ahead whenever the loop is idle, would jump while it waits.
THREAD_FROM = 500
logger = logging.getLogger("gptimage_async")


class GalleryPage:
    """The page :func:`keep_gallery` keeps: ``path`` if its last write succeeded, else ``None``."""

    __slots__ = ("path",)

    def __init__(self) -> None:
        self.path: Path | None = None


class _Writer:
    """Writes the page, from a worker thread or not; a newer snapshot always wins the rename."""

    __slots__ = (
        "_issued",
        "_last",
        "_lock",
        "_out",
        "_snapshot",
        "_stop_reason",
        "_written",
        "page",
    )

    def __init__(
        self,
        out: Path,
        snapshot: Callable[[], Sequence[ManifestEntry]],
        stop_reason: Callable[[], str | None] | None = None,
    ) -> None:
        self._out = out
        self._stop_reason = stop_reason
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._issued = 0  # tickets handed out, on the event loop
        self._written = 0  # ticket of the page on disk
        self._last: list[ManifestEntry] | None = None
        self.page = GalleryPage()

    def changed(self, force: bool = False) -> tuple[int, list[ManifestEntry]] | None:
        """A ticket and a snapshot, if an entry changed since the last (entries are replaced).

        ``force``: one even if nothing changed (the page's time says the batch lives).
        """
        entries = list(self._snapshot())
        last = self._last
        if (
            not force
            and last is not None
            and len(entries) == len(last)
            and all(a is b for a, b in zip(entries, last, strict=True))
        ):
            return None
        self._last = entries
        self._issued += 1
        return self._issued, entries

    def final(self) -> tuple[int, list[ManifestEntry]]:
        """A ticket and a snapshot for the last page, changed or not."""
        self._last = list(self._snapshot())
        self._issued += 1
        return self._issued, self._last

    def write(self, ticket: int, entries: list[ManifestEntry], running: bool) -> None:
        with self._lock:
            if ticket < self._written:
                return  # a later snapshot is on disk already
            try:
                reason = None if running or self._stop_reason is None else self._stop_reason()
                self.page.path = write_gallery(
                    self._out, entries, running=running, stop_reason=reason
                )
            except OSError as exc:
                # A view of the journal: losing it costs nothing a rerun cannot rebuild.
                self.page.path = None
                logger.warning(
                    "could not write the gallery page %s: %s",
                    self._out / GALLERY_NAME,
                    exc.strerror or exc,
                )
            self._written = ticket


@contextlib.asynccontextmanager
async def keep_gallery(
    out_dir: str | os.PathLike[str],
    entries: Callable[[], Sequence[ManifestEntry]] | None,
    *,
    interval: float = DEFAULT_INTERVAL,
    stop_reason: Callable[[], str | None] | None = None,
) -> AsyncIterator[GalleryPage]:
    """Keep ``out_dir/index.html`` current while the body runs; write it once more at the end.

    ``entries`` returns the manifest lines as they stand (called on the event
    loop; ``None`` turns the page off). The page is written at once, then
    every ``interval`` seconds when something changed (from
    :data:`THREAD_FROM` entries on, rendered in a worker thread, so the loop
    is not held up), and on the way out whatever ends the
    body: its end, an error, a cancellation (Ctrl-C). A page that cannot be
    written is logged as a warning and never stops the batch. ``stop_reason``
    returns why the batch stopped early (``None``: it did not), for the last page.
    Yields a :class:`GalleryPage`: once the body is done, its ``path`` is the
    page written last, or ``None`` if that write failed (or the page is off).
    """
    if entries is None:
        yield GalleryPage()
        return
    writer = _Writer(Path(out_dir), entries, stop_reason)

    async def keep() -> None:
        clock = asyncio.get_running_loop().time
        written = clock()
        while True:
            snapshot = writer.changed(force=clock() - written >= REWRITE_SECONDS)
            if snapshot is not None:
                written = clock()
                if len(snapshot[1]) < THREAD_FROM:
                    writer.write(*snapshot, True)
                else:
                    await asyncio.to_thread(writer.write, *snapshot, True)
            await asyncio.sleep(interval)

    task = asyncio.create_task(keep())
    try:
        yield writer.page
    finally:
        task.cancel()
        # Written here, on the loop: nothing may come between the body's end and the page.
        writer.write(*writer.final(), False)
