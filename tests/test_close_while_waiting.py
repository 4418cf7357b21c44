"""Closing a session while creates wait for the rate limiter (issue 20: nothing paid and lost).

A create still waiting for its slot when ``aclose`` begins must never go on
the wire: it ends with ``SessionClosedError`` (certainly not created). A
create already on the wire is let finish, so its run gets an id to report.
Every caller learns the id of every run the simulator created. All in fake
time, on the in-memory transport onto the real simulator.
"""

from __future__ import annotations

import asyncio

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, SimulatorConfig
from gptimage_async.testing import memory_session

from ._clock import FakeClock

CALLERS = 32
TIGHT = gi.RateLimit(4, 1.0)  # four creates go at once, the rest wait for slots


def _config(slow: float) -> SimulatorConfig:
    # Runs far longer than the test: none finishes; a slow answer keeps a create
    # on the wire (its run already exists) for 2 s.
    return SimulatorConfig(
        time_scale=1.0,
        duration_min=500.0,
        duration_max=600.0,
        duration_median=550.0,
        rate_limit=None,
        faults=Faults(slow=slow, slow_seconds=2.0),
        seed=7,
    )


@pytest.mark.parametrize("slow", [0.0, 1.0], ids=["creates-answered", "creates-on-the-wire"])
@pytest.mark.parametrize("provider", ["runbase", "apiinone"])
async def test_closing_with_cancel_sends_no_waiting_create(
    fake_clock: FakeClock, provider: str, slow: float
) -> None:
    async with memory_session(provider, config=_config(slow), rate_limit=TIGHT) as (  # type: ignore[arg-type]
        sim,
        session,
    ):
        callers = [asyncio.create_task(session.generate(f"a lamp {i}")) for i in range(CALLERS)]
        await fake_clock.advance(0.6)  # a few creates sent; most wait for the limiter
        sent_before_close = sim.stats.create_requests
        assert 0 < sent_before_close < CALLERS
        await fake_clock.run(session.aclose(cancel=True))
        outcomes = await fake_clock.run(asyncio.gather(*callers, return_exceptions=True))

    # The creates on the wire were let finish; no waiting create was sent afterwards.
    assert sim.stats.create_requests == sent_before_close
    learned: set[str] = set()
    never_created = 0
    for outcome in outcomes:
        # A typed error for every caller: none of them cancelled anything.
        assert isinstance(outcome, gi.SessionClosedError), repr(outcome)
        if outcome.run_id is None:
            never_created += 1
        else:
            learned.add(outcome.run_id)
    assert set(sim.runs) == learned  # every run paid for has an id its caller knows
    assert {run.run_id for run in session.runs.abandoned} == learned
    assert never_created == CALLERS - len(learned) > 0


async def test_a_create_granted_while_closing_is_not_sent(fake_clock: FakeClock) -> None:
    # Closing without cancel waits for runs in flight; a create that gets its
    # slot meanwhile is not sent (closing means no new run, so no lost one).
    slow_budget = gi.RateLimit(1, 10.0)
    async with memory_session(config=_config(0.0), rate_limit=slow_budget) as (sim, session):
        first = asyncio.create_task(session.submit("first"))
        await fake_clock.settle()
        run = first.result()
        late = [asyncio.create_task(session.generate(f"late {i}")) for i in range(4)]
        await fake_clock.settle()
        assert sim.stats.create_requests == 1  # the late ones wait for slots
        closing = asyncio.create_task(session.aclose())
        await fake_clock.advance(50.0)  # every late create's slot comes due
        outcomes = await fake_clock.run(asyncio.gather(*late, return_exceptions=True))
        assert sim.stats.create_requests == 1
        for outcome in outcomes:
            assert isinstance(outcome, gi.SessionClosedError), repr(outcome)
            assert outcome.run_id is None and "not sent" in str(outcome)
        await fake_clock.run(closing)  # the run in flight was waited for
    result = run.outcome
    assert result is not None and result.run_id == run.run_id
    assert set(sim.runs) == {run.run_id}


@pytest.mark.parametrize("slow", [0.0, 1.0], ids=["creates-answered", "creates-on-the-wire"])
@pytest.mark.parametrize("return_exceptions", [True, False])
async def test_generate_many_closed_while_waiting_answers_every_request(
    fake_clock: FakeClock, return_exceptions: bool, slow: float
) -> None:
    async with memory_session(config=_config(slow), rate_limit=TIGHT) as (sim, session):
        many = asyncio.create_task(
            session.generate_many(
                [f"p{i}" for i in range(CALLERS)], return_exceptions=return_exceptions
            )
        )
        await fake_clock.advance(0.6)
        sent_before_close = sim.stats.create_requests
        await fake_clock.run(session.aclose(cancel=True))
        if not return_exceptions:
            with pytest.raises(gi.SessionClosedError):
                await fake_clock.run(many)
            return
        outcomes = await fake_clock.run(many)
    assert sim.stats.create_requests == sent_before_close
    assert len(outcomes) == CALLERS
    assert all(isinstance(outcome, gi.SessionClosedError) for outcome in outcomes)
    learned = {outcome.run_id for outcome in outcomes if outcome.run_id is not None}
    assert learned == set(sim.runs) and learned  # the runs paid for are named
