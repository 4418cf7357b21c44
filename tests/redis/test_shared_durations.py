"""Run durations shared through Redis: every process on a key learns from the fleet's runs."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as redis_asyncio

import gptimage_async as gi
from gptimage_async._budget import budget_id
from gptimage_async._budget.protocol import SharedBudget
from gptimage_async._budget.shared_durations import (
    BACKLOG,
    DurationFeed,
    decode,
    encode,
    stream_key,
)
from gptimage_async._durations import DurationModel
from gptimage_async.simulator import Simulator
from gptimage_async.testing import scaled_rate_limit
from tests.helpers import config, observed, warm

from .conftest import RedisServer, client_of

KEY = "sk-durations-secret-456"
BUDGET = budget_id("runbase", KEY)
RUNS = [(0.0, 3.2), (3.0, 3.6), (2.0, 4.1), (4.0, 4.4), (3.5, 5.0), (1.0, 3.9)]


def feed(client: redis_asyncio.Redis, model: DurationModel, **kw: bool) -> DurationFeed:
    shared = SharedBudget(client, 2.0, BUDGET)
    return DurationFeed(lambda: shared, model, **kw)


async def test_each_process_learns_from_the_others_runs_once(redis_server: RedisServer) -> None:
    async with client_of(redis_server.url) as client:
        mine, theirs = DurationModel(), DurationModel()
        a, b = feed(client, mine), feed(client, theirs)
        await a.sync()
        await b.sync()  # both joined an empty stream
        for lo, hi in RUNS:
            mine.observe(lo, hi)
        await a.sync()
        await b.sync()
        assert theirs.ready and theirs.observations() == RUNS
        # Nobody takes its own runs back, nor the same runs twice.
        theirs.observe(2.5, 3.0)
        await a.sync()
        await b.sync()
        await a.sync()
        assert mine.observed == len(RUNS) + 1
        assert theirs.observed == len(RUNS) + 1
        assert (a.sent, a.taken, b.sent, b.taken) == (len(RUNS), 1, 1, len(RUNS))
        # The stream names no key: its name is the budget's HMAC, its fields numbers.
        keys = [k.decode() for k in await client.keys("*")]
        assert keys == [stream_key(BUDGET)]
        assert not any(KEY in k for k in keys)


async def test_a_cold_model_takes_the_fleets_last_runs_a_warm_one_does_not(
    redis_server: RedisServer,
) -> None:
    async with client_of(redis_server.url) as client:
        early = DurationModel()
        first = feed(client, early)
        await first.sync()
        for lo, hi in RUNS:
            early.observe(lo, hi)
        await first.sync()

        cold = DurationModel()
        await feed(client, cold).sync()
        assert cold.ready and cold.observed == len(RUNS)

        warm_model = DurationModel()
        warm_model.restore(RUNS[:4])  # a learned state loaded at open
        await feed(client, warm_model).sync()
        assert warm_model.observed == 4

        fresh = DurationModel()  # remember=False: nothing from before it joined
        joined = feed(client, fresh, backlog=False)
        await joined.sync()
        assert fresh.observed == 0
        early.observe(2.0, 3.0)
        await first.sync()
        await joined.sync()
        assert fresh.observations() == [(2.0, 3.0)]


async def test_after_a_change_of_speed_the_runs_before_it_are_not_sent(
    redis_server: RedisServer,
) -> None:
    async with client_of(redis_server.url) as client:
        model = DurationModel()
        mine = feed(client, model)
        await mine.sync()
        for i in range(100):
            model.observe(3.0 + i / 200, 3.2 + i / 200)
        await mine.sync()
        assert mine.sent == 100
        model.quantile(0.5)  # fitted on all 100
        for _ in range(6):  # runs 3x slower: the detector restarts the model
            model.observe(9.0, 9.6)
        assert model.changes == 1
        await mine.sync()
        assert mine.sent == 100
        model.observe(9.0, 9.5)
        await mine.sync()
        assert mine.sent == 101


def test_an_entry_another_version_wrote_is_skipped() -> None:
    assert decode(encode([(1.0, 2.5), (0.0, 3.0)])) == [(1.0, 2.5), (0.0, 3.0)]
    assert decode(b"1 2 oops 4") == []
    assert decode(b"2 1 1 nan 1 3 5") == [(1.0, 3.0)]  # hi <= lo, nan, a dangling number
    assert decode(None) == []


async def test_redis_away_is_no_error_and_the_feed_catches_up(redis_server: RedisServer) -> None:
    async with client_of(redis_server.url) as client:
        model = DurationModel()
        mine = feed(client, model)
        task = asyncio.ensure_future(mine.run(0.01))
        redis_server.kill()
        model.observe(1.0, 2.0)
        for _ in range(300):
            if mine.failures >= 2:
                break
            await asyncio.sleep(0.02)
        assert mine.failures >= 2 and not task.done()  # failed quietly, tried again
        redis_server.start()
        for _ in range(300):
            if mine.sent:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert mine.sent == 1


async def test_a_session_joining_a_busy_fleet_starts_warm(redis_server: RedisServer) -> None:
    cfg = config()
    async with Simulator(cfg) as sim:
        opts = {
            "api_key": KEY,
            "base_url": sim.base_url("runbase"),
            "rate_limit": scaled_rate_limit(cfg),
            "redis": redis_server.url,
            "remember": False,  # no learned state: what it knows comes from the stream
        }
        async with gi.Session("runbase", **opts) as busy:
            await busy.generate_many([f"a cat {i}" for i in range(6)])
            assert observed(busy) >= 4
            async with gi.Session("runbase", **opts) as late:
                assert not warm(late)
                # It saw no run finish, but the busy one's next ones reach it.
                await busy.generate_many([f"a dog {i}" for i in range(5)])
                for _ in range(200):
                    if warm(late):
                        break
                    await asyncio.sleep(0.01)
                assert warm(late), repr(late.scheduler)
                assert observed(late) <= BACKLOG * 5
