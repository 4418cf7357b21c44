"""The live status line of a batch on a terminal, drawn by rich.

Split from ``_progress`` so that a batch whose output is not a terminal (every
test, every pipe) never imports rich: :func:`~gptimage_async._progress.make_display`
imports this module only when it draws a live line.
"""

from __future__ import annotations

import logging
import os
from typing import TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.table import Column
from rich.text import Text

from ._batch import BatchEvent, BatchProgress
from ._progress import ETA_WINDOW, LIVE_INTERVAL, _describe, _rate, _Resume, format_duration

__all__ = ["LiveDisplay"]


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
        self.tick(progress)  # the last state drawn, then the live line ends
        self._progress.stop()
        self._restore_logging()
