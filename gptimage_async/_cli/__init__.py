"""The ``gptimage-async`` command: generate, batch, unknown, settle, gallery, simulate.

::

    gptimage-async batch examples/prompts.txt --out out/ --provider simulator
    gptimage-async generate "a ceramic lamp" --n 2 --out out/
    gptimage-async unknown out/            # prompts whose create has an unknown fate
    gptimage-async settle out/ 12 run_abc  # ... and what became of one
    gptimage-async gallery out/            # rebuild out/index.html from the manifest
    gptimage-async simulate --port 8080

Exit codes: 0 every prompt succeeded; 1 some did not; 2 bad usage or input
(nothing was sent); 130 interrupted; 141 the output's pipe was closed
(``| head``: the command stops quietly). Modules: ``_args`` (the options),
``_sessions`` (the session a command runs on), ``_generate``, ``_batch``,
``_settle``, ``_simulate`` (one per command), ``_spend`` (spend per lane),
``_signals`` (Ctrl-C, SIGTERM, SIGHUP). ``--pool POOL.toml`` runs ``batch`` and
``generate`` over several keys (``_pool/_pool_file``).

Each command's module is imported when that command runs, not at start:
``--help``, ``unknown`` or ``gallery`` do not pay for the batch engine, and
nothing but ``simulate`` or ``--provider simulator`` imports the simulator's
server (aiohttp.web).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._secrets import redact
from ._args import parser
from ._common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Failure,
    UsageError,
)
from ._signals import catch_early

if TYPE_CHECKING:
    from ._sessions import state_file

__all__ = ["main", "state_file"]


def __getattr__(name: str) -> object:
    """``state_file`` loads with ``_sessions`` on first use (PEP 562)."""
    if name == "state_file":
        from ._sessions import state_file

        return state_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Output to a closed pipe (``gptimage-async unknown out/ | head``) ends the
    command quietly with exit code 141, as Python's documentation on SIGPIPE
    recommends: no traceback, and stdout pointed at ``os.devnull`` so that the
    interpreter's own flush at exit does not complain either.
    """
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):  # a stdout with no file descriptor
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return EXIT_BROKEN_PIPE


def release_early_signals(command: str) -> None:
    """A command that takes no stop signals of its own gets the usual handlers back.

    ``batch`` and ``generate`` replay what was recorded while they started
    (``stop_on_signals``); any other gets what was recorded delivered now
    (a Ctrl-C: ``KeyboardInterrupt``).
    """
    from .. import _early_signals  # here: the imports above are kept as they are (start-up)

    if command not in ("batch", "generate"):
        _early_signals.release()


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        release_early_signals(args.command)
        # Each command imports what it runs on (see the module docstring).
        if args.command == "simulate":
            from ._simulate import simulate

            return simulate(args)
        if args.command == "gallery":
            from .._gallery import gallery_command

            return gallery_command(args.dir)
        if args.command in ("unknown", "settle"):
            from ._settle import settle, unknown

            return unknown(args) if args.command == "unknown" else settle(args)
        catch_early()  # before the imports below: a signal while they run is not lost
        if args.command == "batch":
            from ._batch import batch as runner
        else:
            from ._generate import generate as runner
        from ._sessions import check_endpoint_options

        check_endpoint_options(args)  # before any use of args.provider
        return asyncio.run(runner(args))
    except UsageError as exc:
        print(f"gptimage-async: error: {redact(str(exc), bare=True)}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as exc:
        print(f"gptimage-async: error: {redact(str(exc), bare=True)}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, asyncio.CancelledError):
        hint = (
            "; rerun the same command to resume (creates that were in flight "
            "will be reported as unknown)"
            if args.command == "batch"
            else ""
        )
        print(f"\ninterrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
