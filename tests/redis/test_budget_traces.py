"""The local and the Redis-shared limiter learn the same beliefs from the same 429 traces.

The local limiter runs on the fake clock; the shared one against a real
redis-server in real time (its timeline is on Redis's clock), with a short
window. Both go through ``tests.budget_traces``: a sliding-window server with
a genuine lower limit, or a short storm of refusals.
"""

from __future__ import annotations

import asyncio

import pytest

import gptimage_async as gi
from gptimage_async._budget import AdaptiveRate, RateLimiter
from gptimage_async._budget.shared import SharedLimiter
from gptimage_async._budget.timeline import script_source
from tests._clock import fake_loop_clock
from tests.budget_traces import TraceServer, drive

from .conftest import RedisServer

KEY = "sk-trace-test"
WINDOW = 0.5
LIMIT = 20  # per window: 40/s
TRUE_RATE = LIMIT / WINDOW


def scenario(kind: str, origin: float) -> tuple[gi.RateLimit, TraceServer, float]:
    """(starting belief, server, end) of a trace, with times from ``origin``."""
    if kind == "lower":  # believes 80/s, the key allows 40/s
        server = TraceServer(LIMIT, WINDOW)
        return gi.RateLimit(2 * LIMIT, WINDOW), server, origin + 6 * WINDOW
    # A storm of 1.2 windows while the belief is right; then 3 windows.
    server = TraceServer(LIMIT, WINDOW, retry_after=0.1)
    server.storms.append((origin + 2 * WINDOW, origin + 3.2 * WINDOW))
    return gi.RateLimit(LIMIT, WINDOW), server, origin + 6.2 * WINDOW


def local_belief(kind: str) -> tuple[AdaptiveRate, TraceServer]:
    async def main() -> tuple[AdaptiveRate, TraceServer]:
        with fake_loop_clock() as clock:
            belief, server, end = scenario(kind, clock.now)
            limiter = RateLimiter(belief)
            await clock.run(drive(limiter, server, end, senders=2))
            return limiter.adaptive, server

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["lower", "storm"])
async def test_local_and_shared_learn_the_same_belief(redis_server: RedisServer, kind: str) -> None:
    local, local_server = await asyncio.to_thread(local_belief, kind)
    belief, server, end = scenario(kind, asyncio.get_running_loop().time())
    limiter = SharedLimiter(belief, provider="runbase", api_key=KEY, redis=redis_server.url)
    await limiter.start()
    try:
        await drive(limiter, server, end, senders=2)
        await asyncio.sleep(0.05)  # the last report reaches Redis
        shared = limiter.fleet_belief
    finally:
        await limiter.aclose()
    assert not limiter.fallback
    # Real time moves a send across a window's edge now and then: one request in 20.
    assert shared.rate == pytest.approx(local.rate, rel=0.12), (shared, local)
    assert (shared.cuts > 0) == (local.cuts > 0), (shared, local)
    if kind == "lower":
        assert max(shared.rate, local.rate) <= 1.1 * TRUE_RATE
    else:
        # Issue 20 item 9: a storm is a pause, for one process and for the fleet.
        assert local.rate >= 0.9 * TRUE_RATE  # the fake clock: exact
        assert shared.rate >= 0.9 * TRUE_RATE, shared
        assert server.refused and local_server.refused


async def test_a_fleet_comes_back_from_a_storm(redis_server: RedisServer) -> None:
    # Three members of the fleet, one key allowing 40/s; the provider refuses
    # everything for 1.2 windows. Within 3 windows of the end, every member
    # believes at least 90% of the limit (issue 20 item 9), and the fleet sends
    # near it (a jitter 429 at the limit costs its Retry-After).
    origin = asyncio.get_running_loop().time()
    belief, server, end = scenario("storm", origin)
    members = [
        SharedLimiter(belief, provider="runbase", api_key=KEY, redis=redis_server.url)
        for _ in range(3)
    ]
    for member in members:
        await member.start()
    try:
        await asyncio.gather(*(drive(m, server, end, senders=2) for m in members))
        rates = [m.fleet_belief.rate for m in members]
    finally:
        for member in members:
            await member.aclose()
    assert len(server.refused) >= 3
    assert min(rates) >= 0.9 * TRUE_RATE, rates
    assert server.accepted_between(end - 2 * WINDOW, end) >= 0.7 * 2 * LIMIT


def test_the_lua_scripts_are_package_data() -> None:
    # Loaded through importlib.resources, as an installed wheel would: the
    # hatch wheel target takes every file under gptimage_async/, .lua included.
    for name in ("admit", "pause", "beat", "leave", "publish"):
        assert "redis.call" in script_source(name) or name == "leave"
    assert "TIME" in script_source("admit")
