"""The ``gptimage-async simulate`` command's options, and the config they make.

Every knob a user needs to rehearse a job is reachable here: per-key
accounts (``--key``), credits, quotas, spend limits and prices, rejected
requests counted, ``Retry-After`` style, outages, read lag, the answer
variants, and every fault. ``_cli/_args.py`` only builds the subcommand and calls
:func:`add_simulate_options`, then :func:`config_from_options`.
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

import msgspec

from gptimage_async.simulator._config import (
    FAULT_RATES,
    FAULT_SETTINGS,
    Faults,
    RetryAfterMode,
    SimulatorConfig,
)
from gptimage_async.simulator._keys import KeyConfig

__all__ = ["add_simulate_options", "config_from_options"]

_DESCRIPTION = (
    "Serve a simulated Runbase and API in One until Ctrl-C; prints their base URLs "
    "first. Any key with the right prefix works (sk-... for Runbase, aio_... for "
    "API in One). Answers have exactly the shapes the providers' documentation "
    "shows unless --variants is given. Every account setting (--rate-limit, "
    "--credits, --quota, --spend-limit, --price) applies to each key on its own; "
    "--key gives one key settings of its own."
)
_EPILOG = (
    f"Fault probabilities (--fault NAME=P): {', '.join(sorted(FAULT_RATES))}. "
    f"Fault timings (--fault NAME=SECONDS, provider seconds): "
    f"slow_seconds (default 30), keepalive_close_after (default 1); the read lag is "
    "--read-lag SECONDS, not a --fault. "
    "Key settings (--key KEY:SETTING=VALUE,...): limit=N/SECONDS or none, credits=N, "
    "quota=N, spend=N (each a whole number, or none), price=MEDIUM/HIGH; "
    "e.g. --key sk-a:limit=20/10,credits=500 --key aio_b:quota=50,spend=1000. Each "
    "setting once per key. --key KEY alone is allowed: KEY gets the settings above, "
    "as any key does."
)


def add_simulate_options(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options (and its description and epilog) to ``parser``."""
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=_port, default=8080, help="port to bind; 0 picks a free one (default 8080)")
    add(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        metavar="X",
        help="multiplies every duration and rate window, e.g. 0.1 runs 10x faster "
        "(default 1: real time, runs take 3-10 s)",
    )
    add("--seed", type=int, help="random seed, for a repeatable run (default: random)")
    add(
        "--failure-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="share of runs the provider fails (Runbase refunds them; API in One, "
        "which documents no refund, does not) (default 0)",
    )
    add(
        "--variants",
        action="store_true",
        help="answer in every undocumented variant too: API in One's flat shape, status "
        "words in any case and spelling, URLs in other places, errors under HTTP 200 "
        "(default: only the documented shapes)",
    )
    accounts = parser.add_argument_group("accounts (per key)")
    accounts.add_argument(
        "--rate-limit",
        type=_server_rate,
        default=False,
        metavar="N/SECONDS",
        help="per-key limit, e.g. 60/10, or 'none' (default 20/10, Runbase's)",
    )
    accounts.add_argument(
        "--count-rejected",
        action="store_true",
        help="rejected requests count against the limit too, so a client that keeps "
        "knocking stays out (default: only admitted requests count)",
    )
    accounts.add_argument(
        "--retry-after",
        choices=get_args(RetryAfterMode),
        default="seconds",
        help="what a rate-limit 429 carries in Retry-After (default seconds)",
    )
    for flag, what in (
        ("--credits", "starting balance in credits; 402 when a run costs more (default: no limit)"),
        (
            "--quota",
            "most runs a key may create; then Runbase answers 429 USAGE_EXCEEDED, "
            "API in One 403 (default: no limit)",
        ),
        ("--spend-limit", "most credits a key may spend; then 403 (default: no limit)"),
    ):
        accounts.add_argument(flag, type=_count, metavar="N", help=what)
    accounts.add_argument(
        "--price",
        type=_prices,
        metavar="MEDIUM/HIGH",
        help="credits a run costs by quality (default 10/28, API in One's published price)",
    )
    accounts.add_argument(
        "--key",
        type=_key,
        action="append",
        default=[],
        metavar="KEY:SETTING=VALUE,...",
        help="give KEY its own settings (repeat for several keys; settings below); "
        "keys not named get the settings above",
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="NAME=P",
        help="inject a fault with probability P per request, e.g. poll_5xx=0.1, or set "
        "a fault timing, e.g. slow_seconds=5; repeat for several (default: none; names "
        "and timings below; the read lag is --read-lag)",
    )
    faults.add_argument(
        "--outage",
        type=_outage,
        metavar="START:END",
        help="answer every request 503 from START to END provider seconds after the "
        "server starts, e.g. 30:45 (default: none)",
    )
    faults.add_argument(
        "--read-lag",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="polls of a run answer 404 for this many provider seconds after its create "
        "(default 0)",
    )


def config_from_options(args: argparse.Namespace) -> SimulatorConfig:
    """The ``SimulatorConfig`` the parsed ``simulate`` options describe.

    Raises ``ValueError`` with a message for the user when the options
    contradict each other (a key given twice, say).
    """
    settings: dict[str, Any] = {
        "time_scale": args.time_scale,
        "failure_rate": args.failure_rate,
        "count_rejected": args.count_rejected,
        "retry_after": args.retry_after,
        "credits": args.credits,
        "quota": args.quota,
        "spend_limit": args.spend_limit,
        "prices": args.price,
        "read_lag": args.read_lag,
    }
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.rate_limit is None:
        settings["rate_limit"] = None
    elif args.rate_limit is not False:
        settings["rate_limit"], settings["rate_window"] = args.rate_limit
    keys: dict[str, KeyConfig] = {}
    for key, own in args.key:
        if key in keys:
            raise ValueError(f"--key {key[:4]}... is given twice")
        keys[key] = own
    settings["keys"] = keys
    faults = dict(args.fault)
    if args.outage is not None:
        faults["outage"] = args.outage
    try:
        config = SimulatorConfig(**settings, faults=Faults(**faults))
    except (ValueError, msgspec.ValidationError) as exc:
        raise ValueError(str(exc)) from None
    return config.with_variants() if args.variants else config


# -- value parsers (argparse turns ArgumentTypeError into a usage error, exit 2) ----------


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _port(text: str) -> int:
    # Checked here, not by bind(): a usage error of the subcommand, with its usage text.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535 (0 picks a free one), not {value}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _probability(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _count(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _server_rate(text: str) -> tuple[int, float] | None:
    if text.strip().lower() == "none":
        return None
    # A bare number is refused: "20" could mean per second, per 10 s or per minute.
    requests, slash, per = text.partition("/")
    try:
        if not slash:
            raise ValueError
        count, window = int(requests), float(per)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected N/SECONDS such as 20/10 (20 requests per 10 seconds), not {text!r}"
        ) from None
    if count < 1 or not 0 < window < float("inf"):
        raise argparse.ArgumentTypeError(f"expected N/SECONDS such as 20/10, not {text!r}")
    return count, window


