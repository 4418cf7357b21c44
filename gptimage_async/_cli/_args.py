"""The command line's arguments: every command and option, and their checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from .._batch import EXPECTED_IMAGE_BYTES
from .._exceptions import ConfigurationError
from .._gallery import add_gallery_command
from .._models import ASPECT_RATIOS, QUALITIES, RateLimit
from .._providers import provider_names
from .._secrets import usage_message
from .._version import __version__
from ..simulator._options import add_simulate_options

__all__ = ["DEMO_TIME_SCALE", "PROVIDER_CHOICES", "REDIS_ENV", "parser"]

#: ``--provider simulator`` runs 20x faster than real time: 3-10 s runs take 0.15-0.5 s.
DEMO_TIME_SCALE = 0.05
#: ``--provider`` choices: every registered provider, and the local simulator.
PROVIDER_CHOICES = (*provider_names(), "simulator")
#: Where ``--redis`` is read from when not given (a URL may carry a password: env, not argv).
REDIS_ENV = "GPTIMAGE_REDIS_URL"


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors never echo a value that looks like an API key.

    argparse repeats what it refused (``unrecognized arguments: --api-kee
    sk-...``, ``invalid choice: 'sk-...'``); a key typed in the wrong place
    would reach a terminal log or a CI transcript. Subcommands' parsers are
    made of this class too (``add_subparsers`` uses the parent's class).
    """

    def parse_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        # argparse's own would list the unrecognised words as typed: ``--api-key VALUE``.
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            super().error(usage_message("", extras))
        return parsed

    def error(self, message: str) -> NoReturn:
        super().error(usage_message(message))


def parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="gptimage-async",
        description="Generate images with GPT Image 1.5 on Runbase or API in One.",
        epilog="Exit codes: 0 all succeeded, 1 some failed, 2 bad usage or input, "
        "130 interrupted. Keys come from RUNBASE_API_KEY / APIINONE_API_KEY.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests (debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # "-v" also after the command; SUPPRESS keeps the subcommand from resetting it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log requests"
    )

    gen = commands.add_parser(
        "generate",
        parents=[verbose],
        help="generate images for one prompt",
        description="Generate images for one prompt; print their URLs, and save them with --out.",
    )
    gen.add_argument("prompt")
    gen.add_argument("--n", type=_positive_int, default=1, help="how many runs (default 1)")
    _request_options(gen)
    gen.add_argument(
        "--image-url",
        action="append",
        default=[],
        metavar="URL",
        help="a reference image (repeat for several)",
    )
    gen.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="save the images into DIR (checked writable before anything is sent)",
    )
    gen.add_argument(
        "--expected-image-mb",
        type=_non_negative_float,
        default=EXPECTED_IMAGE_BYTES / 1e6,
        metavar="MB",
        help="with --out: refuse to start unless DIR has this much free space per image "
        f"(default {EXPECTED_IMAGE_BYTES / 1e6:.1f}; 0 skips the check)",
    )
    _session_options(gen)

    batch = commands.add_parser(
        "batch",
        parents=[verbose],
        help="generate the images of a prompt file, resumably",
        description="Generate and save the images of every prompt in a .txt, .jsonl or .csv "
        "file. Safe to interrupt: run the same command again to resume.",
    )
    batch.add_argument(
        "prompts", type=Path, metavar="PROMPTS", help=".txt, .jsonl or .csv file; - reads stdin"
    )
    batch.add_argument(
        "--format",
        choices=("txt", "jsonl", "csv"),
        help="how to read PROMPTS (default: by its suffix; txt for stdin)",
    )
    batch.add_argument("--out", type=Path, metavar="DIR", required=True, help="output directory")
    _request_options(batch, rows=True)
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="most runs in flight at once (default: no cap; the rate limiter paces)",
    )
    batch.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help="send again the prompts whose earlier create has an unknown fate "
        "(risks paying twice for them)",
    )
    batch.add_argument(
        "--no-download", action="store_true", help="record the URLs without saving the images"
    )
    batch.add_argument(
        "--dry-run",
        action="store_true",
        help="check the file and show what would be sent and its cost; send nothing (needs no key)",
    )
    batch.add_argument(
        "--expected-image-mb",
        type=_non_negative_float,
        default=EXPECTED_IMAGE_BYTES / 1e6,
        metavar="MB",
        help="refuse to start unless DIR has this much free space per image to save "
        f"(default {EXPECTED_IMAGE_BYTES / 1e6:.1f}; 0 skips the check)",
    )
    batch.add_argument(
        "--progress",
        choices=("auto", "live", "log"),
        default="auto",
        help="live status line or plain log lines (default: live on a terminal)",
    )
    batch.add_argument(
        "--no-gallery", action="store_true", help="do not write the gallery page DIR/index.html"
    )
    _session_options(batch)
    add_gallery_command(commands)  # its own -v: it sends no request

    unknown = commands.add_parser(
        "unknown",
        parents=[verbose],
        help="list the prompts of a batch whose create has an unknown fate",
        description="List the prompts in DIR's journal whose create was sent and never "
        "answered: a run may exist and be paid for. Settle each with 'settle'.",
    )
    unknown.add_argument("out", type=Path, metavar="DIR", help="the batch's output directory")
    unknown.add_argument(
        "--pool", type=Path, metavar="POOL.toml", help="the job's pool file: list its lanes too"
    )
    settle = commands.add_parser(
        "settle",
        parents=[verbose],
        help="settle a prompt of unknown fate: attach a recovered run id, or mark it not created",
        description="Settle a prompt that 'unknown' lists: give the run id you found at the "
        "provider (the next batch run attaches it, never creating it again), or "
        "--not-created (the next batch run sends it).",
    )
    settle.add_argument("out", type=Path, metavar="DIR", help="the batch's output directory")
    settle.add_argument("line", type=_positive_int, metavar="LINE", help="the prompt's line")
    settle.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run the create made")
    settle.add_argument(
        "--not-created", action="store_true", help="no run exists: send the prompt again"
    )
    settle.add_argument("--key", help="the prompt's key, when LINE has several unknown prompts")
    settle.add_argument(
        "--lane",
        metavar="LANE",
        help="in a job over several keys: the lane whose key made RUN_ID, as 'unknown' lists "
        "it (provider:fingerprint; with --pool, a lane's label)",
    )
    settle.add_argument(
        "--pool",
        type=Path,
        metavar="POOL.toml",
        help="the job's pool file: its lanes may be named, though no run was created on them",
    )

    sim = commands.add_parser(
        "simulate", parents=[verbose], help="run the local simulator of both providers"
    )
    add_simulate_options(sim)
    return parser


