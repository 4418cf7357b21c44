"""What a session learned is kept in the shared Redis: the next session on the key starts warm."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as redis_asyncio

import gptimage_async as gi
from gptimage_async._budget import base_url_id, budget_id
from gptimage_async._state import (
    MAX_AGE,
    FileStateStore,
    LearnedState,
    RedisStateStore,
)
from gptimage_async.simulator import Simulator
from gptimage_async.testing import scaled_rate_limit
from tests.helpers import config, observed, warm

from .conftest import RedisServer

KEY = "sk-very-secret-key-123"
URL = "https://runbase.net/api/v1?token=sekrit"


def state(**changes: Any) -> LearnedState:
    base = LearnedState(
        provider="runbase",
        base_url=URL,
        saved_at=time.time(),
        durations=[(0.0, 9.6), (9.6, 10.4), (3.0, 3.2), (2.0, 4.0)],
    )
    return msgspec.structs.replace(base, **changes)


async def everything(url: str) -> dict[str, bytes]:
    client = redis_asyncio.Redis.from_url(url)
    try:
        return {k.decode(): (await client.dump(k)) or b"" for k in await client.keys("*")}
    finally:
        await client.aclose()


async def test_a_state_saved_in_redis_loads_and_names_no_secret(
    redis_server: RedisServer,
) -> None:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    try:
        store = RedisStateStore(client, budget=budget_id("runbase", KEY))
        saved = state()
        await store.save(saved)
        loaded = await store.load("runbase", URL)
        assert loaded is not None
        assert loaded.durations == saved.durations
        assert loaded.base_url == URL
        assert loaded.saved_at == pytest.approx(saved.saved_at, abs=5.0)
        # Another base URL or provider is another state.
        assert await store.load("runbase", "https://runbase.net/api/v2") is None
        assert await store.load("apiinone", URL) is None
        ttl = await client.pttl(store.key("runbase", URL))
        assert MAX_AGE * 1000 - 60_000 < ttl <= MAX_AGE * 1000
    finally:
        await client.aclose()
    stored = await everything(redis_server.url)
    assert list(stored) == [store.key("runbase", URL)]
    name, value = next(iter(stored.items()))
    assert name.startswith(f"gptimage:{{{budget_id('runbase', KEY)}}}:learned:")
    for secret in (KEY, "sekrit", "runbase.net"):
        assert secret not in name and secret.encode() not in value


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"{not json",
        b'{"version": 1}',
        b"\xff\xfe garbage",
        b'{"version": 99, "provider": "runbase", "base_url": "x", "saved_at": 0}',
    ],
)
async def test_a_corrupt_value_is_ignored_with_a_debug_line(
    redis_server: RedisServer, value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    try:
        store = RedisStateStore(client, budget=budget_id("runbase", KEY))
        await client.set(store.key("runbase", URL), value)
        with caplog.at_level(logging.DEBUG, logger="gptimage_async"):
            assert await store.load("runbase", URL) is None
    finally:
        await client.aclose()
    assert any("ignoring the learned state in Redis" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


async def test_a_state_is_aged_on_redis_clock_and_a_stale_one_is_ignored(
    redis_server: RedisServer,
) -> None:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    try:
        store = RedisStateStore(client, budget=budget_id("runbase", KEY))
        # A host clock an hour ahead does not make the state unusable elsewhere:
        # Redis stamps it, whatever saved_at the saving host said.
        await store.save(state(saved_at=time.time() + 3600))
        assert await store.load("runbase", URL) is not None
        seconds, _ = await client.time()
        old = state(base_url=f"hmac:{base_url_id('runbase', URL)}", saved_at=seconds - MAX_AGE - 60)
        await client.set(store.key("runbase", URL), msgspec.json.encode(old))
        assert await store.load("runbase", URL) is None
    finally:
        await client.aclose()


async def test_the_file_is_the_fallback_when_redis_is_away(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_asyncio.Redis.from_url(redis_server.url, socket_connect_timeout=0.25)
    file = FileStateStore(tmp_path / "state.json")
    store = RedisStateStore(client, budget=budget_id("runbase", KEY), fallback=file)
    try:
        await store.save(state(durations=[(0.0, 1.0)]))  # both kept it
        assert await file.load("runbase", URL) is not None
        # Redis wins while it answers.
        await file.save(state(durations=[(0.0, 2.0)]))
        loaded = await store.load("runbase", URL)
        assert loaded is not None and loaded.durations == [(0.0, 1.0)]
        # Redis away: the file, and saving still reaches the file; nothing raises.
        redis_server.kill()
        with caplog.at_level(logging.DEBUG, logger="gptimage_async"):
            loaded = await store.load("runbase", URL)
            assert loaded is not None and loaded.durations == [(0.0, 2.0)]
            await store.save(state(durations=[(0.0, 3.0)]))
        on_file = await file.load("runbase", URL)
        assert on_file is not None and on_file.durations == [(0.0, 3.0)]
        assert all(r.levelno == logging.DEBUG for r in caplog.records)  # the file kept it
        # Redis back, but empty (no persistence): the file again.
        redis_server.start()
        loaded = await store.load("runbase", URL)
        assert loaded is not None and loaded.durations == [(0.0, 3.0)]
    finally:
        await client.aclose()


async def test_a_frozen_redis_costs_one_timeout_and_a_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    store = RedisStateStore(client, budget=budget_id("runbase", KEY), timeout=0.2)
    try:
        await client.ping()
        redis_server.freeze()
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG, logger="gptimage_async"):
            assert await store.load("runbase", URL) is None
            await store.save(state())
        assert time.monotonic() - started < 2.0  # two timeouts, not a hang
        assert any(
            r.levelno == logging.WARNING
            and "could not save the learned state to Redis" in r.message
            for r in caplog.records
        )
    finally:
        redis_server.thaw()
        await client.aclose()


def options(sim: Simulator, cfg: Any, url: str, **more: Any) -> dict[str, Any]:
    return {
        "api_key": KEY,
        "base_url": sim.base_url("runbase"),
        "rate_limit": scaled_rate_limit(cfg),
        "redis": url,
        **more,
    }


async def test_the_next_session_on_the_key_starts_warm_from_redis(
    redis_server: RedisServer,
) -> None:
    cfg = config()
    async with Simulator(cfg) as sim:
        opts = options(sim, cfg, redis_server.url)
        async with gi.Session("runbase", **opts) as first:
            assert not warm(first)
            await first.generate_many([f"a cat {i}" for i in range(8)])
            before = observed(first)
            assert observed(first) >= 4
        stored = await everything(redis_server.url)
        assert [k for k in stored if ":learned:" in k]
        assert not any(KEY in k or KEY.encode() in v for k, v in stored.items())
        async with gi.Session("runbase", **opts) as second:
            assert warm(second)  # no cold start, and no state file
            assert warm(second) and observed(second) == before
        # remember=False: nothing loaded.
        async with gi.Session("runbase", **opts, remember=False) as third:
            assert not warm(third)


async def test_a_corrupt_value_does_not_stop_a_session(redis_server: RedisServer) -> None:
    cfg = config()
    async with Simulator(cfg) as sim:
        opts = options(sim, cfg, redis_server.url)
        client = redis_asyncio.Redis.from_url(redis_server.url)
        store = RedisStateStore(client, budget=budget_id("runbase", KEY))
        try:
            await client.set(store.key("runbase", opts["base_url"]), b"\x00 not a state")
            async with gi.Session("runbase", **opts) as session:
                assert not warm(session)
                await session.generate("a cat")
            # Replaced on close by a good one.
            loaded = await store.load("runbase", opts["base_url"])
        finally:
            await client.aclose()
    assert loaded is not None and len(loaded.durations) == 1


async def test_sessions_survive_redis_down_at_open_and_close(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    cfg = config()
    path = tmp_path / "state.json"
    async with Simulator(cfg) as sim:
        opts = options(sim, cfg, redis_server.url, state_file=path)
        redis_server.kill()
        async with gi.Session("runbase", **opts) as first:  # Redis down at open and close
            assert not warm(first)
            await first.generate_many([f"a cat {i}" for i in range(6)])
            before = observed(first)
        assert path.exists()  # the file kept it
        async with gi.Session("runbase", **opts) as second:  # still down: from the file
            assert warm(second) and observed(second) == before
            redis_server.start()  # back before the close: it gets the state
            await second.generate("a dog")
            before = observed(second)
        path.unlink()
        async with gi.Session("runbase", **opts) as third:  # from Redis alone
            assert warm(third) and observed(third) == before


async def test_a_session_that_could_not_read_redis_does_not_replace_the_fleets_state(
    redis_server: RedisServer,
) -> None:
    client = redis_asyncio.Redis.from_url(redis_server.url, socket_connect_timeout=0.25)
    budget = budget_id("runbase", KEY)
    try:
        await RedisStateStore(client, budget=budget).save(state(durations=[(0.0, 1.0)] * 20))
        late = RedisStateStore(client, budget=budget, timeout=0.2)
        redis_server.freeze()  # the late process opens while Redis does not answer
        try:
            assert await late.load("runbase", URL) is None
        finally:
            redis_server.thaw()
        await late.save(state(durations=[(0.0, 5.0)]))  # its one run, at close
        fleet = await RedisStateStore(client, budget=budget).load("runbase", URL)
        assert fleet is not None and len(fleet.durations) == 20
        # Where Redis holds nothing, what it saw is still worth keeping.
        await client.flushall()
        await late.save(state(durations=[(0.0, 5.0)]))
        seeded = await RedisStateStore(client, budget=budget).load("runbase", URL)
        assert seeded is not None and seeded.durations == [(0.0, 5.0)]
    finally:
        await client.aclose()
