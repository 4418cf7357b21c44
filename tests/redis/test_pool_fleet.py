"""A lane closed by one session is closed for every session on its key (``redis=``).

The real simulator over HTTP on 127.0.0.1 and a real ``redis-server``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

import gptimage_async as gi
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
