"""The simulator's per-key accounts: each key its own rate limit, credits, quota and runs."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

import gptimage_async as gi
from gptimage_async.simulator import (
    VARIANTS,
    KeyConfig,
    Simulator,
    SimulatorConfig,
)

from .wire import (
    ManualClock,
    aio_create,
    aio_get,
    make,
    rb_create,
    rb_get,
    task_id_of,
)

# -- per-key accounts ---------------------------------------------------------------------


async def test_each_key_has_its_own_rate_limit(session: aiohttp.ClientSession) -> None:
    keys = {"sk-a": KeyConfig(rate_limit=3), "sk-b": KeyConfig(rate_limit=5, rate_window=20.0)}
    # Real time: the 10 s window cannot roll over during the test.
    async with make(rate_limit=2, rate_window=10.0, time_scale=1.0, keys=keys) as sim:
        for key, admitted in (("sk-a", 3), ("sk-b", 5), ("sk-other", 2)):
            statuses = [(await rb_get(session, sim, "run_x", key=key)).status for _ in range(7)]
            assert statuses == [404] * admitted + [429] * (7 - admitted), key
        assert sim.stats.key("sk-a").rate_limited == 4
        assert sim.stats.key("sk-b").rate_limited == 2
        assert sim.stats.key("sk-other").rate_limited == 5
        assert sim.stats.rate_limited == 11
        assert sim.stats.key("sk-a").polls == 7
        answer = await rb_get(session, sim, "run_x", key="sk-b")
        # sk-b's window is its own 20 s: the wait it is told is longer than 10 s.
        assert float(answer.headers["Retry-After"]) > 10.0


async def test_two_sessions_on_two_keys_each_get_their_own_budget() -> None:
    # sk-a allows 2 requests per window and its session drives at 20: it meets
    # 429s. sk-b allows 20 and its session asks 5: were the budgets shared,
    # sk-a's flood would spill into sk-b's answers as 429s too.
    keys = {"sk-a": KeyConfig(rate_limit=2), "sk-b": KeyConfig(rate_limit=20)}
    config = SimulatorConfig(time_scale=0.02, seed=3, rate_limit=1, keys=keys, **VARIANTS)
    window = config.scaled(config.rate_window)
    async with Simulator(config) as sim:

        def open_session(key: str, belief: int) -> gi.Session:
            return gi.Session(
                "runbase",
                api_key=key,
                base_url=sim.base_url("runbase"),
                rate_limit=gi.RateLimit(belief, window),
                remember=False,
            )

        async with open_session("sk-a", 20) as a, open_session("sk-b", 5) as b:
            results = await asyncio.gather(
                *(a.generate(f"a{i}") for i in range(6)),
                *(b.generate(f"b{i}") for i in range(6)),
            )
            seen = {"sk-a": a.stats, "sk-b": b.stats}
    assert all(result.urls for result in results)
    for key, client in seen.items():
        stats = sim.stats.key(key)
        assert stats.creates == 6 and stats.duplicates == 0, key
        assert stats.create_requests + stats.polls == client.requests, key
        assert stats.rate_limited == client.rate_limited, key
    assert sim.stats.key("sk-a").rate_limited > 0
    assert sim.stats.key("sk-b").rate_limited == 0


async def test_credits_run_out_per_key_with_402(session: aiohttp.ClientSession) -> None:
    keys = {
        "sk-poor": KeyConfig(credits=20),
        "aio_poor": KeyConfig(credits=30),
        "sk-cheap": KeyConfig(credits=12, prices={"medium": 5, "high": 7}),
    }
    async with make(keys=keys) as sim:
        for _ in range(2):
            assert (await rb_create(session, sim, key="sk-poor")).status == 200
        answer = await rb_create(session, sim, key="sk-poor")
        assert answer.status == 402
        assert answer.json()["error"]["code"] == "insufficient_balance"
        assert sim.balance("sk-poor") == 0
        # Keys not listed keep the default: unlimited.
        assert (await rb_create(session, sim, key="sk-rich")).status == 200
        assert sim.balance("sk-rich") is None

        assert (await aio_create(session, sim, key="aio_poor", quality="high")).status == 200
        answer = await aio_create(session, sim, key="aio_poor")  # 10 needed, 2 left
        assert answer.status == 402
        assert answer.json()["error"] == {
            "code": 402,
            "message": "Insufficient credits: 10 needed.",
            "type": "insufficient_credits",
        }
        assert sim.spent("aio_poor") == 28

        for _ in range(2):
            assert (await rb_create(session, sim, key="sk-cheap")).status == 200
        assert (await rb_create(session, sim, key="sk-cheap")).status == 402
        assert sim.spent("sk-cheap") == 10
        assert sim.stats.key("sk-cheap").status_counts == {200: 2, 402: 1}
        assert sim.stats.key("sk-cheap").creates == 2


async def test_a_key_can_run_out_mid_job(session: aiohttp.ClientSession) -> None:
    async with make(keys={"sk-a": KeyConfig(rate_limit=50)}) as sim:
        assert (await rb_create(session, sim, key="sk-a")).status == 200
        sim.set_key("sk-a", credits=10)  # 10 already spent: nothing left
        assert (await rb_create(session, sim, key="sk-a")).status == 402
        assert (await rb_create(session, sim, key="sk-b")).status == 200
        assert sim.config.keys["sk-a"] == KeyConfig(rate_limit=50, credits=10)
        sim.set_key("sk-b", spend_limit=10)
        assert (await rb_create(session, sim, key="sk-b")).status == 403
        with pytest.raises(ValueError, match="credits"):
            sim.set_key("sk-a", credits=-1)


async def test_quota_per_key_is_usage_exceeded(session: aiohttp.ClientSession) -> None:
    keys = {"sk-q": KeyConfig(quota=1), "aio_q": KeyConfig(quota=1)}
    async with make(keys=keys, rate_limit=100) as sim:
        assert (await rb_create(session, sim, key="sk-q")).status == 200
        answer = await rb_create(session, sim, key="sk-q")
        assert answer.status == 429
        assert answer.json()["error"]["code"] == "USAGE_EXCEEDED"
        assert "Retry-After" not in answer.headers
        assert sim.stats.key("sk-q").rate_limited == 0  # a quota 429 is not a rate limit
        assert (await rb_create(session, sim, key="sk-free")).status == 200
        assert (await rb_create(session, sim, key="sk-free")).status == 200
        assert (await aio_create(session, sim, key="aio_q")).status == 200
        answer = await aio_create(session, sim, key="aio_q")
        assert answer.status == 403
        assert answer.json()["error"]["type"] == "spend_limit"


async def test_spend_limit_per_key_is_403(session: aiohttp.ClientSession) -> None:
    fixed = {"duration": "fixed", "duration_median": 2.0}
    keys = {"sk-cap": KeyConfig(spend_limit=38), "aio_cap": KeyConfig(spend_limit=10)}
    async with make(keys=keys, **fixed) as sim:
        assert (await rb_create(session, sim, key="sk-cap", quality="high")).status == 200
        assert (await rb_create(session, sim, key="sk-cap")).status == 200  # 38: at the cap
        answer = await rb_create(session, sim, key="sk-cap")
        assert answer.status == 403
        assert answer.json()["error"]["code"] == "api_key_spend_limit_exceeded"
        assert sim.spent("sk-cap") == 38
        assert (await aio_create(session, sim, key="aio_cap")).status == 200
        answer = await aio_create(session, sim, key="aio_cap")
        assert answer.status == 403
        assert answer.json()["error"]["type"] == "spend_limit"
        assert (await rb_create(session, sim, key="sk-uncapped", quality="high")).status == 200
    # A failed run is refunded, and the refund frees the spend limit again.
    clock = ManualClock()
    async with make(keys=keys, failure_rate=1.0, clock=clock, **fixed) as sim:
        run_id = (await rb_create(session, sim, key="sk-cap", quality="high")).json()["id"]
        assert (await rb_create(session, sim, key="sk-cap", quality="high")).status == 403
        body = (await rb_get(session, sim, run_id, key="sk-cap")).json()
        while body["status"] != "failed":
            clock.advance(0.01)
            body = (await rb_get(session, sim, run_id, key="sk-cap")).json()
        assert sim.spent("sk-cap") == 0
        assert (await rb_create(session, sim, key="sk-cap", quality="high")).status == 200


async def test_a_revoked_key_answers_401_mid_run(session: aiohttp.ClientSession) -> None:
    async with make() as sim:
        run_id = (await rb_create(session, sim, key="sk-doomed")).json()["id"]
        task_id = task_id_of((await aio_create(session, sim, key="aio_doomed")).json())
        sim.revoke("sk-doomed")
        sim.revoke("aio_doomed")
        answer = await rb_get(session, sim, run_id, key="sk-doomed")
        assert answer.status == 401
        assert answer.json()["error"]["code"] == "invalid_api_key"
        assert (await rb_create(session, sim, key="sk-doomed")).status == 401
        answer = await aio_get(session, sim, task_id, key="aio_doomed")
        assert answer.status == 401
        assert answer.json()["error"]["type"] == "authentication_error"
        assert (await rb_create(session, sim, key="sk-alive")).status == 200
        assert sim.stats.key("sk-doomed").status_counts[401] == 2
        assert sim.runs[run_id].polls == 0  # a refused poll never reads the run
        sim.restore("sk-doomed")
        assert (await rb_get(session, sim, run_id, key="sk-doomed")).status == 200


async def test_a_run_is_404_to_every_other_key(session: aiohttp.ClientSession) -> None:
    async with make() as sim:
        run_id = (await rb_create(session, sim, key="sk-owner")).json()["id"]
        task_id = task_id_of((await aio_create(session, sim, key="aio_owner")).json())
        answer = await rb_get(session, sim, run_id, key="sk-thief")
        assert answer.status == 404
        assert answer.json()["error"]["code"] == "run_not_found"
        assert (await aio_get(session, sim, task_id, key="aio_thief")).status == 404
        assert (await rb_get(session, sim, run_id, key="sk-owner")).status == 200
        assert (await aio_get(session, sim, task_id, key="aio_owner")).status == 200
        assert sim.stats.key("sk-thief").status_counts == {404: 1}
        assert sim.runs[run_id].polls == 1  # only the owner's poll was answered


async def test_read_lag_hides_a_new_run_for_a_while(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with make(read_lag=20.0, time_scale=0.01, clock=clock) as sim:  # 0.2 s
        run_id = (await rb_create(session, sim)).json()["id"]
        assert (await rb_get(session, sim, run_id)).status == 404
        clock.advance(0.21)  # the simulator's time, past the lag: no waiting
        assert (await rb_get(session, sim, run_id)).status == 200
        assert sim.runs[run_id].polls == 1


async def test_per_key_statistics(session: aiohttp.ClientSession) -> None:
    async with make() as sim:
        for _ in range(2):
            await rb_create(session, sim, "same prompt", key="sk-twice")
        run_id = (await rb_create(session, sim, "same prompt", key="sk-once")).json()["id"]
        for _ in range(3):
            await rb_get(session, sim, run_id, key="sk-once")
        twice, once = sim.stats.key("sk-twice"), sim.stats.key("sk-once")
        assert (twice.create_requests, twice.creates, twice.polls, twice.duplicates) == (2, 2, 0, 1)
        assert (once.create_requests, once.creates, once.polls, once.duplicates) == (1, 1, 3, 0)
        assert sim.stats.duplicates == 2  # across keys, the same prompt was paid three times
        assert "sk-twice" not in repr(sim.stats)
        sim.reset_stats()
        assert sim.stats.keys == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"rate_limit": 0},
        {"rate_window": 0.0},
        {"credits": -1},
        {"quota": -1},
        {"spend_limit": -5},
        {"prices": {"medium": 10}},
        {"prices": {"medium": 10, "high": -1}},
    ],
)
def test_bad_key_settings_are_refused(bad: dict[str, Any]) -> None:
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        KeyConfig(**bad)
    with pytest.raises(ValueError, match=name):
        SimulatorConfig(**bad)


def test_unset_key_fields_come_from_the_config() -> None:
    config = SimulatorConfig(
        rate_limit=7, credits=100, spend_limit=50, keys={"sk-a": KeyConfig(credits=None)}
    )
    limits = config.limits("sk-a")
    assert (limits.rate_limit, limits.credits, limits.spend_limit) == (7, None, 50)
    assert config.limits("sk-z").credits == 100
    assert dict(config.limits("sk-z").prices) == {"medium": 10, "high": 28}
