"""``gptimage-async simulate``: the local simulator of both providers, in the foreground."""

from __future__ import annotations

import argparse

from ..simulator._options import config_from_options
from ._common import EXIT_OK, UsageError

__all__ = ["simulate"]


def simulate(args: argparse.Namespace) -> int:
    from ..simulator import serve_forever

    try:
        config = config_from_options(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        serve_forever(args.host, args.port, config)
    except OSError as exc:  # a port in use, a host not this machine's (its range: argparse)
        raise UsageError(
            f"cannot serve on {args.host}:{args.port}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return EXIT_OK
