"""What every command of the ``gptimage-async`` command line shares: exit codes, errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Failure",
    "UsageError",
    "check_writable",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: The output went to a closed pipe (``| head``): 128 + SIGPIPE, what a shell reports for
#: a command killed by it, as most Unix tools end.
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    """Bad usage or input, found before anything was sent: exit code 2."""


class Failure(Exception):
    """A failure after requests went out (the disk filled up, say): exit code 1."""


def check_writable(out: Path) -> None:
    """Make ``out`` if needed and prove a file can be written in it; ``UsageError`` if not.

    Called before anything is sent: a run paid for must have somewhere to go.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"cannot write to {out}: it is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to {out}: {exc.strerror or exc}") from None
