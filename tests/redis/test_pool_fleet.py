"""A lane closed by one session is closed for every session on its key (``redis=``),
until the fleet's word of it expires.

The real simulator over HTTP on 127.0.0.1 and a real ``redis-server``.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis

import gptimage_async as gi
from gptimage_async._budget import budget_id
from gptimage_async._exceptions import status_error
from gptimage_async._fleet_closure import FleetClosure
from gptimage_async._pool import CLOSED_TTL, LaneHealth, LaneState
from gptimage_async.simulator import KeyConfig, Simulator
from tests.helpers import config as sim_config
from tests.redis.conftest import RedisServer


def lanes(sim: Simulator) -> list[gi.Lane]:
    window = sim.config.scaled(sim.config.rate_window)
    return [
        gi.Lane(
            "runbase",
            key,
            base_url=sim.base_url("runbase"),
            rate_limit=gi.RateLimit(20, window),
        )
        for key in ("sk-poor", "sk-rich")
    ]


async def test_a_key_closed_in_one_session_is_closed_in_the_next(
    redis_server: RedisServer,
) -> None:
    keys = {"sk-poor": KeyConfig(credits=10), "sk-rich": KeyConfig()}
    options: dict[str, Any] = {"redis": redis_server.url, "remember": False}
    async with Simulator(sim_config(keys=keys)) as sim:
        async with gi.Session(lanes=lanes(sim), **options) as first:
            for i in range(4):  # one at a time: the poor key gets asked until it refuses
                await first.generate(f"first {i}")
        refused = sim.stats.key("sk-poor").status_counts[402]
        asked = sim.stats.key("sk-poor").create_requests
        assert refused == 1 and sim.stats.key("sk-poor").creates == 1

        async with gi.Session(lanes=lanes(sim), **options) as second:
            results = await second.generate_many([f"second {i}" for i in range(4)])
    assert all(result.urls for result in results)
    # The second session never asked the closed key: Redis told it.
    assert sim.stats.key("sk-poor").create_requests == asked
    assert sim.stats.key("sk-rich").creates == 7
    client = aioredis.from_url(redis_server.url)
    try:
        names = [name.decode() async for name in client.scan_iter("*closed*")]
    finally:
        await client.aclose()
    assert len(names) == 1 and "sk-" not in names[0]


async def test_the_fleets_word_expires_and_a_lane_closed_by_it_with_it(
    redis_server: RedisServer,
) -> None:
    # A reader closes its lane only until the word expires in Redis (CLOSED_TTL,
    # as a lane closed without Redis): a key topped up is tried again after it.
    budget = budget_id("runbase", "sk-fleet-expiry")
    now = [1000.0]  # the reader's clock (seconds), moved by hand: no sleeping
    client = aioredis.from_url(redis_server.url)
    try:
        writer = FleetClosure(client, budget, timeout=2.0)
        reader = FleetClosure(client, budget, timeout=2.0, clock=lambda: now[0])
        await reader.refresh()
        assert reader.cause is None and reader.until == -math.inf
        await writer.publish(status_error(402, "insufficient balance", code="no_credits"))
        await reader.refresh()
        cause = reader.cause
        assert isinstance(cause, gi.InsufficientCreditsError) and cause.code == "no_credits"
        assert CLOSED_TTL - 5 <= reader.until - now[0] <= CLOSED_TTL  # Redis's own PTTL
        name = writer.key
        assert "sk-fleet-expiry" not in name

        # The word's life in Redis is what counts: shortened there, shorter here.
        await client.pexpire(name, 20_000)
        await reader.refresh()
        assert 15 <= reader.until - now[0] <= 20
        health = LaneHealth()
        health.close(cause, now[0], until=reader.until)
        now[0] = reader.until
        assert reader.cause is None  # expired without asking Redis
        assert health.state(now[0]) is LaneState.OPEN

        # Gone from Redis (expired): the next read says so.
        await writer.publish(status_error(402, "insufficient balance"))
        await reader.refresh()
        assert reader.cause is not None
        await client.delete(name)
        await reader.refresh()
        assert reader.cause is None
    finally:
        await client.aclose()
