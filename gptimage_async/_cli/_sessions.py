"""The session a command runs on: a provider with the user's key, or the simulator."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from .._exceptions import ConfigurationError
from .._models import RateLimit
from .._providers import get_provider
from .._session import Session
from ._args import DEMO_TIME_SCALE, REDIS_ENV
from ._common import UsageError

if TYPE_CHECKING:
    from ..simulator import SimulatorConfig

__all__ = ["SIMULATOR_KEY", "make_session", "open_session", "state_file"]

#: Any key with the Runbase prefix is accepted by the simulator.
SIMULATOR_KEY = "sk-simulator"


@contextlib.asynccontextmanager
async def open_session(args: argparse.Namespace) -> AsyncIterator[Session]:
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
        raise UsageError(f"no API key for {provider.name}: set {provider.env_var}")
    if not args.no_state:
        options["state_file"] = state_file(args.provider, args.base_url)
    yield make_session(args.provider, base_url=args.base_url, rate_limit=args.rate_limit, **options)


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


def make_session(provider: str, **options: Any) -> Session:
    try:
        return Session(provider, **options)
    except ConfigurationError as exc:
        raise UsageError(exc.message) from None


def _simulator_rate(config: SimulatorConfig) -> RateLimit | None:
    """The simulator's rate limit as the client should believe it (time-scaled)."""
    if config.rate_limit is None:
        return None
    return RateLimit(requests=config.rate_limit, per=config.rate_window * config.time_scale)