def _prices(text: str) -> dict[str, int]:
    medium, slash, high = text.partition("/")
    try:
        if not slash:
            raise ValueError
        prices = {"medium": int(medium), "high": int(high)}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MEDIUM/HIGH credits such as 10/28, not {text!r}"
        ) from None
    if min(prices.values()) < 0:
        raise argparse.ArgumentTypeError(f"prices must be 0 or more, not {text!r}")
    return prices


def _outage(text: str) -> tuple[float, float]:
    start, colon, end = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"expected START:END seconds such as 30:45, not {text!r}")
    first, last = _non_negative_float(start), _non_negative_float(end)
    if last < first:
        raise argparse.ArgumentTypeError(f"the outage must end after it starts, not {text!r}")
    return first, last


#: Fault timings ``--fault NAME=SECONDS`` takes; the read lag has its own option.
_FAULT_TIMINGS = tuple(name for name in FAULT_SETTINGS if name != "read_lag")


def _fault(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name == "read_lag":  # one knob on the command line, not two that both apply
        raise argparse.ArgumentTypeError("the read lag is set with --read-lag SECONDS")
    if name in FAULT_RATES:
        return name, _probability(value)
    if name in _FAULT_TIMINGS:
        return name, _non_negative_float(value)
    known = ", ".join(sorted((*FAULT_RATES, *_FAULT_TIMINGS)))
    raise argparse.ArgumentTypeError(f"unknown fault {name!r}: the faults are {known}")


_KEY_SETTINGS = {"limit", "credits", "quota", "spend", "price"}


def _key(text: str) -> tuple[str, KeyConfig]:
    key, _, rest = text.partition(":")
    key = key.strip()
    if not key:
        raise argparse.ArgumentTypeError("expected KEY or KEY:SETTING=VALUE,... (no key given)")
    # The message names the key by its first characters only: it may be a real one.
    shown = f"{key[:4]}..."
    fields: dict[str, Any] = {}
    seen: set[str] = set()
    for item in filter(None, (part.strip() for part in rest.split(","))):
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or name not in _KEY_SETTINGS:
            raise argparse.ArgumentTypeError(
                f"--key {shown}: expected SETTING=VALUE with SETTING one of "
                f"{', '.join(sorted(_KEY_SETTINGS))}, not {item!r}"
            )
        if name in seen:  # the last would silently win: say so instead
            raise argparse.ArgumentTypeError(f"--key {shown}: {name} is given twice")
        seen.add(name)
        if name == "limit":
            rate = _server_rate(value)
            fields["rate_limit"] = None if rate is None else rate[0]
            if rate is not None:
                fields["rate_window"] = rate[1]
        elif name == "price":
            fields["prices"] = _prices(value)
        else:
            fields["spend_limit" if name == "spend" else name] = _count(value)
    return key, KeyConfig(**fields)
