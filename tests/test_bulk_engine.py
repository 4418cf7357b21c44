"""The one bulk engine (``_bulk``): the tail rule, and the clean stop every bulk job shares.

Against the simulator as a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio

import pytest

import gptimage_async as gi
from gptimage_async._bulk import Countdown, Sender, TailRule, is_last
from gptimage_async.simulator import Faults, SimulatorConfig
from gptimage_async.testing import simulated_session


def _drain(countdown: Countdown[int]) -> list[bool]:
    marks = []
    while True:
        try:
            marks.append(countdown.take()[1])
        except StopIteration:
            return marks


@pytest.mark.parametrize(("size", "waiting"), [(3, 0), (3, 1), (3, 5), (20, 0), (1, 0)])
def test_the_tail_rule_marks_the_last_creates_less_those_already_waiting(
    size: int, waiting: int
) -> None:
    rule = TailRule(lambda: size, lambda: waiting)
    left = max(0, size - waiting)
    assert rule.size() == size and rule.left() == left
    marks = _drain(rule.countdown(list(range(10))))
    # One rule for every caller: a countdown and a direct question agree.
    assert marks == [rule.marks(before=i, after=9 - i) for i in range(10)]
    assert marks == [is_last(before=i, after=9 - i, tail=left, longer_than=size) for i in range(10)]
    assert sum(marks) == (min(left, 10) if size < 10 else 0)


def test_a_session_gives_its_tail_rule_and_its_resend_choice() -> None:
    session = gi.Session("runbase", api_key="sk-x", resend_uncertain_creates=True)
    assert session.resends_uncertain_creates is True
    rule = session.tail_rule()
    assert rule.size() == session.tail_size() == 1  # not open: no belief yet
    assert gi.Session("runbase", api_key="sk-x").resends_uncertain_creates is False


async def test_after_stop_nothing_is_created() -> None:
    # One create a second: the first goes out, four wait in the rate limiter.
    config = SimulatorConfig(time_scale=1.0, rate_limit=None, seed=2)
    async with simulated_session(
        config=config, rate_limit=gi.RateLimit(1, 1.0), on_exit="cancel"
    ) as (sim, session):
        sender = Sender(session.submit)
        first = asyncio.Event()
        sends = [
            asyncio.ensure_future(sender.send(gi.ImageRequest(f"p{i}"), on_send=first.set))
            for i in range(5)
        ]
        await first.wait()  # the first create goes on the wire
        sender.stop()
        results = await asyncio.gather(*sends)
        created = [run for run in results if run is not None]
        assert len(created) == 1 and created[0].id in sim.runs
        assert sender.on_wire == 0
        assert await sender.send(gi.ImageRequest("after")) is None
        assert sim.stats.create_requests == 1
        assert created[0] in list(session.runs)  # created runs stay tracked by the session


async def test_a_create_on_the_wire_at_the_stop_is_let_be_answered() -> None:
    # Every answer held 0.3 s: the create is on the wire when stop() comes.
    config = SimulatorConfig(
        time_scale=1.0, rate_limit=None, seed=2, faults=Faults(slow=1.0, slow_seconds=0.3)
    )
    async with simulated_session(
        config=config, rate_limit=gi.RateLimit(100, 1.0), on_exit="cancel"
    ) as (sim, session):
        sender = Sender(session.submit)
        journal: list[str] = []
        intent = asyncio.Event()

        def on_send() -> None:
            journal.append("intent")
            intent.set()

        sending = asyncio.ensure_future(sender.send(gi.ImageRequest("a lamp"), on_send=on_send))
        await intent.wait()
        await asyncio.sleep(0)  # the Sender counts it on the wire as on_send returns
        assert journal == ["intent"] and sender.on_wire == 1
        sender.stop()
        run = await sending
        assert run is not None and run.id in sim.runs  # paid for, and known by its id
        assert sender.on_wire == 0


async def test_an_on_send_that_fails_sends_nothing() -> None:
    async with simulated_session() as (sim, session):
        sender = Sender(session.submit)

        def full_disk() -> None:
            raise OSError(28, "No space left on device")

        with pytest.raises(OSError, match="No space"):
            await sender.send(gi.ImageRequest("a lamp"), on_send=full_disk)
        assert sender.on_wire == 0 and sim.stats.create_requests == 0
