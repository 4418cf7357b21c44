"""Showing a batch's progress: a live status line on a terminal, plain log lines elsewhere.

Both displays take the batch's events (:class:`~gptimage_async.BatchEvent`)
and are ticked with its :class:`~gptimage_async.BatchProgress`; which one a
stream gets is decided by :func:`make_display` (``isatty``). The live line is
drawn by rich (``_progress_live``, imported only when a live line is drawn:
rich costs a process start ~30 ms): as wide as the terminal it is drawn on,
failures and log records printed above it, an ETA from rich's smoothed speed
estimate.
"""

from __future__ import annotations

import time
from typing import Protocol, TextIO

from ._batch import BatchEvent, BatchProgress
from ._manifest import ManifestEntry

__all__ = ["Display", "LogDisplay", "format_duration", "make_display"]

#: Seconds between two redraws of the live line, and between two progress log lines.
LIVE_INTERVAL = 0.1
LOG_INTERVAL = 10.0
#: Seconds of recent progress the ETA's speed is averaged over.
ETA_WINDOW = 30.0


class Display(Protocol):
    """What the CLI drives: events as they come, ticks at ``interval``, one close."""

    interval: float

    def event(self, event: BatchEvent) -> None: ...

    def tick(self, progress: BatchProgress) -> None: ...

    def note(self, message: str) -> None: ...

    def close(self, progress: BatchProgress) -> None: ...


def make_display(stream: TextIO, *, live: bool | None = None) -> Display:
    """The live display if ``stream`` is a terminal (or ``live=True``), else log lines."""
    if live is None:
        live = _is_terminal(stream)
    if not live:
        return LogDisplay(stream)
    from ._progress_live import LiveDisplay  # rich, only for a live line

    return LiveDisplay(stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float | None) -> str:
    """``"42s"``, ``"3m05s"``, ``"2h07m"``; ``"?"`` when unknown.

    >>> format_duration(185)
    '3m05s'
    """
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(progress: BatchProgress) -> str:
    return "?/s" if progress.rate is None else f"{progress.rate:.2f}/s"


def _describe(entry: ManifestEntry) -> str:
    prompt = entry.input.prompt
    prompt = prompt if len(prompt) <= 50 else prompt[:47] + "..."
    run = f" {entry.run_id}" if entry.run_id else ""
    if entry.status == "succeeded":
        files = ", ".join(entry.files) if entry.files else " ".join(entry.urls)
        return f"ok      line {entry.line}{run}: {files}"
    # "pending": a run left alone (its lane is not in this job), resumed by a later run.
    label = {"failed": "FAILED ", "unknown": "UNKNOWN"}.get(entry.status, "PENDING")
    return f"{label} line {entry.line}{run} ({prompt!r}): {entry.error_type}: {entry.error}"


class _Resume:
    """Counts the prompts an earlier run finished, to say so in one line, not thousands."""

    __slots__ = ("said", "skipped")

    def __init__(self) -> None:
        self.skipped = 0
        self.said = False

    def count(self, event: BatchEvent) -> bool:
        if event.kind != "skipped":
            return False
        self.skipped += 1
        return True

    def line(self) -> str | None:
        if self.said or not self.skipped:
            return None
        self.said = True
        return f"resuming: {self.skipped} prompts already done by an earlier run"


class LogDisplay:
    """Plain lines for logs and pipes: every failed prompt, and a summary every ``interval``."""

    __slots__ = ("_last", "_resume", "_stream", "interval", "verbose")

    def __init__(self, stream: TextIO, *, interval: float = LOG_INTERVAL, verbose: bool = True):
        self._stream = stream
        self.interval = interval
        #: Also log every prompt that succeeded, not only the failures.
        self.verbose = verbose
        self._last = time.monotonic()
        self._resume = _Resume()

    def event(self, event: BatchEvent) -> None:
        if self._resume.count(event):
            return
        if event.kind == "stopping":
            if event.message:
                self._write(f"stopping: {event.message}")
            return
        entry = event.entry
        if entry is None or event.kind not in ("finished", "unknown"):
            return
        if entry.status != "succeeded" or self.verbose:
            p = event.progress
            self._write(f"[{p.finished}/{p.total}] {_describe(entry)}")

    def tick(self, progress: BatchProgress) -> None:
        said = self._resume.line()
        if said:
            self._write(said)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self._summary(progress))

    def _summary(self, p: BatchProgress) -> str:
        return (
            f"progress: {p.finished}/{p.total} finished ({p.succeeded} ok, {p.failed} failed, "
            f"{p.unknown} unknown), {p.in_flight + p.submitting} in flight, {_rate(p)}, "
            f"ETA {format_duration(p.eta)}, 429s: {p.rate_limited}"
        )

    def note(self, message: str) -> None:
        self._write(message)

    def close(self, progress: BatchProgress) -> None:
        said = self._resume.line()
        if said:
            self._write(said)

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()
