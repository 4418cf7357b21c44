"""Auth, credits charged and refunded, blocked keys, quotas and not-found runs."""

from __future__ import annotations

import aiohttp
import pytest

from gptimage_async.simulator import Simulator, SimulatorConfig

from .wire import (
    GOOD_INPUT,
    NOT_DONE,
    RB_KEY,
    RB_MODEL,
    ManualClock,
    aio_create,
    aio_get,
    make,
    rb_create,
    rb_get,
    request,
)

# -- auth, credits, blocks, quota, not found -------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": "Basic c2stdGVzdA=="}, "invalid_api_key"),
        ({"Authorization": "Bearer aio_wrong_provider"}, "invalid_api_key"),
        ({"Authorization": "Bearer sk-"}, "invalid_api_key"),
    ],
)
async def test_runbase_auth(
    session: aiohttp.ClientSession, headers: dict[str, str], code: str
) -> None:
    async with make() as sim:
        body = {"model": RB_MODEL, "input": GOOD_INPUT}
        url = sim.base_url("runbase") + "/runs"
        answer = await request(session, "POST", url, json=body, headers=headers)
        assert answer.status == 401
        assert answer.json()["error"]["code"] == code
        poll = await request(session, "GET", url + "/run_0000", headers=headers)
        assert poll.status == 401


async def test_apiinone_auth(session: aiohttp.ClientSession) -> None:
    async with make(apiinone_shape="flat") as sim:
        for key in ("sk-wrong_provider", "aio_"):
            answer = await aio_create(session, sim, key=key)
            assert answer.status == 401
            assert answer.json()["error"] == {
                "code": 401,
                "message": "Invalid API key.",
                "type": "authentication_error",
            }
        url = sim.base_url("apiinone") + "/tasks/task_0"
        assert (await request(session, "GET", url)).status == 401


async def test_explicit_api_keys(session: aiohttp.ClientSession) -> None:
    async with make(api_keys=frozenset({"sk-good", "my-own-key"})) as sim:
        assert (await rb_create(session, sim, key="sk-good")).status == 200
        assert (await rb_create(session, sim, key="my-own-key")).status == 200
        answer = await rb_create(session, sim, key="sk-other")
        assert answer.status == 401
        assert answer.json()["error"]["code"] == "invalid_api_key"


async def test_credits_are_charged_by_quality(session: aiohttp.ClientSession) -> None:
    async with make(credits=30) as sim:
        assert sim.balance(RB_KEY) == 30
        assert (await rb_create(session, sim, quality="high")).status == 200  # 28
        assert sim.balance(RB_KEY) == 2
        answer = await rb_create(session, sim)  # medium: 10
        assert answer.status == 402
        assert answer.json()["error"]["code"] == "insufficient_balance"
        assert sim.stats.creates == 1
        # Another key has its own balance.
        assert (await rb_create(session, sim, key="sk-second")).status == 200
        assert (await rb_create(session, sim, key="sk-second")).status == 200
        assert (await rb_create(session, sim, key="sk-second")).status == 200
        assert (await rb_create(session, sim, key="sk-second")).status == 402
    async with make() as sim:
        assert sim.balance(RB_KEY) is None


async def test_failed_runs_are_refunded_when_they_fail(session: aiohttp.ClientSession) -> None:
    # The simulator's own clock stands still until the test moves it: a slow
    # machine cannot let the run fail before the second create is refused.
    now = [0.0]
    config = SimulatorConfig(
        time_scale=0.01,
        seed=1234,
        rate_limit=None,
        credits=10,
        failure_rate=1.0,
        duration="fixed",
        duration_median=3.0,
    )
    async with Simulator(config, clock=lambda: now[0]) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        assert sim.balance(RB_KEY) == 0
        assert (await rb_create(session, sim)).status == 402  # not refunded yet
        now[0] += 0.029  # just before the run ends (3 s at time scale 0.01)
        assert (await rb_get(session, sim, run_id)).json()["status"] in NOT_DONE
        assert (await rb_create(session, sim)).status == 402
        now[0] += 0.002
        assert (await rb_get(session, sim, run_id)).json()["status"] == "failed"
        assert sim.balance(RB_KEY) == 10
        assert (await rb_create(session, sim)).status == 200


async def test_apiinone_credits(session: aiohttp.ClientSession) -> None:
    async with make(credits=20, apiinone_shape="flat") as sim:
        assert (await aio_create(session, sim, quality="high")).status == 402
        assert (await aio_create(session, sim)).status == 200
        answer = await aio_create(session, sim, quality="high")
        assert answer.status == 402
        assert answer.json()["error"]["type"] == "insufficient_credits"
        assert answer.json()["error"]["code"] == 402


async def test_blocked_keys(session: aiohttp.ClientSession) -> None:
    blocked = frozenset({"sk-blocked", "aio_blocked"})
    async with make(blocked_keys=blocked, apiinone_shape="flat") as sim:
        answer = await rb_create(session, sim, key="sk-blocked")
        assert answer.status == 403
        assert answer.json()["error"]["code"] == "ip_not_allowed"
        answer = await aio_create(session, sim, key="aio_blocked")
        assert answer.status == 403
        assert answer.json()["error"]["code"] == 403
        assert (await rb_create(session, sim)).status == 200
        assert sim.stats.creates == 1


async def test_unknown_or_foreign_runs_are_404(session: aiohttp.ClientSession) -> None:
    async with make(apiinone_shape="flat") as sim:
        answer = await rb_get(session, sim, "run_0123456789abcdef")
        assert answer.status == 404
        assert answer.json()["error"]["code"] == "run_not_found"
        run_id = (await rb_create(session, sim)).json()["id"]
        assert (await rb_get(session, sim, run_id, key="sk-someone-else")).status == 404
        answer = await aio_get(session, sim, run_id)  # a Runbase id on API in One
        assert answer.status == 404
        assert answer.json()["error"]["type"] == "not_found"
        assert (await rb_get(session, sim, run_id)).status == 200


async def test_quota_runbase_usage_exceeded_never_clears(
    session: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    async with make(quota=2, rate_limit=100, rate_window=1.0, time_scale=0.02, clock=clock) as sim:
        first = (await rb_create(session, sim)).json()["id"]
        assert (await rb_create(session, sim)).status == 200
        for _ in range(2):
            answer = await rb_create(session, sim)
            assert answer.status == 429
            assert answer.json()["error"]["code"] == "USAGE_EXCEEDED"
            assert "Retry-After" not in answer.headers
            clock.advance(0.03)  # longer than the rate window: still exceeded
        assert sim.stats.creates == 2
        assert sim.stats.rate_limited == 0
        assert (await rb_get(session, sim, first)).status == 200  # polls still work
        assert (await rb_create(session, sim, key="sk-fresh")).status == 200


async def test_quota_apiinone_spend_limit(session: aiohttp.ClientSession) -> None:
    async with make(quota=1, apiinone_shape="flat") as sim:
        assert (await aio_create(session, sim)).status == 200
        answer = await aio_create(session, sim)
        assert answer.status == 403
        assert answer.json()["error"]["type"] == "spend_limit"
