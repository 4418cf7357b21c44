"""The fleet's word of a closed lane, as the log says it (a real ``redis-server``).

The real simulator over HTTP on 127.0.0.1; the word is written by one
session and read by the next, through Redis.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async.simulator import KeyConfig, Simulator
from tests.helpers import config as sim_config
from tests.redis.conftest import RedisServer


def _lanes(sim: Simulator) -> list[gi.Lane]:
    window = sim.config.scaled(sim.config.rate_window)
    return [
        gi.Lane("runbase", key, base_url=sim.base_url("runbase"), label=key[3:],
                rate_limit=gi.RateLimit(20, window))
        for key in ("sk-broke", "sk-paid")
    ]  # fmt: skip


async def test_a_lane_closed_by_the_fleet_is_said_once_in_the_log(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    keys = {"sk-broke": KeyConfig(credits=0), "sk-paid": KeyConfig()}
    options: dict[str, Any] = {"redis": redis_server.url, "remember": False}
    async with Simulator(sim_config(keys=keys)) as sim:
        async with gi.Session(lanes=_lanes(sim), **options) as first:
            await first.generate("told 402")  # the broke key refuses; the paid one makes it
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gptimage_async"):
            async with gi.Session(lanes=_lanes(sim), **options) as second:
                await second.generate_many([f"p{i}" for i in range(3)])
    said = [r.getMessage() for r in caplog.records if "closed for new creates" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("lane broke is closed for new creates: 402 ")
    assert said[0].count("another process") == 1  # once, not "told ... (told so)"
    assert "shared by Redis" in said[0] and "sk-broke" not in said[0]
    assert sim.stats.key("sk-broke").create_requests == 1  # the second session never asked
