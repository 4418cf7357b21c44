"""Test your own code against the built-in simulator: no key, no network, compressed time.

Anywhere (a script, any test runner)::

    from gptimage_async.testing import simulated_session

    async with simulated_session("runbase") as (sim, session):
        result = await session.generate("a lamp")
        assert sim.stats.creates == 1

Or with no socket at all, on the event loop's clock (a fake clock runs it in
fake time)::

    async with memory_session("runbase") as (sim, session):
        result = await session.generate("a lamp")

With pytest and pytest-asyncio installed, this module is a pytest plugin
(registered on install) that provides two fixtures::

    async def test_my_app(gptimage_session, gptimage_simulator):
        result = await my_app.make_picture(gptimage_session)
        assert gptimage_simulator.stats.duplicates == 0

Configure them with a marker; its keywords are ``SimulatorConfig`` fields,
plus ``provider`` (default ``"runbase"``) and ``variants`` (default
``False``: the simulator answers exactly as the providers' documentation
shows; ``True``: in every undocumented variant too, see
``SimulatorConfig.with_variants``)::

    @pytest.mark.gptimage(provider="apiinone", failure_rate=0.5, variants=True)
    async def test_failures(gptimage_session): ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ._config import DEFAULT_REQUEST_TIMEOUT
from ._exceptions import ConfigurationError
from ._models import RateLimit
from ._providers import ProviderName
from ._session import Session
from .simulator import VARIANTS, Simulator, SimulatorConfig

__all__ = [
    "DEFAULT_TIME_SCALE",
    "TEST_KEYS",
    "memory_session",
    "scaled_rate_limit",
    "simulated_session",
]

#: Tests run 50x faster than real time: 3-10 s runs take 60-200 ms.
DEFAULT_TIME_SCALE = 0.02
#: Keys the simulator accepts by default, one per protocol.
TEST_KEYS: dict[str, str] = {"runbase": "sk-sim-test", "apiinone": "aio_sim_test"}


def scaled_rate_limit(config: SimulatorConfig) -> RateLimit | None:
    """The simulator's rate limit as the client should believe it (time-scaled)."""
    if config.rate_limit is None:
        return None
    return RateLimit(requests=config.rate_limit, per=config.rate_window * config.time_scale)


@contextlib.asynccontextmanager
async def simulated_session(
    provider: ProviderName = "runbase",
    *,
    config: SimulatorConfig | None = None,
    **session_options: Any,
) -> AsyncIterator[tuple[Simulator, Session]]:
    """Start a simulator on a free loopback port and open a ``Session`` against it.

    The session's rate limit belief is the simulator's (time-scaled) unless
    ``rate_limit`` is given; other keywords go to ``Session``. With
    ``redis="redis://..."`` the session shares the key's budget through that
    Redis, so several processes can be tested against one simulator.
    """
    config = config or SimulatorConfig(time_scale=DEFAULT_TIME_SCALE)
    session_options.setdefault("rate_limit", scaled_rate_limit(config))
    session_options.setdefault("api_key", TEST_KEYS[provider])
    async with (
        Simulator(config) as sim,
        Session(provider, base_url=sim.base_url(provider), **session_options) as session,
    ):
        yield sim, session


@contextlib.asynccontextmanager
async def memory_session(
    provider: ProviderName = "runbase",
    *,
    config: SimulatorConfig | None = None,
    simulator: Simulator | None = None,
    **session_options: Any,
) -> AsyncIterator[tuple[Simulator, Session]]:
    """A simulator in memory and a ``Session`` on it: no socket, the event loop's clock.

    Every request (creates, polls, image downloads) is handed to the
    simulator's request pipeline through a ``MemoryTransport``, so a test
    that patches the loop's clock (a fake clock) runs it in fake time, with
    no sleep. The simulator is never started (it binds no port); its API
    lives at ``http://localhost`` (nothing is sent there). Socket faults map as the aiohttp
    transport reports them: a reset is a ``SendError`` that may have been
    received. Yields ``(simulator, session)``, the session open.

    ``config`` (``SimulatorConfig | None``, default ``None``: the default
    config at ``DEFAULT_TIME_SCALE``) configures a simulator made here, on the
    running loop's clock; this context closes it at exit (which ends any
    ``Simulator.until`` still waiting on it). ``simulator`` (``Simulator |
    None``, default ``None``) is one the caller already holds, to configure
    first or to share between sessions (one after another, or at once): it
    is used as it is, on its own clock (build it with ``clock=lambda:
    loop.time()`` for fake time), and never closed here: its owner closes it
    (``await simulator.close()``). Giving both raises ``ConfigurationError``.
    The session's rate-limit belief is the simulator's (time-scaled) unless
    ``rate_limit`` is given; its key is ``TEST_KEYS[provider]`` unless
    ``api_key`` is given; other keywords go to ``Session``, which this
    context closes at exit (it owns the transport and closes it).
    """
    from ._transport._memory import MEMORY_ORIGIN, MemoryTransport
    from .simulator._app import BASE_PATHS

    if simulator is not None and config is not None:
        raise ConfigurationError("memory_session() takes config= or simulator=, not both")
    loop = asyncio.get_running_loop()
    # A patched (fake) loop clock too: the lambda reads loop.time as it is at each call.
    sim = simulator or Simulator(
        config or SimulatorConfig(time_scale=DEFAULT_TIME_SCALE), clock=lambda: loop.time()
    )
    session_options.setdefault("rate_limit", scaled_rate_limit(sim.config))
    session_options.setdefault("api_key", TEST_KEYS[provider])
    base_url = MEMORY_ORIGIN + BASE_PATHS[provider]
    transport = MemoryTransport(
        sim,
        base_url,
        session_options["api_key"],
        timeout=session_options.get("request_timeout", DEFAULT_REQUEST_TIMEOUT),
    )
    try:
        async with Session(
            provider, base_url=base_url, transport=transport, **session_options
        ) as session:
            yield sim, session
    finally:
        if simulator is None:  # ours: it ends any Simulator.until still waiting on it
            await sim.close()


def _marker_options(request: Any) -> tuple[ProviderName, dict[str, Any]]:
    marker = request.node.get_closest_marker("gptimage")
    options = dict(marker.kwargs) if marker is not None else {}
    provider = options.pop("provider", "runbase")
    if options.pop("variants", False):
        options = {**VARIANTS, **options}
    options.setdefault("time_scale", DEFAULT_TIME_SCALE)
    return provider, options


try:  # The fixtures need pytest-asyncio; without it the context manager above still works.
    import pytest
    import pytest_asyncio
except ImportError:  # pragma: no cover
    pass
else:

    def pytest_configure(config: Any) -> None:
        config.addinivalue_line(
            "markers",
            "gptimage(provider='runbase', variants=False, **simulator_config): "
            "configure the gptimage fixtures",
        )

    @pytest_asyncio.fixture
    async def gptimage_simulator(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
        """A running simulator (configured by the ``gptimage`` marker)."""
        _, options = _marker_options(request)
        async with Simulator(SimulatorConfig(**options)) as sim:
            yield sim

    @pytest_asyncio.fixture
    async def gptimage_session(
        request: pytest.FixtureRequest, gptimage_simulator: Simulator
    ) -> AsyncIterator[Session]:
        """An open ``Session`` pointed at ``gptimage_simulator``."""
        provider, _ = _marker_options(request)
        async with Session(
            provider,
            api_key=TEST_KEYS[provider],
            base_url=gptimage_simulator.base_url(provider),
            rate_limit=scaled_rate_limit(gptimage_simulator.config),
        ) as session:
            yield session
