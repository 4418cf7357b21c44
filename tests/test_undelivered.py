"""Runs a bulk call had resolved but never handed over: kept in ``runs.undelivered`` and named.

A ``generate_many`` cut short (an exception beside it, a cancellation, the
session's close) drops the runs it had and had not returned yet: they were
paid for, so the session keeps them (results included) and its closing
WARNING names them, next to the runs still in flight it abandons.

The cut ones run in memory on the fake clock (``memory_session``): they are
about the session's bookkeeping, not sockets, so their waits cost no wall time.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator
from gptimage_async.testing import TEST_KEYS, memory_session

from ._clock import FakeClock
from .helpers import config

RATE = gi.RateLimit(100, per=1.0)


def warned(caplog: pytest.LogCaptureFixture, marker: str) -> set[str]:
    """The run ids one WARNING containing ``marker`` names (``id (status)`` or ``id``)."""
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and marker in r.getMessage()
    ]
    assert len(lines) == 1, lines
    return {item.split(" ")[0] for item in lines[0].rpartition(": ")[2].split(", ")}


async def until(condition: object) -> None:
    """Until ``condition()`` holds: a look every 5 ms of fake time, for at most 30 fake s."""
    assert callable(condition)
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 - fake time, bounded by the timeout
            await asyncio.sleep(0.005)


def session_for(sim: Simulator) -> gi.Session:
    return gi.Session(
        base_url=sim.base_url("runbase"), api_key=TEST_KEYS["runbase"], rate_limit=RATE
    )


async def test_an_exception_beside_generate_many_names_every_run_it_held(
    caplog: pytest.LogCaptureFixture, fake_clock: FakeClock
) -> None:
    caplog.set_level(logging.WARNING, logger="gptimage_async")

    async def body() -> tuple[Simulator, gi.Session]:
        with pytest.raises(LookupError):  # noqa: PT012 - raised inside the session's block
            async with memory_session(config=config(rate_limit=None), rate_limit=RATE) as (
                sim,
                session,
            ):

                async def boom() -> None:
                    await until(lambda: session.runs.counts()["succeeded"] >= 10)
                    raise LookupError("the app's own bug")

                await asyncio.gather(session.generate_many([f"cup {i}" for i in range(60)]), boom())
        return sim, session

    sim, session = await fake_clock.run(body())
    undelivered = session.runs.undelivered
    abandoned = session.runs.abandoned
    assert len(undelivered) >= 10
    for run in undelivered:
        assert run.status is gi.RunStatus.SUCCEEDED
        assert run.outcome is not None and run.outcome.run_id == run.id  # the result is kept
    undelivered_ids = {run.id for run in undelivered}
    abandoned_ids = {run.id for run in abandoned}
    # Every run paid for is named once: delivered to nobody, or abandoned in flight.
    assert not undelivered_ids & abandoned_ids
    assert undelivered_ids | abandoned_ids == set(sim.runs)
    assert warned(caplog, "never reached their caller") == undelivered_ids
    if abandoned:
        assert warned(caplog, "still in flight") == abandoned_ids


async def test_a_generate_many_that_returns_leaves_nothing_undelivered() -> None:
    async with Simulator(config(rate_limit=None)) as sim, session_for(sim) as session:
        results = await session.generate_many([f"cup {i}" for i in range(5)])
        assert len(results) == 5
    assert session.runs.undelivered == []


async def test_a_cancelled_generate_many_keeps_its_finished_runs_while_the_session_stays_open(
    caplog: pytest.LogCaptureFixture, fake_clock: FakeClock
) -> None:
    caplog.set_level(logging.WARNING, logger="gptimage_async")

    async def body() -> tuple[Simulator, gi.Session]:
        async with memory_session(config=config(rate_limit=None), rate_limit=RATE) as (
            sim,
            session,
        ):
            task = asyncio.create_task(session.generate_many([f"cup {i}" for i in range(40)]))
            await until(lambda: session.runs.counts()["succeeded"] >= 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            held = session.runs.undelivered
            assert len(held) >= 5
            assert all(run.status is gi.RunStatus.SUCCEEDED for run in held)
            assert [run.created_at for run in held] == sorted(run.created_at for run in held)
        return sim, session

    sim, session = await fake_clock.run(body())
    # The close waited for the runs in flight at the cut: they ended, and were never
    # handed over either. Every run the call paid for is held, and named.
    assert {run.id for run in session.runs.undelivered} == set(sim.runs)
    assert warned(caplog, "never reached their caller") == set(sim.runs)
    assert session.runs.abandoned == []


async def test_as_completed_closed_early_keeps_the_runs_it_had_not_yielded(
    fake_clock: FakeClock,
) -> None:
    async def body() -> None:
        async with memory_session(config=config(rate_limit=None), rate_limit=RATE) as (
            _sim,
            session,
        ):
            runs = session.as_completed([f"cup {i}" for i in range(30)], concurrency=30)
            first = await anext(runs)
            await until(lambda: session.runs.counts()["succeeded"] >= 10)
            await runs.aclose()
            held = {run.id for run in session.runs.undelivered}
            assert first.id not in held  # it was handed over
            assert len(held) >= 8

    await fake_clock.run(body())