def _request_options(parser: argparse.ArgumentParser, *, rows: bool = False) -> None:
    suffix = " for rows that do not set their own" if rows else ""
    parser.add_argument(
        "--aspect-ratio", choices=sorted(ASPECT_RATIOS), help="1:1 by default" + suffix
    )
    parser.add_argument(
        "--quality",
        type=str.lower,  # case-blind, as prompt files are
        choices=sorted(QUALITIES),
        help="medium by default" + suffix,
    )


def _session_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("provider")
    group.add_argument(
        "--provider",
        choices=PROVIDER_CHOICES,
        help="default runbase; 'simulator' starts a local stand-in (no key, no network)",
    )
    group.add_argument(
        "--pool",
        type=Path,
        metavar="POOL.toml",
        help="several keys and sellers from a TOML pool file (README, 'Several keys and "
        "sellers'): per lane its provider, the environment variable holding its key, base "
        "URL, prices, rate limit; routing and spend cap. Not with --provider, --base-url "
        "or --rate-limit",
    )
    group.add_argument(
        "--base-url", metavar="URL", help="API root, e.g. http://127.0.0.1:8080/runbase/api/v1"
    )
    group.add_argument(
        "--rate-limit",
        type=_client_rate,
        metavar="N/SECONDS",
        help="starting belief about the key's limit, e.g. 20/10 (default: the provider's)",
    )
    group.add_argument(
        "--request-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="give up on one HTTP exchange after this (default 60)",
    )
    group.add_argument(
        "--run-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="give up on a run after this (default 900)",
    )
    group.add_argument(
        "--redis",
        metavar="URL",
        help="share the key's budget with every process naming this Redis "
        "(redis://, rediss:// or redis+sentinel://host:26379/service; "
        f"default ${REDIS_ENV}; needs gptimage-async[redis])",
    )
    group.add_argument(
        "--time-scale",
        type=_positive_float,
        metavar="X",
        help=f"--provider simulator only: time compression (default {DEMO_TIME_SCALE})",
    )
    group.add_argument(
        "--no-state",
        action="store_true",
        help="neither load nor save the learned rate and run durations "
        "(kept per provider, base URL and key in the user's cache directory, "
        "and with --redis in that Redis)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    if value > sys.maxsize:  # a count is a length: beyond this, len() overflows mid-run
        raise argparse.ArgumentTypeError(f"must be at most {sys.maxsize}, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _rate_parts(text: str) -> tuple[int, float]:
    # A bare number is refused: "20" could mean per second, per 10 s or per minute.
    requests, slash, per = text.partition("/")
    try:
        if not slash:
            raise ValueError
        return int(requests), float(per)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected N/SECONDS such as 20/10 (20 requests per 10 seconds), not {text!r}"
        ) from None


def _client_rate(text: str) -> RateLimit:
    requests, per = _rate_parts(text)
    # In the option's own terms, not RateLimit's field names.
    if requests < 1:
        raise argparse.ArgumentTypeError(f"at least 1 request per window, not {text!r}")
    if not 0 < per < float("inf"):
        raise argparse.ArgumentTypeError(
            f"the window must be a positive number of seconds, not {text!r}"
        )
    try:
        return RateLimit(requests, per)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
