"""The ``gptimage-async`` command: generate, batch, simulate.

::

    gptimage-async batch examples/prompts.txt --out out/ --provider simulator
    gptimage-async generate "a ceramic lamp" --n 2 --out out/
    gptimage-async simulate --port 8080

Exit codes: 0 every prompt succeeded; 1 some did not; 2 bad usage or input
(nothing was sent); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import platformdirs

from ._batch import Batch, BatchReport
from ._download import download, slugify
from ._exceptions import (
    ConfigurationError,
    GPTImageError,
    InvalidRequestError,
    SessionClosedError,
)
from ._gallery import GALLERY_NAME, add_gallery_command, gallery_command
from ._journal import JournalError
from ._models import ASPECT_RATIOS, QUALITIES, ImageRequest, RateLimit, Result
from ._progress import Display, format_duration, make_display
from ._prompts import PromptFileError, read_prompts
from ._providers import get_provider, provider_names
from ._run import Run
from ._session import Session
from ._transport import Transport
from ._version import __version__
from .simulator._options import add_simulate_options, config_from_options

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: ``--provider simulator`` runs 20x faster than real time: 3-10 s runs take 0.15-0.5 s.
DEMO_TIME_SCALE = 0.05
#: Any key with the Runbase prefix is accepted by the simulator.
SIMULATOR_KEY = "sk-simulator"
#: ``--provider`` choices: every registered provider, and the local simulator.
PROVIDER_CHOICES = (*provider_names(), "simulator")
#: Where ``--redis`` is read from when not given (a URL may carry a password: env, not argv).
REDIS_ENV = "GPTIMAGE_REDIS_URL"


class _UsageError(Exception):
    """Bad usage or input, found before anything was sent: exit code 2."""


class _Failure(Exception):
    """A failure after requests went out (the disk filled up, say): exit code 1."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "gallery":
            return gallery_command(args.dir)
        runner = _batch if args.command == "batch" else _generate
        return asyncio.run(runner(args))
    except _UsageError as exc:
        print(f"gptimage-async: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Failure as exc:
        print(f"gptimage-async: error: {exc}", file=sys.stderr)
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


# -- arguments ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    gen.add_argument("--out", type=Path, metavar="DIR", help="save the images into DIR")
    _session_options(gen)

    batch = commands.add_parser(
        "batch",
        parents=[verbose],
        help="generate the images of a prompt file, resumably",
        description="Generate and save the images of every prompt in a .txt, .jsonl or .csv "
        "file. Safe to interrupt: run the same command again to resume.",
    )
    batch.add_argument("prompts", type=Path, metavar="PROMPTS", help=".txt, .jsonl or .csv file")
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
        "--no-gallery", action="store_true", help="do not write the gallery page DIR/index.html"
    )
    batch.add_argument(
        "--progress",
        choices=("auto", "live", "log"),
        default="auto",
        help="live status line or plain log lines (default: live on a terminal)",
    )
    _session_options(batch)
    add_gallery_command(commands, parents=[verbose])

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
    parser.add_argument("--quality", choices=sorted(QUALITIES), help="medium by default" + suffix)


