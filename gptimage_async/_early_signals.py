"""Stop signals that come while the command line starts: kept, not lost, not a traceback.

The command takes SIGINT, SIGTERM and SIGHUP itself only once its batch is
set up (``_cli._signals.stop_on_signals``). Before that it spends a second or
two importing and reading its input, on a loaded machine more; a signal then
was lost (a script's background job starts with SIGINT ignored), ended in a
``KeyboardInterrupt`` traceback from some import, or killed it silently with
143 (SIGTERM) where the README promises 130.

So when this process *is* the command (``started_as_command``: the
``gptimage-async`` script, or ``python -m gptimage_async``), importing this
module, the first thing the package does, installs handlers that only
record a stop signal. ``stop_on_signals`` then replays what was recorded as
if it came that moment: the first stops the batch before anything is sent,
the second quits at once, with the messages and exit code 130 of a signal
later on. A command that takes no such signals (``simulate``, ``gallery``)
gets the previous handlers back (``release``), and a recorded signal is
delivered to them. SIGHUP ignored (``nohup``) stays ignored.

Only ``os``, ``signal`` and ``sys`` are imported here: this runs before the
package's own (heavy) imports. A library user's process is never touched.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

__all__ = ["record", "release", "started_as_command", "take"]

#: The console script's names (``pip`` writes ``gptimage-async``; Windows adds ``.exe``).
_SCRIPT_NAMES = frozenset({"gptimage-async", "gptimage-async.exe", "gptimage-async-script.py"})
_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

_recorded: list[int] = []
#: The handlers ``record`` replaced, by signal: what ``release`` puts back.
_saved: dict[int, Any] = {}


def started_as_command(argv: list[str] | None = None, orig: list[str] | None = None) -> bool:
    """Whether this process is the command line (not a program importing the library).

    ``argv`` defaults to ``sys.argv`` (``[.../gptimage-async, ...]`` for the
    script), ``orig`` to ``sys.orig_argv`` (``[python, -m, gptimage_async,
    ...]``: while ``-m`` imports the package, ``sys.argv[0]`` is still ``-m``).
    """
    argv = sys.argv if argv is None else argv
    orig = list(getattr(sys, "orig_argv", [])) if orig is None else orig
    first = argv[0] if argv else ""
    if first not in ("-m", "-c", ""):  # a script runs: ours, or another program
        return os.path.basename(first) in _SCRIPT_NAMES
    for i, word in enumerate(orig[1:], start=1):
        if word == "-m":  # the interpreter's options end here
            return orig[i + 1 : i + 2] == ["gptimage_async"]
        if word.startswith("-m") or word == "-c":
            return word == "-mgptimage_async"
    return False


def _record(signum: int, frame: object) -> None:
    _recorded.append(signum)


def record() -> None:
    """Record SIGINT, SIGTERM and SIGHUP from now on (not SIGHUP if ignored: ``nohup``).

    SIGINT is taken even when ignored: a script's background job starts so,
    and a ``kill -INT`` sent to it must still stop it. Idempotent; only in the
    main thread (elsewhere nothing is installed).
    """
    for name in _NAMES:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            current = signal.getsignal(sig)
            if current is _record or (name == "SIGHUP" and current == signal.SIG_IGN):
                continue
            signal.signal(sig, _record)
        except (ValueError, OSError):  # not the main thread
            continue
        _saved[sig] = current


def take() -> int:
    """How many stop signals were recorded since the last ``take``; the record is emptied."""
    count = len(_recorded)
    del _recorded[:count]
    return count


def release() -> None:
    """Put back the handlers ``record`` replaced, and deliver to them what was recorded."""
    pending = list(_recorded)
    del _recorded[:]
    for sig, handler in list(_saved.items()):
        try:
            if signal.getsignal(sig) is _record:
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        except (ValueError, OSError):  # pragma: no cover - not the main thread
            continue
        del _saved[sig]
    for sig in pending:
        signal.raise_signal(sig)


if started_as_command():
    record()
