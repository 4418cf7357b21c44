"""Pool faults a fresh user found (issue 19), each against the real simulator.

Resent creates of uncertain fate under a spend cap, the same key at two base
URLs, lanes that cannot connect. Every simulator is a real HTTP server on
127.0.0.1; a dead lane is a real loopback port nothing listens on; waits are
timed on the fake loop clock.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async._cli._spend import session_spend_lines
from gptimage_async._pool import (
    UNREACHABLE_AFTER,
    CreateMove,
    Failover,
    LaneAction,
    LaneHealth,
    LaneState,
    failover,
    lane_state_file,
)
from gptimage_async.simulator import Faults, KeyConfig, Simulator
from tests._clock import FakeClock
from tests.helpers import config as sim_config

PRICES = {"medium": 4, "high": 11}


def _lane(sim: Simulator, key: str, label: str, **options: Any) -> gi.Lane:
    options.setdefault("rate_limit", gi.RateLimit(20, sim.config.scaled(10)))
    provider = "apiinone" if key.startswith("aio_") else "runbase"
    return gi.Lane(provider, key, base_url=sim.base_url(provider), label=label, **options)


#: Slow enough that a burst of creates spreads over two lanes (a queue on one
#: makes the other earlier), fast enough for a test of a few seconds.
SPREAD = gi.RateLimit(4, 1.0)


def _cost(sim: Simulator, prices: dict[str, dict[str, int]]) -> int:
    """What the runs the simulator made cost at the lanes' own prices."""
    return sum(prices[run.key][run.quality] for run in sim.runs.values())


# -- 1. a resent uncertain create is reserved anew; the first stays reserved -----------------


async def test_a_resend_that_does_not_fit_beside_the_maybe_paid_attempt_is_refused() -> None:
    # Every create makes its run and then answers 500: its fate is unknown.
    sim = Simulator(sim_config(faults=Faults(create_500_after_effect=1.0)))
    async with sim:
        lanes = [
            _lane(sim, "sk-fix-a", "a", prices=PRICES),
            _lane(sim, "sk-fix-b", "b", prices={"medium": 9, "high": 20}),
        ]
        async with gi.Session(
            lanes=lanes, spend_cap=4, resend_uncertain_creates=True, remember=False
        ) as session:
            with pytest.raises(gi.UncertainCreateError) as info:
                await session.generate("a lamp")
            spend = session.stats.spend
    assert isinstance(info.value.__cause__, gi.SpendCapError)
    assert "spend cap" in str(info.value)
    assert len(sim.runs) == 1  # sent once: the resend did not fit beside it
    assert spend is not None
    assert (spend.spent, spend.reserved, spend.headroom) == (0.0, 4.0, 0.0)
    assert spend.lanes[0].uncertain == 1


async def test_each_resent_attempt_is_reserved_and_the_cap_bounds_what_was_made() -> None:
    sim = Simulator(sim_config(faults=Faults(create_500_after_effect=1.0)))
    async with sim:
        lane = _lane(sim, "sk-fix-c", "c", prices=PRICES)
        async with gi.Session(
            lanes=[lane, _lane(sim, "sk-fix-d", "d", prices=PRICES)],
            spend_cap=8,
            resend_uncertain_creates=True,
            remember=False,
        ) as session:
            with pytest.raises(gi.UncertainCreateError):
                await session.generate("a lamp")
            spend = session.stats.spend
    # Two attempts fit under 8 at 4 each, both made a run; the third was refused.
    assert len(sim.runs) == 2
    assert spend is not None and (spend.spent, spend.reserved) == (0.0, 8.0)
    assert {run.key for run in sim.runs.values()} == {"sk-fix-c"}  # never moved


async def test_a_mixed_fault_job_never_makes_more_than_the_cap() -> None:
    faults = Faults(create_500_after_effect=0.4, reset_after_create=0.05, create_5xx=0.1)
    keys = {"sk-fix-e": KeyConfig(rate_limit=20), "sk-fix-f": KeyConfig(rate_limit=20)}
    prices = {"sk-fix-e": PRICES, "sk-fix-f": {"medium": 5, "high": 12}}
    sim = Simulator(sim_config(faults=faults, keys=keys, seed=2))
    async with sim:
        lanes = [_lane(sim, key, key[-1], prices=prices[key]) for key in keys]
        requests = [
            gi.ImageRequest(f"vase {i}", quality="high" if i % 3 else "medium") for i in range(40)
        ]
        async with gi.Session(
            lanes=lanes, spend_cap=150, resend_uncertain_creates=True, remember=False
        ) as session:
            results = await session.generate_many(requests, return_exceptions=True)
            spend = session.stats.spend
    assert spend is not None and spend.spent is not None and spend.reserved is not None
    made = _cost(sim, prices)
    assert sim.stats.duplicates > 0  # resends did make second runs
    assert made <= 150
    # What may have been paid (spent + maybe paid) covers what was made.
    assert made <= spend.spent + spend.reserved <= 150
    assert any(isinstance(r, gi.SpendCapError) for r in results)


