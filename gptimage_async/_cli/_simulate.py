"""``gptimage-async simulate``: the local simulator of both providers, in the foreground."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from ._common import EXIT_OK, UsageError

__all__ = ["simulate"]


def simulate(args: argparse.Namespace) -> int:
    from ..simulator import Faults, SimulatorConfig, serve_forever

    settings: dict[str, Any] = {"time_scale": args.time_scale, "failure_rate": args.failure_rate}
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.rate_limit is None:
        settings["rate_limit"] = None
    elif args.rate_limit is not False:
        settings["rate_limit"], settings["rate_window"] = args.rate_limit
    faults: dict[str, Any] = {}
    names = set(Faults.__struct_fields__) - {"slow_seconds", "outage", "applies_to"}
    for item in args.fault:
        name, _, value = item.partition("=")
        if name not in names:
            raise UsageError(f"unknown fault {name!r}: the faults are {', '.join(sorted(names))}")
        try:
            faults[name] = float(value)
        except ValueError:
            raise UsageError(f"--fault {item!r}: expected NAME=PROBABILITY") from None
    try:
        config = SimulatorConfig(**settings, faults=Faults(**faults))
    except (ValueError, msgspec.ValidationError) as exc:
        raise UsageError(str(exc)) from None
    try:
        serve_forever(args.host, args.port, config)
    except OSError as exc:
        raise UsageError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return EXIT_OK
