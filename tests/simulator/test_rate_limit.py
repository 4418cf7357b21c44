"""The simulator's rate limit: what it counts, its 429s and their Retry-After."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
import pytest

from gptimage_async.simulator import Simulator, SimulatorConfig

from .._clock import FakeClock
from .wire import (
    RB_KEY,
    ManualClock,
    aio_create,
    auth,
    make,
    rb_create,
    rb_get,
    request,
)

# -- rate limiting -----------------------------------------------------------------


@pytest.mark.parametrize("count_rejected", [False, True])
async def test_hammering_client_with_count_rejected(
    fake_clock: FakeClock, count_rejected: bool
) -> None:
    # 5 requests per 1 s window; the client knocks every 20 ms for 1.2 windows.
    # The simulator's own pipeline on the fake loop clock: the knocks land exactly
    # where they are meant to, and the windows cost no wall time.
    loop = asyncio.get_running_loop()
    config = SimulatorConfig(
        rate_limit=5, rate_window=10.0, time_scale=0.1, seed=1234, count_rejected=count_rejected
    )
    sim = Simulator(config, clock=lambda: loop.time())

    async def knock() -> int:
        return (await sim.respond("GET", "/runbase/api/v1/runs/run_hammer", auth(RB_KEY))).status

    statuses = []
    for _ in range(60):  # 1.2 s
        statuses.append(await knock())
        await fake_clock.advance(0.02)
    admitted = sum(1 for s in statuses if s != 429)
    if count_rejected:
        # The rejected knocks keep the window full: locked out after the first 5.
        assert admitted == 5
        assert all(s == 429 for s in statuses[5:])
    else:
        assert admitted == 10  # 5 in the first window, 5 as it slides on
    assert sim.stats.rate_limited == len(statuses) - admitted
    # Once the client stops for a whole window it gets back in either way.
    await fake_clock.advance(1.05)
    assert await knock() == 404


async def test_rate_limit_counts_posts_and_gets_per_key(session: aiohttp.ClientSession) -> None:
    async with make(rate_limit=3, rate_window=10.0, time_scale=1.0) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        assert (await rb_get(session, sim, run_id)).status == 200
        assert (await rb_get(session, sim, run_id)).status == 200
        answer = await rb_create(session, sim)
        assert answer.status == 429
        assert answer.json()["error"]["code"] == "RATE_LIMITED"
        assert (await rb_get(session, sim, run_id)).status == 429
        # Per key: another key, and API in One's key, are unaffected.
        assert (await rb_create(session, sim, key="sk-other")).status == 200
        assert (await aio_create(session, sim)).status == 200
        assert sim.stats.creates == 3
        assert sim.stats.rate_limited == 2
        assert sim.stats.status_counts[429] == 2
        # Unauthenticated requests are refused before the limiter sees them.
        url = sim.base_url("runbase") + "/runs"
        assert (await request(session, "POST", url, json={})).status == 401

        sim.set_rate_limit(None)
        assert (await rb_get(session, sim, run_id)).status == 200
        sim.set_rate_limit(100, 1.0)
        assert sim.config.rate_limit == 100
        assert sim.config.rate_window == 1.0
        assert (await rb_get(session, sim, run_id)).status == 200


async def test_apiinone_rate_limit_is_a_real_429(session: aiohttp.ClientSession) -> None:
    config = {"apiinone_shape": "envelope", "apiinone_envelope_error_rate": 1.0}
    async with make(rate_limit=1, rate_window=10.0, time_scale=1.0, **config) as sim:
        assert (await aio_create(session, sim)).status == 200
        answer = await aio_create(session, sim)
        assert answer.status == 429
        assert answer.json() == {
            "error": {"code": 429, "message": "Rate limit exceeded.", "type": "rate_limit"}
        }
        assert "Retry-After" in answer.headers


async def test_retry_after_none(session: aiohttp.ClientSession) -> None:
    async with make(rate_limit=1, retry_after="none", time_scale=1.0) as sim:
        await rb_get(session, sim, "run_x")
        answer = await rb_get(session, sim, "run_x")
        assert answer.status == 429
        assert "Retry-After" not in answer.headers


async def test_retry_after_seconds_is_exact_and_honest(session: aiohttp.ClientSession) -> None:
    # Window: 10 provider seconds * 0.03 = 0.3 s.
    clock = ManualClock()
    async with make(rate_limit=2, rate_window=10.0, time_scale=0.03, clock=clock) as sim:
        await rb_get(session, sim, "run_x")
        clock.advance(0.05)
        await rb_get(session, sim, "run_x")
        answer = await rb_get(session, sim, "run_x")
        assert answer.status == 429
        value = answer.headers["Retry-After"]
        assert re.fullmatch(r"\d+(\.\d{1,3})?", value), value
        wait = float(value)
        # The oldest request frees its slot 0.3 s after it was made (~0.05 s ago).
        assert 0.001 <= wait <= 0.3
        assert wait > 0.15
        clock.advance(wait + 0.001)
        assert (await rb_get(session, sim, "run_x")).status == 404


async def test_retry_after_http_date(session: aiohttp.ClientSession) -> None:
    async with make(rate_limit=1, retry_after="http-date", time_scale=0.05) as sim:
        await rb_get(session, sim, "run_x")
        before = datetime.now(UTC)
        answer = await rb_get(session, sim, "run_x")
        assert answer.status == 429
        value = answer.headers["Retry-After"]
        assert re.fullmatch(
            r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", value
        )
        moment = parsedate_to_datetime(value)
        # Rounded up to a whole second: never earlier than the real 0.5 s wait.
        assert moment.timestamp() >= before.timestamp() + 0.5 - 0.05
        assert moment.timestamp() <= math.ceil(before.timestamp() + 0.5) + 1
