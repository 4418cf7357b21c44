"""Showing a batch's progress: a live status line on a terminal, plain log lines elsewhere.

Both displays take the batch's events (:class:`~gptimage_async.BatchEvent`)
and are ticked with its :class:`~gptimage_async.BatchProgress`; which one a
stream gets is decided by :func:`make_display` (``isatty``). The live line is
drawn by rich: as wide as the terminal it is drawn on, failures and log
records printed above it, an ETA from rich's smoothed speed estimate.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.table import Column
from rich.text import Text

from ._batch import BatchEvent, BatchProgress
from ._manifest import ManifestEntry

__all__ = ["Display", "LiveDisplay", "LogDisplay", "format_duration", "make_display"]

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
    return LiveDisplay(stream) if live else LogDisplay(stream)


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


class _Status(ProgressColumn):
    """The counts, most important first: a narrow terminal cuts the tail.

    Sized to its text (no ratio): the bar beside it gives up its width first,
    and only a terminal narrower than the counts cuts them.
    """

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis"))

    def render(self, task: Task) -> Text:
        p: BatchProgress | None = task.fields.get("progress")
        if p is None:
            return Text("starting")
        # No ETA once stopping: the batch will not get to the end.
        eta = "stopping" if task.fields.get("stopping") else f"ETA {_eta(task)}"
        return Text(
            f"{p.finished}/{p.total}  {eta}  ok {p.succeeded}  failed {p.failed}"
            + (f"  unknown {p.unknown}" if p.unknown else "")
            + f"  in flight {p.in_flight + p.submitting}  429s {p.rate_limited}  {_rate(p)}"
        )


def _eta(task: Task) -> str:
    # rich's estimate: speed over the last ETA_WINDOW seconds of this run's progress,
    # so start-up latency and prompts an earlier run finished do not skew it.
    if task.finished:
        return "0s"
    return format_duration(task.time_remaining)


class _TerminalConsole(Console):
    """A rich console sized by the terminal it writes to.

    rich asks stdin, then stdout, then stderr for the size; with stdout
    redirected and stdin elsewhere that is not the terminal drawn on.
    """

    def resize(self) -> None:
        try:
            columns, lines = os.get_terminal_size(self.file.fileno())
        except (AttributeError, ValueError, OSError):
            return  # not a terminal (live output forced into a file): rich's own guess
        if columns and lines:
            self.size = (columns, lines)


class LiveDisplay:
    """One status line redrawn in place by rich; failures, notes and logs are printed above it."""

    __slots__ = ("_console", "_handlers", "_progress", "_resume", "_task", "interval")

    def __init__(self, stream: TextIO, *, interval: float = LIVE_INTERVAL) -> None:
        self.interval = interval
        self._console = _TerminalConsole(
            file=stream, force_terminal=True, highlight=False, soft_wrap=False
        )
        self._console.resize()
        self._progress = Progress(
            BarColumn(
                bar_width=None,
                complete_style="cyan",
                finished_style="green",
                table_column=Column(ratio=1, min_width=0),
            ),
            _Status(),
            console=self._console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            speed_estimate_period=ETA_WINDOW,
            expand=True,
        )
        self._task: TaskID | None = None
        self._resume = _Resume()
        self._handlers: list[tuple[logging.Handler, logging.Handler]] = []

    def _start(self, progress: BatchProgress) -> TaskID:
        if self._task is None:
            self._task = self._progress.add_task(
                "batch", total=max(progress.total - progress.skipped, 0), progress=progress
            )
            self._route_logging()
            self._progress.start()
        return self._task

    def _route_logging(self) -> None:
        """Log records go through the console, above the live line, not into it."""
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                self._console.file,
                getattr(self._console.file, "buffer", None),
            ):
                rich_handler = RichHandler(
                    console=self._console, show_time=False, show_path=False, markup=False
                )
                rich_handler.setLevel(handler.level)
                rich_handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
                root.removeHandler(handler)
                root.addHandler(rich_handler)
                self._handlers.append((handler, rich_handler))

    def _restore_logging(self) -> None:
        root = logging.getLogger()
        for handler, rich_handler in self._handlers:
            root.removeHandler(rich_handler)
            root.addHandler(handler)
        self._handlers.clear()

    def event(self, event: BatchEvent) -> None:
        if self._resume.count(event):
            return
        if event.kind == "stopping":
            self._update(event.progress, stopping=True)
            if event.message:
                self.note(f"stopping: {event.message}")
            return
        entry = event.entry
        if (
            entry is not None
            and event.kind in ("finished", "unknown")
            and entry.status != "succeeded"
        ):
            self.note(_describe(entry))

    def tick(self, progress: BatchProgress) -> None:
        said = self._resume.line()
        if said:
            self.note(said)
        self._update(progress)
        self._console.resize()
        self._progress.refresh()

    def _update(self, progress: BatchProgress, *, stopping: bool = False) -> None:
        task = self._start(progress)
        done = progress.finished - progress.skipped
        if stopping:
            self._progress.update(task, completed=done, progress=progress, stopping=True)
        else:
            self._progress.update(task, completed=done, progress=progress)

    def note(self, message: str) -> None:
        """Print ``message`` on its own line above the status line."""
        self._console.print(Text(message), soft_wrap=True)

    def close(self, progress: BatchProgress) -> None:
        said = self._resume.line()
        if said:
            self.note(said)
        self._update(progress)
        self._console.resize()
        self._progress.refresh()
        self._progress.stop()
        self._restore_logging()
