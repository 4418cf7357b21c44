"""Ctrl-C, SIGTERM and SIGHUP for a command that sends creates.

The first signal stops cleanly: no more creates, those on the wire are let be
answered and recorded. The second quits at once: ``quit_now`` says what is
left behind (a batch's journal already holds an *intent* for every create on
the wire, so a rerun reports those prompts unknown instead of paying again)
and the process exits with 130 without closing anything (no waiting for
answers, no half-closed HTTP sessions to complain). Any later signal is
ignored. SIGHUP (the terminal closed, an ssh session dropped) counts as
SIGTERM, so a batch left running when its terminal goes away ends as cleanly
as one stopped on purpose; unless it is ignored (``nohup``): then it stays so.

A signal that comes before the command's loop takes them (from the
process's first import, ``gptimage_async._early_signals``, or ``catch_early``)
is recorded, and ``stop_on_signals`` replays it: the job stops before
anything is sent, with the same message and exit code as later. Without it,
a command started in the background of a script (where the shell ignores
SIGINT) lost a Ctrl-C sent while it started, a Ctrl-C in a terminal ended in
a traceback from an import, and a SIGTERM killed it silently (143).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator

from .. import _early_signals
from ._common import EXIT_INTERRUPTED

__all__ = ["STOP_SIGNALS", "Interrupted", "catch_early", "quit_at_once", "stop_on_signals"]

#: The signals that stop a command: Ctrl-C, a polite kill, a closed terminal.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted:
    """Truthy once a signal asked the command to stop; ``signals`` counts them."""

    __slots__ = ("signals",)

    def __init__(self) -> None:
        self.signals = 0

    def __bool__(self) -> bool:
        return self.signals > 0


def _taken(sig: signal.Signals) -> bool:
    # nohup's ignored SIGHUP is the user's wish: the command outlives its terminal.
    return not (sig == getattr(signal, "SIGHUP", None) and signal.getsignal(sig) == signal.SIG_IGN)


def catch_early() -> None:
    """Until ``stop_on_signals`` takes over, a stop signal is recorded (``_early_signals``).

    The process's own start (the console script, ``python -m``) records them
    from its first import; this covers ``main()`` called otherwise. Also when
    the shell started the command ignoring SIGINT (a background job of a
    script): a Ctrl-C sent then is not lost. ``stop_on_signals`` replays them.
    """
    _early_signals.record()


def quit_at_once(message: str) -> None:
    """Print ``message`` to stderr (if it can be) and end the process with 130, now."""
    with contextlib.suppress(OSError, ValueError):  # a closed terminal cannot be written to
        print(message, file=sys.stderr, flush=True)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def stop_on_signals(
    stop: Callable[[], None], quit_now: Callable[[], None]
) -> Iterator[Interrupted]:
    """First signal: ``stop()``. Second: ``quit_now()`` (which exits). Later ones: nothing."""
    loop = asyncio.get_running_loop()
    interrupted = Interrupted()

    def on_signal() -> None:
        interrupted.signals += 1
        if interrupted.signals == 1:
            stop()
        elif interrupted.signals == 2:
            quit_now()

    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        if not _taken(sig):
            continue
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not POSIX
            pass
    # Signals recorded since the command started count as if they came now: the first
    # stops the job before anything is sent, a second quits at once (the handlers are
    # installed first, so none falls between the two).
    for _ in range(_early_signals.take()):
        on_signal()
    try:
        yield interrupted
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
