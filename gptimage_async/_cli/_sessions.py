"""The session a command runs on: a provider with the user's key, or the simulator."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from .._batch_types import JOURNAL_NAME
from .._exceptions import ConfigurationError
from .._journal import Journal, JournalError
from .._models import RateLimit
from .._pool import Pool, lane_fingerprint, load_pool_file
from .._providers import get_provider
from .._session import Session
from ._args import DEMO_TIME_SCALE, REDIS_ENV
from ._common import UsageError
from ._spend import JobSpend, earlier_spend

if TYPE_CHECKING:
    from ..simulator import SimulatorConfig

__all__ = [
    "SIMULATOR_KEY",
    "check_endpoint_options",
    "load_pool",
    "make_session",
    "open_session",
    "pool_state_file",
    "state_file",
]

#: Any key with the Runbase prefix is accepted by the simulator.
SIMULATOR_KEY = "sk-simulator"


def check_endpoint_options(args: argparse.Namespace) -> None:
    """Refuse options that do not fit the provider (a real run and a ``--dry-run`` alike).

    ``--pool`` names each lane's provider, key, base URL and rate limit, so it
    takes none of the single-key options; without it ``--provider`` defaults
    to runbase (set on ``args`` here).
    """
    if getattr(args, "pool", None) is not None:
        given = [
            option
            for option, value in (
                ("--provider", args.provider),
                ("--base-url", args.base_url),
                ("--rate-limit", args.rate_limit),
                ("--time-scale", args.time_scale),
            )
            if value is not None
        ]
        if given:
            raise UsageError(
                f"--pool cannot be used with {', '.join(given)}: the pool file names each "
                "lane's provider, key variable, base URL and rate limit"
            )
        return
    if args.provider is None:
        args.provider = "runbase"
    if args.provider == "simulator":
        if args.base_url:
            raise UsageError("--base-url makes no sense with --provider simulator")
    elif args.time_scale is not None:
        raise UsageError("--time-scale applies to --provider simulator only")


@contextlib.asynccontextmanager
async def open_session(args: argparse.Namespace) -> AsyncIterator[Session]:
    """An unopened session per the options (a simulator runs while it lives)."""
    check_endpoint_options(args)
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
    if args.pool is not None:
        pool = load_pool(args.pool)
        if not args.no_state:
            options["state_file"] = pool_state_file(pool)
        yield make_session(
            None, lanes=pool.lanes, routing=pool.routing, spend_cap=job_cap(args, pool), **options
        )
        return
    if args.provider == "simulator":
        if args.base_url:
            raise UsageError("--base-url makes no sense with --provider simulator")
        from ..simulator import Simulator, SimulatorConfig

        config = SimulatorConfig(time_scale=args.time_scale or DEMO_TIME_SCALE)
        # A simulator lives on a new port each time: nothing it taught is worth keeping.
        options["remember"] = False
        async with Simulator(config) as sim:
            session = make_session(
                "runbase",
                api_key=SIMULATOR_KEY,
                base_url=sim.base_url("runbase"),
                rate_limit=args.rate_limit or _simulator_rate(config),
                **options,
            )
            yield session
        return
    if args.time_scale is not None:
        raise UsageError("--time-scale applies to --provider simulator only")
    provider = get_provider(args.provider)
    if not os.environ.get(provider.env_var, "").strip():
        # Not the library's "pass api_key=...": the command line never takes a key.
        hint = _other_key_hint(provider.name)
        raise UsageError(f"no API key for {provider.name}: set {provider.env_var}{hint}")
    if not args.no_state:
        key = os.environ[provider.env_var].strip()
        fingerprint = lane_fingerprint(provider.name, key)
        options["state_file"] = state_file(args.provider, args.base_url, fingerprint)
    yield make_session(args.provider, base_url=args.base_url, rate_limit=args.rate_limit, **options)


def job_cap(args: argparse.Namespace, pool: Pool) -> float | None:
    """What is left of the pool file's ``spend_cap`` for this run of a batch job.

    The cap is the job's (its ``--out`` directory), not one process's: what
    earlier runs into it spent, or may have (``earlier_spend``), comes off it,
    and a note on stderr says so; ``args.job_spend`` keeps both (``JobSpend``)
    for the summary's words. ``UsageError`` when the journal is unreadable.
    """
    out = getattr(args, "out", None)
    if pool.spend_cap is None or out is None or not (out / JOURNAL_NAME).is_file():
        return pool.spend_cap
    try:
        earlier = earlier_spend(Journal.read(out / JOURNAL_NAME), pool)
    except (OSError, JournalError) as exc:
        raise UsageError(f"cannot read the journal in {out}: {exc}") from None
    if not earlier:
        return pool.spend_cap
    left = max(0.0, pool.spend_cap - earlier)
    args.job_spend = JobSpend(pool.spend_cap, earlier)
    print(
        f"spend cap: {pool.spend_cap:g} for the job in {out}; earlier runs into it spent "
        f"{earlier:g} (runs of unknown fate counted as paid): {left:g} left for this run",
        file=sys.stderr,
        flush=True,
    )
    return left


def load_pool(path: Path) -> Pool:
    """The pool file at ``path`` (keys from the environment); ``UsageError`` if it is bad."""
    try:
        return load_pool_file(path)
    except ConfigurationError as exc:
        raise UsageError(exc.message) from None


def _other_key_hint(provider: str) -> str:
    """`` (APIINONE_API_KEY is set: add --provider apiinone)`` when another provider's is set."""
    from .._providers import provider_names  # here: the imports above are kept as they are

    for name in provider_names():
        other = get_provider(name).env_var
        if name != provider and os.environ.get(other, "").strip():
            return f" ({other} is set: add --provider {name})"
    return ""


