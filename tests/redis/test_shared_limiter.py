"""The shared limiter against a real Redis, in one process: names, secrets, options, order."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

import gptimage_async as gi
from gptimage_async._budget import (
    PRIORITY_CREATE,
    PRIORITY_LAST_CREATE,
    PRIORITY_POLL,
    budget_id,
    redact_url,
)
from gptimage_async._budget.shared import SharedLimiter
from gptimage_async._budget.timeline import Timeline
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import simulated_session

from .conftest import RedisServer

KEY = "sk-very-secret-key-123"
BELIEF = gi.RateLimit(requests=20, per=1.0, ceiling=True)


def limiter(url: str, **kwargs: object) -> SharedLimiter:
    return SharedLimiter(BELIEF, provider="runbase", api_key=KEY, redis=url, **kwargs)  # type: ignore[arg-type]


async def test_keys_name_a_keyed_hash_in_one_cluster_slot(redis_server: RedisServer) -> None:
    lim = limiter(redis_server.url)
    await lim.start()
    try:
        await lim.acquire()
    finally:
        await lim.aclose()
    client = redis_asyncio.Redis.from_url(redis_server.url)
    try:
        names = [k.decode() for k in await client.keys("*")]
        values = [await client.dump(k) for k in names]
    finally:
        await client.aclose()
    tag = budget_id("runbase", KEY)
    assert names
    assert all(name.startswith(f"gptimage:{{{tag}}}:") for name in names)
    assert not any(
        KEY in name or KEY.encode() in (v or b"") for name, v in zip(names, values, strict=True)
    )
    # Another provider or key is another budget.
    assert budget_id("apiinone", KEY) != tag != budget_id("runbase", KEY + "x")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "rediss://default:hunter2@cache.example:6380/0",
            "rediss://default:***@cache.example:6380/0",
        ),
        # redis-py also reads a password from the query string.
        (
            "redis://cache.example:6379/0?password=hunter2",
            "redis://cache.example:6379/0?password=***",
        ),
        ("redis://:hunter2@h/0?password=hunter2&db=1", "redis://:***@h/0?password=***&db=1"),
        ("redis://h/0?auth_token=hunter2", "redis://h/0?auth_token=***"),
    ],
)
def test_the_url_password_never_shows(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    lim = limiter(url)
    assert "hunter2" not in repr(lim)
    assert KEY not in repr(lim)
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379", "redis://:hunter2@127.0.0.1:99999/0", "redis://[::1", "6379"],
)
def test_a_bad_url_is_refused_before_anything_opens(url: str) -> None:
    with pytest.raises(gi.ConfigurationError) as info:
        gi.Session("runbase", api_key=KEY, redis=url)
    assert "hunter2" not in str(info.value)


async def test_a_session_that_cannot_open_releases_what_it_opened(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever fails while opening (here the shared limiter's start), the HTTP
    # client opened before it is closed again, and the session is not left open.
    async def refuse(self: SharedLimiter) -> None:
        raise RuntimeError("cannot start")

    monkeypatch.setattr(SharedLimiter, "start", refuse)
    session = gi.Session("runbase", api_key=KEY, redis=redis_server.url)
    with pytest.raises(RuntimeError, match="cannot start"):
        async with session:
            pass
    assert session.closed
    assert session.transport.closed


def test_bad_options_are_refused_early() -> None:
    with pytest.raises(gi.ConfigurationError, match="redis://"):
        gi.Session("runbase", api_key=KEY, redis="http://127.0.0.1:6379")
    with pytest.raises(gi.ConfigurationError, match="Redis instance"):
        gi.Session("runbase", api_key=KEY, redis=42)  # type: ignore[arg-type]


def test_a_missing_redis_package_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['redis'] = None; sys.modules['redis.asyncio'] = None\n"
        "import gptimage_async as gi\n"
        "try:\n"
        "    gi.Session('runbase', api_key='sk-x', redis='redis://127.0.0.1:1/0')\n"
        "except gi.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "gptimage-async[redis]" in out.stdout


def test_without_redis_the_package_is_never_imported() -> None:
    code = (
        "import asyncio, sys\n"
        "from gptimage_async.testing import simulated_session\n"
        "async def main():\n"
        "    async with simulated_session('runbase') as (sim, s):\n"
        "        await s.generate('a lamp')\n"
        "asyncio.run(main())\n"
        "print('redis' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_simulated_session_shares_through_redis(redis_server: RedisServer) -> None:
    async with simulated_session("runbase", redis=redis_server.url) as (sim, session):
        assert session.limiter.shared
        results = await session.generate_many([f"p{i}" for i in range(10)])
        assert len(results) == 10
        assert sim.stats.duplicates == 0


async def test_a_client_instance_is_used_and_left_open(redis_server: RedisServer) -> None:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    try:
        async with simulated_session("runbase", redis=client) as (_, session):
            await session.generate("a lamp")
        assert await client.ping()
    finally:
        await client.aclose()


async def test_polls_of_one_process_go_before_creates_of_another(
    redis_server: RedisServer,
) -> None:
    # Two limiters are two members of the fleet, as two processes would be.
    busy, light = limiter(redis_server.url), limiter(redis_server.url)
    await busy.start()
    await light.start()
    order: list[str] = []

    async def take(lim: SharedLimiter, priority: int, tag: str) -> None:
        await lim.acquire(priority)
        order.append(tag)

    try:
        creates = [asyncio.ensure_future(take(busy, PRIORITY_CREATE, "c")) for _ in range(12)]
        await asyncio.sleep(0.12)  # a couple of creates out, the rest queued
        polls = [asyncio.ensure_future(take(light, PRIORITY_POLL, "p")) for _ in range(4)]
        await asyncio.gather(*creates, *polls)
    finally:
        await busy.aclose()
        await light.aclose()
    first_poll = order.index("p")
    # Once the polls are queued, at most the create already booked goes before them.
    assert order[first_poll : first_poll + 5].count("p") >= 4, order
    assert order[-1] == "c"


async def test_a_jobs_last_creates_go_before_its_own_polls(redis_server: RedisServer) -> None:
    lim = limiter(redis_server.url)
    await lim.start()
    order: list[str] = []

    async def take(priority: int, tag: str) -> None:
        await lim.acquire(priority)
        order.append(tag)

    try:
        first = [asyncio.ensure_future(take(PRIORITY_CREATE, "x")) for _ in range(3)]
        await asyncio.sleep(0.02)  # the first out, the others queued
        creates = [asyncio.ensure_future(take(PRIORITY_CREATE, "c")) for _ in range(3)]
        polls = [asyncio.ensure_future(take(PRIORITY_POLL, "p")) for _ in range(3)]
        await asyncio.sleep(0)
        assert lim.promote_creates() == 5  # the two "x" and three "c" still waiting
        last = asyncio.ensure_future(take(PRIORITY_LAST_CREATE, "last"))
        await asyncio.gather(*first, *creates, *polls, last)
    finally:
        await lim.aclose()
    # At most the head already booking its slot goes first; then the creates in
    # order, the last one, and the polls.
    assert order[-4:] == ["last", "p", "p", "p"], order


async def test_two_sessions_in_their_tails_do_not_hold_each_other(
    redis_server: RedisServer,
) -> None:
    # Each has its last creates ahead of its own polls, so each reports polls
    # waiting. Were the last creates creates to Redis, each session would wait
    # for the other's polls, and neither's polls would ever be asked for.
    config = SimulatorConfig(time_scale=0.05, seed=7, rate_limit=20, count_rejected=True)
    belief = gi.RateLimit(20, 0.5, ceiling=True)
    async with Simulator(config) as sim:
        sessions = [
            gi.Session(
                "runbase",
                api_key=KEY,
                base_url=sim.base_url("runbase"),
                rate_limit=belief,
                redis=redis_server.url,
            )
            for _ in range(2)
        ]
        async with sessions[0], sessions[1]:

            async def job(session: gi.Session) -> None:
                runs = await asyncio.gather(
                    *(session.submit(f"lamp {i}", ahead_of_polls=i >= 5) for i in range(15))
                )
                await asyncio.gather(*runs)

            async with asyncio.timeout(20.0):  # 60 requests at 40 per second
                await asyncio.gather(*(job(s) for s in sessions))
        assert sim.stats.creates == 30


async def test_redis_away_at_start_falls_back_and_warns_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.stop()
    lim = limiter(redis_server.url.replace("redis://", "redis://user:hunter2@"), timeout=0.1)
    caplog.set_level(logging.INFO, logger="gptimage_async")
    await lim.start()
    try:
        assert lim.fallback
        for _ in range(3):
            await lim.acquire()
        await asyncio.sleep(0.3)  # a few probes fail meanwhile
        assert lim.granted == 0  # all local
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "hunter2" not in caplog.text
        assert KEY not in caplog.text
    finally:
        await lim.aclose()


async def test_redis_back_is_rejoined(redis_server: RedisServer) -> None:
    redis_server.stop()
    lim = limiter(redis_server.url, timeout=0.1)
    await lim.start()
    try:
        assert lim.fallback
        await lim.acquire()
        redis_server.start()
        for _ in range(250):
            if not lim.fallback:
                break
            await asyncio.sleep(0.02)
        await lim.acquire()
        assert lim.granted == 1  # from the shared timeline again
    finally:
        await lim.aclose()


async def test_app_integrations_take_the_redis_option(redis_server: RedisServer) -> None:
    from gptimage_async.integrations._common import app_session
    from gptimage_async.simulator import Simulator, SimulatorConfig

    async with (
        Simulator(SimulatorConfig(time_scale=0.01)) as sim,
        app_session(
            "runbase", api_key="sk-app", base_url=sim.base_url("runbase"), redis=redis_server.url
        ) as session,
    ):
        assert session.limiter.shared
        await session.generate("a lamp")


async def test_a_cancel_swallowed_by_a_redis_command_still_closes_the_limiter(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py may finish a command it was cancelled in and return normally: the
    # cancel is then gone, and a queue that waited again would wait for good,
    # and aclose() (a session's exit) with it. Found as a benchmark worker that
    # never exited.
    original = Timeline.admit
    swallowed: list[bool] = []

    async def admit_swallowing_a_cancel(self: Timeline, *args: Any, **kwargs: Any) -> Any:
        try:
            await asyncio.sleep(0.2)  # the close comes while the command is on its way
        except asyncio.CancelledError:
            swallowed.append(True)  # what redis-py can do: carry on, return the answer
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Timeline, "admit", admit_swallowing_a_cancel)
    lim = limiter(redis_server.url)
    await lim.start()
    asker = asyncio.ensure_future(lim.acquire())
    await asyncio.sleep(0.05)  # the queue is inside admit
    closing = asyncio.ensure_future(lim.aclose())
    done, _ = await asyncio.wait({closing}, timeout=10)
    asker.cancel()
    await asyncio.gather(asker, return_exceptions=True)
    assert swallowed == [True]
    assert closing in done, "aclose() hung after a swallowed cancel"
    closing.result()


async def test_a_spare_slot_asked_for_waits_for_the_caller_to_look_again(
    redis_server: RedisServer,
) -> None:
    # try_acquire asks Redis in the background and is refused meanwhile; the poll
    # scheduler then looks again an interval after the next free slot. The slot
    # leased for it must still be there, or every ask lapses and costs a slot.
    lim = limiter(redis_server.url)
    await lim.start()
    try:
        loop = asyncio.get_running_loop()
        for _ in range(3):
            assert not lim.try_acquire(speculative=True)
            again = max(lim.next_free(), loop.time()) + lim.interval
            await asyncio.sleep(again - loop.time())
            assert lim.try_acquire(speculative=True)
        assert lim.granted == 3
    finally:
        await lim.aclose()
