"""``--redis URL`` and ``GPTIMAGE_REDIS_URL`` reach the session."""

from __future__ import annotations

import pytest
import redis.asyncio as redis_asyncio

from gptimage_async.simulator import Simulator
from tests.helpers import config
from tests.test_cli import against, run_cli

from .conftest import RedisServer


async def budget_keys(url: str) -> list[bytes]:
    client = redis_asyncio.Redis.from_url(url)
    try:
        return list(await client.keys("gptimage:*"))
    finally:
        await client.aclose()


async def test_generate_with_redis_shares_through_it(redis_server: RedisServer) -> None:
    done = await run_cli(
        "generate", "a lamp", "--provider", "simulator", "--time-scale", "0.01",
        "--redis", redis_server.url,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert await budget_keys(redis_server.url)


async def test_the_environment_variable_names_the_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPTIMAGE_REDIS_URL", redis_server.url)
    done = await run_cli("generate", "a lamp", "--provider", "simulator")
    assert done.code == 0, done.stderr
    assert await budget_keys(redis_server.url)


@pytest.mark.parametrize("no_state", [False, True])
async def test_with_redis_the_learned_state_goes_to_redis_unless_no_state(
    redis_server: RedisServer, no_state: bool
) -> None:
    async with Simulator(config()) as sim:
        done = await run_cli(
            "generate", "a lamp", *against(sim), "--redis", redis_server.url,
            *(["--no-state"] if no_state else []),
        )  # fmt: skip
    assert done.code == 0, done.stderr
    keys = [k.decode() for k in await budget_keys(redis_server.url)]
    assert keys  # the budget is shared either way
    learned = [k for k in keys if ":learned:" in k]
    assert len(learned) == (0 if no_state else 1)