def pool_state_file(pool: Pool) -> Path:
    """The state file of a ``--pool`` session: one file per lane, named by its key's fingerprint.

    A pool of one lane uses that key's own file (``state_file``); in a pool of
    several, the session makes ``pool.json`` into ``pool.<fingerprint>-<url tag>.json``
    per lane (``_pool.lane_state_file``), so two keys never share a file.
    """
    if len(pool.lanes) == 1:
        lane = pool.lanes[0]
        return state_file(lane.provider, lane.base_url, lane.fingerprint)
    return _cache() / "state" / "pool.json"


def state_file(provider: str, base_url: str | None, key_fingerprint: str | None = None) -> Path:
    """Where the command line keeps what sessions learned: one file per provider, base URL and key.

    ``key_fingerprint`` is the key's ``gi.Lane.fingerprint`` (a keyed hash,
    never the key): two keys never share a file, so a slow rate learned on one
    does not slow a job on another. In the user's cache directory
    (``~/.cache/gptimage-async/state/`` on Linux): losing it costs one cold
    start, nothing else.
    """
    try:
        url = base_url or get_provider(provider).default_base_url
    except ConfigurationError:  # reported when the session is made
        url = base_url or ""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    key = f"-{key_fingerprint}" if key_fingerprint else ""
    return _cache() / "state" / f"{provider}-{digest}{key}.json"


def _cache() -> Path:
    return Path(platformdirs.user_cache_dir("gptimage-async", appauthor=False))


def make_session(provider: str | None, **options: Any) -> Session:
    """A ``Session`` (``provider`` ``None``: a pool's, given ``lanes=``); ``UsageError`` if bad."""
    try:
        return Session(**options) if provider is None else Session(provider, **options)
    except ConfigurationError as exc:
        raise UsageError(exc.message) from None


def _simulator_rate(config: SimulatorConfig) -> RateLimit | None:
    """The simulator's rate limit as the client should believe it (time-scaled)."""
    if config.rate_limit is None:
        return None
    return RateLimit(requests=config.rate_limit, per=config.rate_window * config.time_scale)
