"""A session over a pool of keys and sellers (issue 19), against the real simulator.

Every test runs the simulator as a real HTTP server on 127.0.0.1 serving
several keys, each with its own budget, credits, quota and spend limit. A
run polled with a key other than the one that created it answers 404, so
``status_counts[404] == 0`` on every key proves polls stayed on their lane.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import gptimage_async as gi
import gptimage_async._lane as lane_module
from gptimage_async._pool import lane_state_file
from gptimage_async._transport._memory import MEMORY_ORIGIN, MemoryTransport
from gptimage_async.simulator import Faults, KeyConfig, Simulator
from gptimage_async.simulator._app import BASE_PATHS
from tests._clock import FakeClock
from tests.helpers import config as sim_config

#: Every test ends well within this (seconds): nothing may hang.
LIMIT = 30.0


def simulator(keys: dict[str, KeyConfig], **changes: Any) -> Simulator:
    return Simulator(sim_config(keys=keys, **changes))


def lane(
    sim: Simulator, key: str, provider: str = "runbase", *, base_url: str = "", **options: Any
) -> gi.Lane:
    """A lane on ``key`` whose starting belief is the simulator's compressed limit.

    ``base_url``: the API root's origin (default: the running simulator's).
    """
    limit = sim.config.limits(key)
    window = sim.config.scaled(limit.rate_window)
    requests = limit.rate_limit or 20
    return gi.Lane(
        provider,
        key,
        base_url=base_url + BASE_PATHS[provider] if base_url else sim.base_url(provider),  # type: ignore[arg-type]
        rate_limit=gi.RateLimit(requests, window),
        **options,
    )


def in_memory(
    monkeypatch: pytest.MonkeyPatch, keys: dict[str, KeyConfig], **changes: Any
) -> Simulator:
    """A simulator answering every lane in memory (``MemoryTransport``) on the loop's clock.

    For the tests about how many creates go where: on the fake clock those
    counts follow the routing rules only, never how busy the machine is. A
    lane builds its own transport: its factory is swapped for the in-memory one.
    """
    loop = asyncio.get_running_loop()
    sim = Simulator(sim_config(keys=keys, **changes), clock=lambda: loop.time())

    def transport(base_url: str, api_key: str, *, timeout: float, **_: Any) -> MemoryTransport:
        return MemoryTransport(sim, base_url, api_key, timeout=timeout)

    monkeypatch.setattr(lane_module, "HTTPTransport", transport)
    return sim


def pool_session(lanes: list[gi.Lane], **options: Any) -> gi.Session:
    options.setdefault("remember", False)
    return gi.Session(lanes=lanes, **options)


def no_cross_key_polls(sim: Simulator, *keys: str) -> None:
    for key in keys:
        stats = sim.stats.key(key)
        assert stats.status_counts[404] == 0, key
        assert stats.duplicates == 0, key


# -- routing and late binding ---------------------------------------------------------------


async def test_earliest_fills_every_lane_and_polls_stay_on_their_lane(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {"sk-a": KeyConfig(rate_limit=20), "sk-b": KeyConfig(rate_limit=20)}
    sim = in_memory(monkeypatch, keys)

    async def job() -> list[gi.Run]:
        lanes = [lane(sim, key, base_url=MEMORY_ORIGIN) for key in keys]
        async with pool_session(lanes) as session:
            return [run async for run in session.as_completed([f"p{i}" for i in range(40)])]

    runs = await fake_clock.run(job(), limit=LIMIT)
    assert all(run.error is None for run in runs)
    created = {key: sim.stats.key(key).creates for key in keys}
    assert sum(created.values()) == 40
    # Late binding: with equal lanes and a queue, neither idles.
    assert min(created.values()) >= 10, created
    by_lane = Counter(run.lane for run in runs)
    assert len(by_lane) == 2 and sorted(by_lane.values()) == sorted(created.values())
    no_cross_key_polls(sim, *keys)


async def test_cheapest_keeps_a_lone_job_on_the_cheap_lane() -> None:
    keys = {"sk-cheap": KeyConfig(rate_limit=20), "aio_dear": KeyConfig(rate_limit=20)}
    async with simulator(keys) as sim:
        lanes = [
            lane(sim, "aio_dear", "apiinone"),  # 10 / 28, first in the pool
            lane(sim, "sk-cheap", prices={"medium": 2, "high": 5}),
        ]
        async with pool_session(lanes, routing="cheapest") as session:
            for i in range(6):  # one at a time: the cheap lane always has a free slot
                await session.generate(f"solo {i}")
            spend = session.stats.spend
    assert sim.stats.key("sk-cheap").creates == 6
    assert sim.stats.key("aio_dear").create_requests == 0
    assert spend is not None and spend.spent == 12
    assert [item.created for item in spend.lanes] == [0, 6]


async def test_cheapest_overflows_to_the_dear_lane_only_when_saturated(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dear lane has half the cheap one's budget: with equal budgets the split
    # of a saturating burst is even by construction, and "cheap >= dear" sat on
    # the mean, a coin toss under load (29 to 31 once). In memory on the fake
    # clock: on sockets a busy machine let the cheap lane keep up (53 to 7 once).
    keys = {"sk-cheap": KeyConfig(rate_limit=20), "sk-dear": KeyConfig(rate_limit=10)}
    sim = in_memory(monkeypatch, keys)
    lanes = [
        lane(sim, "sk-dear", prices={"medium": 9, "high": 9}, base_url=MEMORY_ORIGIN),
        lane(sim, "sk-cheap", prices={"medium": 1, "high": 1}, base_url=MEMORY_ORIGIN),
    ]

    async def burst() -> list[gi.Result]:
        async with pool_session(lanes, routing="cheapest") as session:
            return await session.generate_many([f"burst {i}" for i in range(60)])

    results = await fake_clock.run(burst(), limit=LIMIT)
    assert len(results) == 60
    cheap, dear = sim.stats.key("sk-cheap").creates, sim.stats.key("sk-dear").creates
    assert cheap + dear == 60
    # A burst saturates the cheap lane: the dear lane takes the overflow (routed as a
    # herd, each waiting create asking again at its own time, the creates piled up
    # waiting for the cheap lane while the dear one idled: 57 cheap, 3 dear)...
    assert dear >= 10, (cheap, dear)
    # ... and the cheap lane keeps at least its share. The policy's guarantee: the
    # head of the line takes the cheap lane whenever its next slot is within 1.5 of
    # the dear lane's, so it gets at least its share of the budget (2/3 here). Were
    # it skipped as soon as one slot was taken (by a poll, say), the dear lane would
    # take nearly every create.
    assert cheap >= dear, (cheap, dear)
    no_cross_key_polls(sim, *keys)


async def test_late_binding_gives_a_faster_lane_more_creates(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bound at send time, creates follow each lane's free slots: a lane with a
    # quarter of the budget gets far fewer (round-robin would give it half).
    keys = {"sk-fast": KeyConfig(rate_limit=20), "sk-slow": KeyConfig(rate_limit=4)}
    sim = in_memory(monkeypatch, keys)

    async def job() -> list[gi.Result]:
        lanes = [lane(sim, key, base_url=MEMORY_ORIGIN) for key in ("sk-slow", "sk-fast")]
        async with pool_session(lanes) as session:
            return await session.generate_many([f"f{i}" for i in range(40)])

    results = await fake_clock.run(job(), limit=LIMIT)
    assert len(results) == 40
    fast, slow = sim.stats.key("sk-fast").creates, sim.stats.key("sk-slow").creates
    assert fast + slow == 40 and slow >= 1
    assert fast >= 2 * slow, (fast, slow)
    no_cross_key_polls(sim, *keys)


# -- failover -------------------------------------------------------------------------------

CLOSING = {
    "402 credits out": (KeyConfig(credits=20), 402, gi.InsufficientCreditsError),
    "403 spend limit": (KeyConfig(spend_limit=20), 403, gi.PermissionDeniedError),
    "429 USAGE_EXCEEDED": (KeyConfig(quota=2), 429, gi.QuotaExceededError),
}


@pytest.mark.parametrize("case", list(CLOSING))
async def test_a_closing_status_moves_creates_to_the_other_lane(case: str) -> None:
    account, status, _error = CLOSING[case]
    keys = {"sk-poor": account, "sk-rich": KeyConfig()}
    async with simulator(keys) as sim:
        lanes = [lane(sim, "sk-poor"), lane(sim, "sk-rich")]
        async with pool_session(lanes) as session:
            results = await asyncio.wait_for(
                session.generate_many([f"job {i}" for i in range(12)]), LIMIT
            )
            # Later creates go to the open lane at once: the closed one is never asked again.
            refused = sim.stats.key("sk-poor").status_counts[status]
            await session.generate("after")
    assert len(results) == 12 and all(result.urls for result in results)
    poor = sim.stats.key("sk-poor")
    assert poor.creates == 2  # what its account allowed
    assert sim.stats.key("sk-rich").creates == 11
    assert refused >= 1 and poor.status_counts[status] == refused
    assert sim.stats.duplicates == 0
    no_cross_key_polls(sim, *keys)


async def test_a_revoked_key_closes_its_lane_and_runs_in_flight_still_resolve() -> None:
    keys = {"sk-a": KeyConfig(), "sk-b": KeyConfig()}
    async with (
        simulator(keys) as sim,
        pool_session([lane(sim, "sk-a"), lane(sim, "sk-b")]) as session,
    ):
        sim.revoke("sk-a")
        results = await asyncio.wait_for(session.generate_many([f"r{i}" for i in range(6)]), LIMIT)
    assert all(result.urls for result in results)
    assert sim.stats.key("sk-b").creates == 6
    assert sim.stats.key("sk-a").creates == 0
    assert sim.stats.duplicates == 0


async def test_every_lane_closed_ends_waiting_creates_at_once() -> None:
    keys = {"sk-a": KeyConfig(credits=10), "sk-b": KeyConfig(credits=10)}
    async with (
        simulator(keys) as sim,
        pool_session([lane(sim, "sk-a"), lane(sim, "sk-b")]) as session,
    ):
        out = await asyncio.wait_for(
            session.generate_many([f"c{i}" for i in range(8)], return_exceptions=True),
            LIMIT,
        )
        with pytest.raises(gi.PoolExhaustedError) as caught:
            await session.submit("one more")
        asked = sim.stats.create_requests
    done = [item for item in out if isinstance(item, gi.Result)]
    errors = [item for item in out if isinstance(item, gi.GPTImageError)]
    assert len(done) == 2 and len(errors) == 6
    assert all(isinstance(error, gi.PoolExhaustedError) for error in errors)
    causes = caught.value.causes
    assert [type(cause).__name__ for _, cause in causes] == ["InsufficientCreditsError"] * 2
    assert "sk-a" not in str(caught.value) and "sk-b" not in str(caught.value)
    assert sim.stats.create_requests == asked  # the last create sent nothing


async def test_a_session_of_one_key_is_never_closed_and_asks_again() -> None:
    # One key: nothing to fail over to, so every create asks the provider, as a
    # single-key session always has (a key topped up works again at once).
    keys = {"sk-a": KeyConfig(credits=10)}
    async with simulator(keys) as sim, pool_session([lane(sim, "sk-a")]) as session:
        await session.generate("paid")
        with pytest.raises(gi.InsufficientCreditsError):
            await session.submit("refused")
        with pytest.raises(gi.InsufficientCreditsError):
            await session.submit("refused again")
        sim.set_key("sk-a", credits=100)  # topped up
        assert (await session.generate("paid again")).urls
    assert sim.stats.key("sk-a").status_counts[402] == 2


async def test_an_uncertain_create_never_moves_to_another_lane() -> None:
    keys = {"sk-a": KeyConfig(), "aio_b": KeyConfig()}
    faults = Faults(create_500_after_effect=1.0, applies_to=frozenset({"runbase"}))
    async with simulator(keys, faults=faults) as sim:
        lanes = [lane(sim, "sk-a", prices={"medium": 1, "high": 1}), lane(sim, "aio_b", "apiinone")]
        async with pool_session(lanes, routing="cheapest", on_exit="cancel") as session:
            with pytest.raises(gi.UncertainCreateError):
                await session.submit("maybe paid")
            spend = session.stats.spend
    assert sim.stats.key("sk-a").creates == 1  # it was made, and paid
    assert sim.stats.key("aio_b").create_requests == 0  # and never sent elsewhere
    assert spend is not None and spend.lanes[0].uncertain == 1


async def test_an_outage_cools_its_lane_and_creates_move_to_the_other(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In memory on the fake clock: a cooling is loop time, so how many creates meet
    # the outage depends on the cooling rules only, never on how busy the machine is
    # (on sockets, a slow turn let a cooling run out mid-job: a fourth 503 now and then).
    runs = 20
    keys = {"sk-a": KeyConfig(), "aio_b": KeyConfig()}
    # Runbase answers every create 503 before doing anything: nothing is made there.
    faults = Faults(create_5xx=1.0, applies_to=frozenset({"runbase"}))
    sim = in_memory(monkeypatch, keys, faults=faults)
    lanes = [
        lane(sim, "sk-a", prices={"medium": 1, "high": 1}, base_url=MEMORY_ORIGIN),
        lane(sim, "aio_b", "apiinone", base_url=MEMORY_ORIGIN),
    ]

    async def job() -> tuple[list[gi.Result], gi.SpendSnapshot | None]:
        async with pool_session(lanes, routing="cheapest", max_create_attempts=1) as session:
            results = await session.generate_many([f"outage {i}" for i in range(runs)])
            return results, session.stats.spend

    results, spend = await fake_clock.run(job(), limit=LIMIT)
    assert all(result.urls for result in results)
    assert sim.stats.key("aio_b").creates == runs and sim.stats.creates == runs
    # Cooling: after the first refusals (the creates already on their way) the cheap
    # lane is left alone for the rest of the job. With no cooling, 7-9 creates of 20
    # met the outage; with 5 runs the job was too short to tell.
    assert sim.stats.faults["create_5xx"] <= 3
    assert spend is not None and [item.created for item in spend.lanes] == [0, runs]
    assert spend.spent == 10 * runs


# -- spend ----------------------------------------------------------------------------------


async def test_the_spend_cap_is_never_exceeded() -> None:
    keys = {"sk-a": KeyConfig(), "sk-b": KeyConfig()}
    prices = {"medium": 4, "high": 11}
    async with simulator(keys) as sim:
        lanes = [lane(sim, "sk-a", prices=prices), lane(sim, "sk-b", prices=prices)]
        async with pool_session(lanes, spend_cap=22) as session:
            out = await asyncio.wait_for(
                session.generate_many([f"s{i}" for i in range(10)], return_exceptions=True),
                LIMIT,
            )
            spend = session.stats.spend
    created = sim.stats.creates
    assert created == 5  # 5 x 4 = 20 <= 22; a sixth would make 24
    assert sum(isinstance(item, gi.SpendCapError) for item in out) == 5
    assert spend is not None and spend.spent == 20 and spend.cap == 22
    assert sum(item.created for item in spend.lanes) == 5


async def test_runbase_refunds_failed_runs_in_the_spend() -> None:
    async with simulator({"sk-a": KeyConfig()}, failure_rate=1.0) as sim:
        lanes = [lane(sim, "sk-a", prices={"medium": 3, "high": 8})]
        async with pool_session(lanes) as session:
            out = await session.generate_many(["x", "y"], return_exceptions=True)
            spend = session.stats.spend
    assert all(isinstance(item, gi.RunFailedError) for item in out)
    assert spend is not None and spend.lanes[0].created == 2 and spend.lanes[0].refunded == 2
    assert spend.spent == 0 and sim.spent("sk-a") == 0


async def test_bad_pools_are_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RUNBASE_API_KEY", raising=False)
    a = gi.Lane("runbase", "sk-a", prices={"medium": 1, "high": 2})
    with pytest.raises(gi.ConfigurationError, match="at least one lane"):
        gi.Session(lanes=[])
    with pytest.raises(gi.ConfigurationError, match="same key"):
        gi.Session(lanes=[a, gi.Lane("runbase", "sk-a")])
    with pytest.raises(gi.ConfigurationError, match="RUNBASE_API_KEY"):
        gi.Lane("runbase")
    with pytest.raises(gi.ConfigurationError, match=">= 0"):
        gi.Lane("runbase", "sk-b", prices={"medium": -1})
    with pytest.raises(gi.ConfigurationError, match="price for every quality"):
        gi.Session(lanes=[a, gi.Lane("runbase", "sk-b")], spend_cap=10)
    with pytest.raises(gi.ConfigurationError, match=r"per gptimage_async\.Lane"):
        gi.Session(lanes=[a], api_key="sk-z")
    with pytest.raises(gi.ConfigurationError, match="routing"):
        gi.Session(lanes=[a], routing="fastest")  # type: ignore[arg-type]
    with pytest.raises(gi.ConfigurationError, match="price for every quality"):
        gi.Session("runbase", api_key="sk-a", spend_cap=10)


async def test_an_attached_failed_run_is_not_refunded_by_this_session() -> None:
    # The lane refunds a failed run when it resolves it (no callback held per run): only
    # a run this session created and paid for, never one it attached.
    async with simulator({"sk-a": KeyConfig()}, failure_rate=1.0) as sim:
        lanes = [lane(sim, "sk-a", prices={"medium": 3, "high": 8})]
        async with pool_session(lanes) as session:
            failed = await session.submit("fails before")
            with pytest.raises(gi.RunFailedError):
                await asyncio.wait_for(failed, LIMIT)
        assert failed.run_id is not None
        sim.config = sim.config.replace(duration_min=3600.0, duration_max=3600.0)
        async with pool_session(lanes, on_exit="cancel") as later:
            own = await later.submit("still going")  # paid here: 3 credits
            attached = later.attach(failed.run_id)
            with pytest.raises(gi.RunFailedError):
                await asyncio.wait_for(attached, LIMIT)
            spend = later.stats.spend
            assert not own.done()
    assert spend is not None
    assert (spend.lanes[0].created, spend.lanes[0].refunded, spend.spent) == (1, 0, 3.0)


# -- attach ---------------------------------------------------------------------------------


async def test_attach_in_a_pool_goes_through_the_runs_own_lane() -> None:
    keys = {"sk-a": KeyConfig(), "sk-b": KeyConfig()}
    async with simulator(keys) as sim:
        lanes = [lane(sim, "sk-a", label="first"), lane(sim, "sk-b", label="second")]
        async with pool_session(lanes) as session:
            run = await session.submit("made here")
            made_on = run.lane
            run_id = run.run_id
            await run
        assert run_id is not None and made_on is not None
        async with pool_session(lanes) as later:
            with pytest.raises(gi.ConfigurationError, match="lane="):
                later.attach(run_id)
            with pytest.raises(gi.ConfigurationError, match="not one of"):
                later.attach(run_id, lane="third")
            again = later.attach(run_id, lane=made_on)
            result = await asyncio.wait_for(again, LIMIT)
            assert again.lane == made_on
    assert result.urls
    no_cross_key_polls(sim, *keys)


async def test_a_session_from_a_pool_file(tmp_path: Any) -> None:
    keys = {"sk-a": KeyConfig(), "aio_b": KeyConfig()}
    async with simulator(keys) as sim:
        path = tmp_path / "pool.toml"
        path.write_text(
            'routing = "cheapest"\n'
            "[lanes.rb]\n"
            'provider = "runbase"\nkey_env = "KEY_A"\n'
            f'base_url = "{sim.base_url("runbase")}"\n'
            "prices = { medium = 1, high = 2 }\n"
            "[lanes.aio]\n"
            'provider = "apiinone"\nkey_env = "KEY_B"\n'
            f'base_url = "{sim.base_url("apiinone")}"\n'
        )
        environ = {"KEY_A": "sk-a", "KEY_B": "aio_b"}
        session = gi.session_from_pool_file(path, environ=environ, remember=False)
        assert [spec.label for spec in session.pool.lanes] == ["rb", "aio"]
        assert session.pool.routing == "cheapest"
        async with session:
            await session.generate("from the file")
    assert sim.stats.key("sk-a").creates == 1
    with pytest.raises(gi.ConfigurationError, match="the pool file gives"):
        gi.session_from_pool_file(path, environ=environ, routing="earliest")


# -- learned state, per key -----------------------------------------------------------------


def _slow_state(path: Any, key: str, base_url: str) -> None:
    import time

    from gptimage_async._state import LearnedRate, LearnedState, encode_state

    state = LearnedState(
        provider="runbase",
        base_url=base_url,
        key=gi.Lane("runbase", key).fingerprint,
        saved_at=time.time(),
        rate=LearnedRate(requests=20, per=10.0, rate=0.5, bad=0.6, confirmed=True, recent=[]),
    )
    path.write_bytes(encode_state(state))


async def test_a_rate_learned_on_one_key_does_not_slow_another(tmp_path: Any) -> None:
    base_url = "http://127.0.0.1:9/api/v1"
    state = tmp_path / "state.json"
    _slow_state(state, "sk-slow", base_url)
    options: dict[str, Any] = {"base_url": base_url, "state_file": state}
    async with gi.Session("runbase", api_key="sk-slow", **options) as same:
        slow = same.limiter.rate
    _slow_state(state, "sk-slow", base_url)
    async with gi.Session("runbase", api_key="sk-fresh", **options) as other:
        fresh = other.limiter.rate
    assert slow == pytest.approx(0.5)
    assert fresh == pytest.approx(2.0, rel=0.2)  # the provider's 20 per 10 s, not 0.5


async def test_each_lane_of_a_pool_keeps_its_own_state_file(tmp_path: Any) -> None:
    keys = {"sk-a": KeyConfig(), "sk-b": KeyConfig()}
    state = tmp_path / "state.json"
    async with simulator(keys) as sim:
        lanes = [lane(sim, "sk-a"), lane(sim, "sk-b")]
        async with gi.Session(lanes=lanes, state_file=state) as session:
            await session.generate_many([f"w{i}" for i in range(4)])
    files = sorted(p.name for p in tmp_path.iterdir())
    named = {spec: lane_state_file(state, spec) for spec in lanes}  # key and base URL
    assert files == sorted(path.name for path in named.values())
    for spec, path in named.items():
        assert path.name.startswith(f"state.{spec.fingerprint}-")
        assert spec.fingerprint.encode() in path.read_bytes()
    assert not any(b"sk-" in (tmp_path / name).read_bytes() for name in files)


def test_a_state_names_its_key_and_is_refused_for_another() -> None:
    from gptimage_async._state import LearnedState, decode_state, encode_state

    data = encode_state(LearnedState(provider="runbase", base_url="u", key="aaaa", saved_at=1000.0))
    assert decode_state(data, provider="runbase", base_url="u", now=1001.0, key="aaaa")
    assert decode_state(data, provider="runbase", base_url="u", now=1001.0, key="bbbb") is None