def _session_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("provider")
    group.add_argument(
        "--provider",
        choices=PROVIDER_CHOICES,
        default="runbase",
        help="default runbase; 'simulator' starts a local stand-in (no key, no network)",
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
        f"(redis:// or rediss://; default ${REDIS_ENV}; needs gptimage-async[redis])",
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
        "(kept per provider and base URL in the user's cache directory, "
        "and with --redis in that Redis)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
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
    try:
        return RateLimit(requests, per)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


# -- sessions ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _session(args: argparse.Namespace) -> AsyncIterator[Session]:
    """An unopened session per the options (a simulator runs while it lives)."""
    options: dict[str, Any] = {"on_exit": "cancel"}
    if args.run_timeout is not None:
        options["run_timeout"] = args.run_timeout
    if args.request_timeout is not None:
        options["request_timeout"] = args.request_timeout
    redis = args.redis or os.environ.get(REDIS_ENV) or None
    if redis is not None:
        options["redis"] = redis
    if args.no_state:
        options["remember"] = False
    if args.provider == "simulator":
        if args.base_url:
            raise _UsageError("--base-url makes no sense with --provider simulator")
        from .simulator import Simulator, SimulatorConfig
        from .testing import scaled_rate_limit

        config = SimulatorConfig(time_scale=args.time_scale or DEMO_TIME_SCALE)
        # A simulator lives on a new port each time: nothing it taught is worth keeping.
        options["remember"] = False
        async with Simulator(config) as sim:
            session = _make_session(
                "runbase",
                api_key=SIMULATOR_KEY,
                base_url=sim.base_url("runbase"),
                rate_limit=args.rate_limit or scaled_rate_limit(config),
                **options,
            )
            yield session
        return
    if args.time_scale is not None:
        raise _UsageError("--time-scale applies to --provider simulator only")
    provider = get_provider(args.provider)
    if not os.environ.get(provider.env_var, "").strip():
        # Not the library's "pass api_key=...": the command line never takes a key.
        raise _UsageError(f"no API key for {provider.name}: set {provider.env_var}")
    if not args.no_state:
        options["state_file"] = state_file(args.provider, args.base_url)
    yield _make_session(
        args.provider, base_url=args.base_url, rate_limit=args.rate_limit, **options
    )


def state_file(provider: str, base_url: str | None) -> Path:
    """Where the command line keeps what sessions learned: one file per provider and base URL.

    In the user's cache directory (``~/.cache/gptimage-async/state/`` on Linux):
    losing it costs one cold start, nothing else.
    """
    try:
        url = base_url or get_provider(provider).default_base_url
    except ConfigurationError:  # reported when the session is made
        url = base_url or ""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    cache = Path(platformdirs.user_cache_dir("gptimage-async", appauthor=False))
    return cache / "state" / f"{provider}-{digest}.json"


def _make_session(provider: str, **options: Any) -> Session:
    try:
        return Session(provider, **options)
    except ConfigurationError as exc:
        raise _UsageError(exc.message) from None


# -- generate ------------------------------------------------------------------------------


async def _generate(args: argparse.Namespace) -> int:
    async with _session(args) as session:
        try:
            request = session.prepare(
                args.prompt,
                aspect_ratio=args.aspect_ratio,
                quality=args.quality,
                image_urls=args.image_url,
            )
        except InvalidRequestError as exc:
            raise _UsageError(exc.message) from None
        async with session:
            generation = _Generation(session, request, args.out)
            try:
                with _stop_on_signals(generation.stop) as interrupted:
                    failures = await generation.run(args.n)
            except asyncio.CancelledError:
                generation.print_created()  # a second Ctrl-C: quit at once, but say what exists
                raise
    if interrupted:
        generation.print_created()
        return EXIT_INTERRUPTED
    return EXIT_OK if failures == 0 else EXIT_FAILED


class _Stopped(Exception):
    """Raised by ``on_send`` once ``generate`` stops: that create is not sent."""


class _Generation:
    """``generate --n N``: N runs, each printed as it ends; stop() sends no more creates.

    Runs already created are paid for: a stop leaves them to the provider and
    prints their ids, and creates on the wire are let be answered to get theirs.
    """

    def __init__(self, session: Session, request: ImageRequest, out: Path | None) -> None:
        self._session = session
        self._request = request
        self._out = out
        self._stopping = False
        self._unsent: set[anyio.CancelScope] = set()
        self._following: set[anyio.CancelScope] = set()
        self._on_wire = 0
        self.created: list[Run] = []
        self.failures = 0

    def stop(self) -> None:
        self._stopping = True
        for scope in [*self._unsent, *self._following]:
            scope.cancel()

    async def run(self, n: int) -> int:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(self._one)
        return self.failures

    async def _one(self) -> None:
        unsent = anyio.CancelScope()
        self._unsent.add(unsent)

        def sending() -> None:
            if self._stopping:
                raise _Stopped
            if unsent in self._unsent:
                self._unsent.discard(unsent)  # on the wire: let it be answered
                self._on_wire += 1

        run: Run | None = None
        try:
            with unsent:
                run = await self._session.submit(self._request, on_send=sending)
        except _Stopped:
            return
        except GPTImageError as exc:
            self._failed(exc)
            return
        finally:
            if unsent not in self._unsent:
                self._on_wire -= 1
            self._unsent.discard(unsent)
        if run is None:
            return  # stopped while waiting for the rate limiter: nothing was sent
        self.created.append(run)
        with anyio.CancelScope() as following:
            self._following.add(following)
            if self._stopping:
                following.cancel()
            try:
                result = await run
            except GPTImageError as exc:
                self._failed(exc)
                return
            for url in result.urls:
                print(url, flush=True)
            if self._out is not None:
                self.failures += await _save(
                    result,
                    self._out,
                    self._request.prompt,
                    self._session.base_url,
                    self._session.transport,
                )

    def _failed(self, exc: GPTImageError) -> None:
        self.failures += 1
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    def print_created(self) -> None:
        lines = [f"  {run.id}  {_state_at_stop(run)}" for run in self.created]
        paid = (
            f"; runs already created (paid for; they may still finish at {self._session.provider}):"
            if lines
            else "; no run was created"
        )
        if self._on_wire:
            paid += f" ({self._on_wire} create(s) were on the wire: their runs may exist too)"
        print("\n".join([f"interrupted{paid}", *lines]), file=sys.stderr, flush=True)


def _state_at_stop(run: Run) -> str:
    """What is known of a run at the stop: its provider's verdict, or that it was still going.

    A run the closing session let go ends locally with ``SessionClosedError``
    ("errored"), which says nothing of its fate at the provider.
    """
    if not run.done() or isinstance(run.error, SessionClosedError):
        return "in flight at the stop"
    return run.status.value


async def _save(result: Result, out: Path, prompt: str, base_url: str, transport: Transport) -> int:
    try:
        paths = await download(
            result,
            out,
            stem=f"{slugify(prompt)}-{result.run_id}",
            base_url=base_url,
            transport=transport,
        )
    except GPTImageError as exc:
        print(f"failed to save {result.run_id}: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"saved {path}", file=sys.stderr)
    return 0


# -- batch -----------------------------------------------------------------------------------


async def _batch(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)
    async with _session(args) as session:
        try:
            prompts = read_prompts(
                args.prompts, aspect_ratio=args.aspect_ratio, quality=args.quality, session=session
            )
        except PromptFileError as exc:
            raise _UsageError(str(exc)) from None
        _check_writable(args.out)
        live = {"auto": None, "live": True, "log": False}[args.progress]
        display = make_display(sys.stderr, live=live)
        async with session:
            batch = Batch(
                session,
                prompts,
                args.out,
                concurrency=args.concurrency,
                download=not args.no_download,
                resubmit_unknown=args.resubmit_unknown,
                # The in-process simulator gets a new port each time: its old runs are gone.
                attach_elsewhere=args.provider == "simulator",
                on_event=display.event,
                gallery=not args.no_gallery,
            )
            notice = batch.endpoint_notice()
            # The in-process simulator's port is new each run: that change is no news.
            if notice is not None and args.provider != "simulator":
                print(f"note: {notice}", file=sys.stderr, flush=True)
            with _signals(batch, display) as interrupted:
                report = await _run_with_display(batch, display, args.out)
    _summary(report, requests=session.stats.requests)
    if not args.no_gallery:
        print(f"gallery: {args.out / GALLERY_NAME}")
    if interrupted:
        p = report.progress
        print(
            f"interrupted: {p.finished} done, {p.in_flight + p.submitting} in flight; "
            "rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED


async def _run_with_display(batch: Batch, display: Display, out: Path) -> BatchReport:
    async def ticker() -> None:
        while True:
            display.tick(batch.progress)
            await asyncio.sleep(display.interval)

    ticking = asyncio.create_task(ticker())
    try:
        report = await batch.run()
    except JournalError as exc:
        # Raised when the journal is opened, before anything is sent.
        raise _UsageError(exc.message) from None
    except OSError as exc:
        raise _Failure(f"cannot write to {out}: {exc.strerror or exc}") from None
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
        # Always: a live display left open would keep the cursor hidden.
        display.close(batch.progress)
    return report


#: What a request leaves unset means this at the provider.
_DEFAULT_QUALITY = "medium"
_DEFAULT_ASPECT_RATIO = "1:1"


def _dry_run(args: argparse.Namespace) -> int:
    """Validate the prompt file and say what a batch would send; send nothing."""
    name = "runbase" if args.provider == "simulator" else args.provider
    if args.provider == "simulator" and args.base_url:
        raise _UsageError("--base-url makes no sense with --provider simulator")
    # The session is never opened: it only validates, so it needs no key.
    session = _make_session(name, api_key="dry-run", base_url=args.base_url)
    try:
        prompts = read_prompts(
            args.prompts, aspect_ratio=args.aspect_ratio, quality=args.quality, session=session
        )
    except PromptFileError as exc:
        raise _UsageError(str(exc)) from None
    qualities = Counter(p.request.quality or _DEFAULT_QUALITY for p in prompts)
    ratios = Counter(p.request.aspect_ratio or _DEFAULT_ASPECT_RATIO for p in prompts)
    provider = get_provider(name)
    where = "the simulator" if args.provider == "simulator" else name
    print(f"dry run: {len(prompts)} prompts would be sent to {where}; nothing was sent")
    print(f"by quality: {_counts(qualities, sorted(QUALITIES))}")
    print(f"by aspect ratio: {_counts(ratios, sorted(ASPECT_RATIOS))}")
    prices = provider.credits_per_image
    if prices is None or args.provider == "simulator":
        print(f"expected cost: {where} publishes no price per image")
    else:
        total = sum(prices[q] * n for q, n in qualities.items())
        each = ", ".join(f"{prices[q]} per {q} image" for q in sorted(prices))
        print(f"expected cost: {total} credits ({each})")
    print(f"prompts already done in {args.out} are skipped when the batch runs for real")
    return EXIT_OK


def _counts(counter: Counter[str], order: list[str]) -> str:
    return ", ".join(f"{key} {counter[key]}" for key in order if counter[key])


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise _UsageError(f"cannot write to {out}: {exc.strerror or exc}") from None


class _Interrupted:
    """Truthy once a signal asked the batch to stop."""

    __slots__ = ("hit",)

    def __init__(self) -> None:
        self.hit = False

    def __bool__(self) -> bool:
        return self.hit


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[_Interrupted]:
    """First Ctrl-C (or SIGTERM): ``stop()``. Second: cancel everything at once."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    interrupted = _Interrupted()

    def on_signal() -> None:
        if interrupted.hit:
            if main_task is not None:
                main_task.cancel()
            return
        interrupted.hit = True
        stop()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not POSIX
            pass
    try:
        yield interrupted
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _signals(batch: Batch, display: Display) -> contextlib.AbstractContextManager[_Interrupted]:
    """First Ctrl-C (or SIGTERM): stop cleanly. Second: cancel everything at once."""

    def stop() -> None:
        display.note(
            "interrupt: stopping; waiting for the creates in flight to be answered "
            "(Ctrl-C again to quit at once)"
        )
        batch.stop()

    return _stop_on_signals(stop)


def _summary(report: BatchReport, *, requests: int) -> None:
    counts = report.counts
    p = report.progress
    total = len(report.entries)
    parts = [f"{counts['succeeded']} succeeded"]
    if report.skipped:
        parts[0] += f" ({report.skipped} already done)"
    parts += [f"{counts[s]} {s}" for s in ("failed", "unknown", "pending") if counts[s]]
    print(f"{total} prompts: {', '.join(parts)} in {format_duration(p.elapsed)}")
    if report.submitted or report.attached:
        print(
            f"this run: {report.submitted} creates sent, {report.attached} earlier runs "
            f"re-attached, {requests} requests in all, {p.rate_limited} rate-limited"
        )
    print(f"manifest: {report.manifest}")
    if report.stop_reason:
        print(f"stopped early: {report.stop_reason}")
    if counts["failed"]:
        print("failed prompts are tried again when you rerun the same command")
    if counts["unknown"]:
        print(
            f"{counts['unknown']} prompt(s) have a create of unknown fate: a run may exist and "
            "be paid for. Check the provider's dashboard, then rerun with --resubmit-unknown "
            "to send them again (at the risk of paying twice)."
        )


# -- simulate --------------------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    from .simulator import serve_forever

    try:
        config = config_from_options(args)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    try:
        serve_forever(args.host, args.port, config)
    except OSError as exc:
        raise _UsageError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return EXIT_OK
