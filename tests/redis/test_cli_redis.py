"""``--redis URL`` and ``GPTIMAGE_REDIS_URL`` reach the session.

The command line runs in this process (``run_main``): what is checked is where
its session keeps the budget, not the process's signals or exit, and a process
start-up would only add its CPU. The Redis server is a real one all the same.
"""

from __future__ import annotations

import pytest
import redis

from tests.helpers import config
from tests.test_cli import against, run_main, simulator_thread

from .conftest import RedisServer


def budget_keys(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return list(client.keys("gptimage:*"))
    finally:
        client.close()


def test_generate_with_redis_shares_through_it(redis_server: RedisServer) -> None:
    done = run_main(
        "generate", "a lamp", "--provider", "simulator", "--time-scale", "0.01",
        "--redis", redis_server.url,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert budget_keys(redis_server.url)


def test_the_environment_variable_names_the_redis(redis_server: RedisServer) -> None:
    done = run_main(
        "generate", "a lamp", "--provider", "simulator",
        env={"GPTIMAGE_REDIS_URL": redis_server.url},
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert budget_keys(redis_server.url)


@pytest.mark.parametrize("no_state", [False, True])
def test_with_redis_the_learned_state_goes_to_redis_unless_no_state(
    redis_server: RedisServer, no_state: bool
) -> None:
    with simulator_thread(config()) as sim:
        done = run_main(
            "generate", "a lamp", *against(sim), "--redis", redis_server.url,
            *(["--no-state"] if no_state else []),
        )  # fmt: skip
    assert done.code == 0, done.stderr
    keys = [k.decode() for k in budget_keys(redis_server.url)]
    assert keys  # the budget is shared either way
    learned = [k for k in keys if ":learned:" in k]
    assert len(learned) == (0 if no_state else 1)