# -- 2. the same key twice is refused, whatever the base URLs ---------------------------------


async def test_the_same_key_at_two_base_urls_is_refused_naming_both_labels() -> None:
    async with Simulator(sim_config()) as sim:
        first = sim.base_url("runbase")
        other = first.replace("127.0.0.1", "localhost")
        lanes = [
            gi.Lane("runbase", "sk-fix-same", base_url=first, label="x"),
            gi.Lane("runbase", "sk-fix-same", base_url=other, label="y"),
        ]
        with pytest.raises(gi.ConfigurationError) as info:
            gi.Session(lanes=lanes, remember=False)
        assert sim.stats.requests == 0
    message = str(info.value)
    assert "'x' and 'y' are the same key" in message
    assert first in message and other in message
    assert "sk-fix-same" not in message


# -- 3. lanes that cannot be reached cool, and a job on them ends in seconds ------------------


def _dead_port() -> int:
    """A loopback port nothing listens on: every connect is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_failures_in_a_row_make_a_cooling_lane_unreachable() -> None:
    health = LaneHealth(rng=random.Random(0))
    refused = gi.APIConnectionError("could not connect")
    decision = failover(refused, maybe_received=False)
    assert decision == Failover(LaneAction.COOL, CreateMove.MOVE)  # cools, never closes
    for n in range(UNREACHABLE_AFTER):
        assert not health.unreachable(float(n))
        health.apply(refused, decision, float(n))
    now = float(UNREACHABLE_AFTER - 1)
    assert health.state(now) is LaneState.COOLING and health.cause is None
    assert health.unreachable(now) and health.cooling_cause is refused
    # Its cooling over, a create may try it again (half-open); an answer resets it.
    assert not health.unreachable(health.cooling_until)
    server = gi.APIStatusError("boom", status_code=500)
    health.apply(server, failover(server, maybe_received=False), now)
    assert not health.unreachable(now)


async def test_a_job_on_lanes_that_cannot_connect_ends_soon_naming_each_lane(
    fake_clock: FakeClock,
) -> None:
    root = f"http://127.0.0.1:{_dead_port()}"
    lanes = [
        gi.Lane("runbase", "sk-dead-a", base_url=root, label="a", prices=PRICES),
        gi.Lane("runbase", "sk-dead-b", base_url=root, label="b", prices=PRICES),
        gi.Lane("apiinone", "aio_dead_c", base_url=root, label="c"),
    ]
    session = gi.Session(lanes=lanes, remember=False, resend_uncertain_creates=True)
    async with session:
        started = asyncio.get_running_loop().time()
        results = await fake_clock.run(
            session.generate_many([f"dead {i}" for i in range(20)], return_exceptions=True)
        )
        took = asyncio.get_running_loop().time() - started
        sent = session.stats.requests
        spend = session.stats.spend
        states = [view.state for view in session.lanes]
        every_lane_unreachable = session.cannot_connect()
    assert all(isinstance(r, gi.PoolExhaustedError) for r in results), results
    assert every_lane_unreachable
    # One connect per lane and create until the lane is unreachable, then one try
    # each time its cooling ends (half-open): fewer connects than creates x lanes.
    # Before: every create tried every lane max_attempts times, over backoffs.
    assert sent < len(results) * len(lanes), (sent, took)
    assert gi.LaneState.CLOSED not in states  # connection failures cool, never close
    last = results[-1]
    assert isinstance(last, gi.PoolExhaustedError)
    assert str(last).startswith("no lane of the pool can take it (a (")
    assert set(last.why) <= {"unreachable", "failed this create"}
    assert "unreachable" in last.why
    assert all(isinstance(err, gi.APIConnectionError) for _, err in last.causes)
    # Never left: nothing is maybe paid, even with resend_uncertain_creates=True.
    assert spend is not None
    assert all(spent == reserved == 0 for _, spent, reserved in spend.by_unit)
    assert all(lane.uncertain == 0 for lane in spend.lanes)


# -- 4. a pool's learned state is keyed by provider, key and base URL -------------------------


async def test_one_key_at_two_base_urls_keeps_two_state_files(tmp_path: Path) -> None:
    state = tmp_path / "pool.json"
    async with Simulator(sim_config()) as sim:
        first = sim.base_url("runbase")
        other = first.replace("127.0.0.1", "localhost")
        for root in (first, other):  # two jobs, each a pool of two, sharing key sk-fix-s
            lanes = [
                gi.Lane("runbase", "sk-fix-s", base_url=root, label="s"),
                gi.Lane("runbase", f"sk-fix-{root[7]}", base_url=root, label="t"),
            ]
            async with gi.Session(lanes=lanes, state_file=state) as session:
                await session.generate_many(["a", "b"])
    shared = [gi.Lane("runbase", "sk-fix-s", base_url=root) for root in (first, other)]
    paths = [lane_state_file(state, lane) for lane in shared]
    assert paths[0] != paths[1] and all(path.exists() for path in paths)
    for lane, path in zip(shared, paths, strict=True):
        assert path.name.startswith(f"pool.{lane.fingerprint}-")
        assert lane.base_url.encode() in path.read_bytes()  # each file its own URL's state
        assert b"sk-fix" not in path.read_bytes()


def test_a_state_file_of_the_old_name_is_taken_over_once(tmp_path: Path) -> None:
    lane = gi.Lane("runbase", "sk-fix-old", base_url="http://127.0.0.1:9/api/v1")
    old = tmp_path / f"pool.{lane.fingerprint}.json"
    old.write_bytes(b"learned before")
    path = lane_state_file(tmp_path / "pool.json", lane)
    assert path.read_bytes() == b"learned before" and not old.exists()
    old.write_bytes(b"another process, later")
    assert lane_state_file(tmp_path / "pool.json", lane).read_bytes() == b"learned before"


# -- 5. a request goes to a lane that accepts it ---------------------------------------------


async def test_a_prompt_api_in_one_refuses_goes_to_the_runbase_lane() -> None:
    keys = {"sk-fix-rb": KeyConfig(), "aio_fix_c": KeyConfig()}
    async with Simulator(sim_config(keys=keys)) as sim:
        lanes = [
            gi.Lane("runbase", "sk-fix-rb", base_url=sim.base_url("runbase"), label="rb",
                    prices={"medium": 50, "high": 90}),
            gi.Lane("apiinone", "aio_fix_c", base_url=sim.base_url("apiinone"), label="aio"),
        ]  # fmt: skip
        async with gi.Session(lanes=lanes, routing="cheapest", remember=False) as session:
            short = await session.submit("ab")  # API in One needs 3-5000 characters
            normal = await session.submit("a lamp")
            await short
            await normal
    assert short.lane == f"runbase:{lanes[0].fingerprint}"
    assert normal.lane == f"apiinone:{lanes[1].fingerprint}"  # the cheaper lane otherwise
    assert sim.stats.key("aio_fix_c").create_requests == 1


async def test_a_request_no_open_lane_accepts_ends_before_anything_is_sent() -> None:
    keys = {
        "sk-fix-broke": KeyConfig(credits=0),
        "aio_fix_d": KeyConfig(),
        "aio_fix_e": KeyConfig(),
    }
    async with Simulator(sim_config(keys=keys)) as sim:
        rb = gi.Lane(
            "runbase", "sk-fix-broke", base_url=sim.base_url("runbase"), label="rb", prices=PRICES
        )  # cheaper than aio: tried first
        aio = gi.Lane("apiinone", "aio_fix_d", base_url=sim.base_url("apiinone"), label="aio")
        aio2 = gi.Lane("apiinone", "aio_fix_e", base_url=sim.base_url("apiinone"), label="aio2")
        async with gi.Session(lanes=[aio, aio2], remember=False) as session:
            with pytest.raises(gi.InvalidRequestError, match="API in One needs a prompt of 3-"):
                await session.submit("ab")  # every lane refuses it: the provider's own words
        async with gi.Session(lanes=[rb, aio], remember=False) as session:
            moved = await session.submit("a lamp")  # 402 on rb closes it; made on aio
            await moved
            with pytest.raises(gi.PoolExhaustedError) as info:
                await session.submit("ab")
        asked = sim.stats.create_requests
    assert moved.lane == f"apiinone:{aio.fingerprint}"
    assert info.value.why == ("closed", "refuses this request")
    assert "aio (refuses this request): InvalidRequestError API in One needs" in str(info.value)
    assert asked == 2  # the 402, and "a lamp" on aio; "ab" was never sent


# -- 6. credits are never added to the user's price units -------------------------------------


async def test_a_spend_cap_over_two_units_is_refused_before_anything_is_sent() -> None:
    async with Simulator(sim_config()) as sim:
        lanes = [
            _lane(sim, "sk-fix-u", "rb", prices=PRICES),  # the user's unit
            gi.Lane("apiinone", "aio_fix_u", base_url=sim.base_url("apiinone"), label="aio"),
        ]
        with pytest.raises(gi.ConfigurationError) as info:
            gi.Session(lanes=lanes, spend_cap=300, remember=False)
        assert sim.stats.requests == 0
        # Prices given to the API in One lane too: one unit (the user's), accepted.
        same = gi.Lane("apiinone", "aio_fix_u", base_url=sim.base_url("apiinone"),
                       label="aio", prices={"medium": 10, "high": 28})  # fmt: skip
        async with gi.Session(lanes=[lanes[0], same], spend_cap=300, remember=False) as ok:
            await ok.generate("a lamp")
            assert ok.stats.spend is not None and ok.stats.spend.by_unit[0][0] == "price units"
    assert "'rb' in price units; 'aio' in credits" in str(info.value)


async def test_spend_over_two_units_is_totalled_per_unit() -> None:
    keys = {"sk-fix-v": KeyConfig(), "aio_fix_v": KeyConfig()}
    async with Simulator(sim_config(keys=keys)) as sim:
        lanes = [
            _lane(sim, "sk-fix-v", "rb", prices=PRICES, rate_limit=SPREAD),
            _lane(sim, "aio_fix_v", "aio", rate_limit=SPREAD),
        ]
        async with gi.Session(lanes=lanes, remember=False) as session:
            runs = [await session.submit(f"vase {i}", quality="high") for i in range(6)]
            for run in runs:
                await run
            spend = session.stats.spend
            lines = session_spend_lines(session)
    assert spend is not None
    made = {lane.label: lane.created for lane in spend.lanes}
    assert made["rb"] and made["aio"], made  # both lanes took some
    assert spend.spent is None  # never credits + price units
    assert dict((unit, spent) for unit, spent, _ in spend.by_unit) == {
        "price units": 11.0 * made["rb"],
        "credits": 28.0 * made["aio"],
    }
    assert [lane.unit for lane in spend.lanes] == ["price units", "credits"]
    assert lines[0] == (
        f"spend: {11 * made['rb']} price units + {28 * made['aio']} credits in all "
        "(different units, not added)"
    )
    assert lines[2].startswith(
        f"  aio (apiinone:{lanes[1].fingerprint}): {28 * made['aio']} credits"
    )


# -- 7. the simulator and the library agree on refunds ----------------------------------------


async def test_failed_runs_cost_the_same_in_the_simulator_and_in_the_spend() -> None:
    # Runbase documents refunds of failed runs; API in One does not: both sides
    # refund the first and keep the second charged.
    keys = {"sk-fix-r": KeyConfig(), "aio_fix_r": KeyConfig()}
    async with Simulator(sim_config(keys=keys, failure_rate=1.0)) as sim:
        lanes = [
            _lane(sim, "sk-fix-r", "rb", prices={"medium": 10, "high": 28}, rate_limit=SPREAD),
            _lane(sim, key="aio_fix_r", label="aio", prices={"medium": 10}, rate_limit=SPREAD),
        ]
        async with gi.Session(lanes=lanes, remember=False) as session:
            results = await session.generate_many(
                [f"doomed {i}" for i in range(8)], return_exceptions=True
            )
            spend = session.stats.spend
        charged = {key: sim.spent(key) for key in keys}
    assert all(isinstance(r, gi.RunFailedError) for r in results), results
    assert spend is not None
    rb, aio = spend.lanes
    assert rb.created and aio.created, (rb, aio)
    assert (rb.refunded, rb.spent) == (rb.created, 0.0)
    assert (aio.refunded, aio.spent) == (0, 10.0 * aio.created)
    assert charged == {"sk-fix-r": rb.spent, "aio_fix_r": aio.spent}
