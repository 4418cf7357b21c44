"""A pool's lanes as the user sees them (``session.lanes``), and a closure's expiry.

The real simulator over HTTP on 127.0.0.1, serving several keys. The expiry
is timed on the fake loop clock (``tests/_clock.py``): the clock stands still
while sockets deliver (``wait_for``), and jumps five minutes in no wall time.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import gptimage_async as gi
from gptimage_async._pool import CLOSED_TTL, LaneHealth
from gptimage_async._views import lane_status
from gptimage_async.simulator import KeyConfig, Simulator
from tests._clock import FakeClock
from tests.helpers import config as sim_config

T = TypeVar("T")
PACKAGE = Path(gi.__file__).parent
TESTS = Path(__file__).parent


def lane(sim: Simulator, key: str, **options: Any) -> gi.Lane:
    return gi.Lane(
        "runbase",
        key,
        base_url=sim.base_url("runbase"),
        rate_limit=gi.RateLimit(1000, 1.0),
        **options,
    )


async def on_sockets(clock: FakeClock, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` while sockets deliver, the fake clock standing still."""
    task = asyncio.ensure_future(awaitable)
    await clock.wait_for(task.done)
    return task.result()


async def test_session_lanes_show_each_lane_and_its_state(fake_clock: FakeClock) -> None:
    keys = {"sk-broke": KeyConfig(credits=0), "sk-paid": KeyConfig()}
    async with Simulator(sim_config(keys=keys)) as sim:
        root = sim.base_url("runbase")
        session = gi.Session(
            lanes=[lane(sim, "sk-broke", label="broke"), lane(sim, "sk-paid")],
            remember=False,
            on_exit="cancel",
        )
        before = session.lanes  # readable before open: every lane open
        assert [view.state for view in before] == [gi.LaneState.OPEN] * 2
        await on_sockets(fake_clock, session.open())
        try:
            run = await on_sockets(fake_clock, session.submit("a lamp"))
            broke, paid = session.lanes
        finally:
            await on_sockets(fake_clock, session.aclose(cancel=True))
    assert isinstance(broke, gi.LaneStatus)
    spec = gi.Lane("runbase", "sk-broke")
    assert (broke.label, broke.provider, broke.fingerprint) == (
        "broke",
        "runbase",
        spec.fingerprint,
    )
    assert broke.lane == f"runbase:{spec.fingerprint}" and broke.base_url == root
    assert paid.label == paid.lane == run.lane  # the default label is the run's lane
    # Refused with 402: closed for new creates, for CLOSED_TTL, with its cause.
    assert broke.state is gi.LaneState.CLOSED
    assert isinstance(broke.cause, gi.InsufficientCreditsError)
    assert broke.closed_until == pytest.approx(CLOSED_TTL)
    assert paid.state is gi.LaneState.OPEN and paid.cause is None and paid.closed_until is None
    assert broke.price("high") is None  # Runbase publishes no price
    with pytest.raises(AttributeError):
        broke.state = gi.LaneState.OPEN  # type: ignore[misc]
    assert "sk-broke" not in repr(broke)


async def test_a_closed_lane_opens_again_after_closed_ttl(fake_clock: FakeClock) -> None:
    # A long-lived process (a web app) must try a topped-up key again, without Redis.
    keys = {"sk-a": KeyConfig(credits=0), "sk-b": KeyConfig(credits=0)}
    async with Simulator(sim_config(keys=keys)) as sim:
        session = gi.Session(
            lanes=[lane(sim, "sk-a"), lane(sim, "sk-b")], remember=False, on_exit="cancel"
        )
        await on_sockets(fake_clock, session.open())
        try:
            with pytest.raises(gi.PoolExhaustedError):
                await on_sockets(fake_clock, session.submit("refused by both"))
            asked = sim.stats.create_requests
            assert asked == 2
            sim.set_key("sk-a", credits=1000)  # topped up
            await fake_clock.advance(CLOSED_TTL - 1.0)
            assert [view.state for view in session.lanes] == [gi.LaneState.CLOSED] * 2
            with pytest.raises(gi.PoolExhaustedError):
                await on_sockets(fake_clock, session.submit("still closed"))
            assert sim.stats.create_requests == asked  # nothing sent: closed lanes are not asked
            await fake_clock.advance(1.0)
            assert [view.state for view in session.lanes] == [gi.LaneState.OPEN] * 2
            run = await on_sockets(fake_clock, session.submit("after the top-up"))
        finally:
            await on_sockets(fake_clock, session.aclose(cancel=True))
    assert run.lane == f"runbase:{gi.Lane('runbase', 'sk-a').fingerprint}"
    assert sim.stats.key("sk-a").creates == 1
    assert sim.stats.duplicates == 0


def test_nothing_outside_the_session_reads_its_lanes() -> None:
    # session.lanes is the public, read-only view; _lanes is the session's own.
    allowed = {"_session.py", "_bulk_verbs.py"}  # Session and its base class
    readers = [
        str(path)
        for root in (PACKAGE, TESTS)
        for path in root.rglob("*.py")
        if path.name not in allowed
        and re.search(r"\b(?!self\b|_pool\b)\w+\._lanes\b", path.read_text())
    ]
    assert readers == []


def test_a_cooling_lane_shows_until_when() -> None:
    spec = gi.Lane("runbase", "sk-cool", prices={"medium": 4})
    health = LaneHealth(rng=random.Random(0))
    until = health.cool(10.0, retry_after=30.0)
    cooling = lane_status(spec, health, 20.0)
    assert (cooling.state, cooling.cooling_until, cooling.closed_until) == (
        gi.LaneState.COOLING,
        until,
        None,
    )
    assert cooling.price() == 4 and cooling.price("high") is None
    assert lane_status(spec, health, until).state is gi.LaneState.OPEN


def test_only_a_connection_never_made_makes_a_lone_lane_unreachable() -> None:
    """A lane of one is unreachable after refused connections, never after timeouts.

    A create that timed out before it was written to a slow but live server
    (a loaded machine, a slow accept) never left either; calling the lane
    unreachable for it would end a single key's creates at once, unsent.
    """
    from gptimage_async._transport._protocol import SendError

    timed_out = SendError(
        "POST /images/generations timed out: no answer within 0.25s", maybe_received=False
    )
    health = LaneHealth(rng=random.Random(0))
    for error in (timed_out, timed_out.public()) * 5:
        assert not health.unanswered(error, 1.0)
    refused = SendError(
        "could not connect to http://127.0.0.1:1: refused", maybe_received=False, unreachable=True
    ).public()
    assert isinstance(refused, gi.APIConnectionError) and type(refused) is gi.APIConnectionError
    assert [health.unanswered(refused, 1.0) for _ in range(3)] == [False, False, True]
