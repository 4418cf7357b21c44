"""A bulk job's last creates go ahead of polls, so its end is not an idle budget.

Against the simulator in memory (``memory_session``), on the fake loop clock,
with time compressed 100-fold: runs of 30-100 ms under Runbase's default limit (20 per 100 ms).
What is checked is the order the server saw, not how long anything took: runs
that had finished before the job's last create are polled after it (their
polls were held back to fill the budget while the last runs were going).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import memory_session

from ._clock import FakeClock

RUNS = 160
CONFIG = SimulatorConfig(time_scale=0.01, seed=11)


def _prompts(n: int) -> list[str]:
    return [f"a lamp, variation {i}" for i in range(n)]


def _generated(n: int) -> Iterator[str]:
    yield from _prompts(n)


async def _as_completed_list(session: gi.Session) -> int:
    return len([run async for run in session.as_completed(_prompts(RUNS)) if run.error is None])


async def _as_completed_generator(session: gi.Session) -> int:
    return len([run async for run in session.as_completed(_generated(RUNS)) if run.error is None])


async def _generate_many(session: gi.Session) -> int:
    return len(await session.generate_many(_prompts(RUNS)))


async def _batch(session: gi.Session, out: Path) -> int:
    prompts = [gi.BatchPrompt(i + 1, gi.ImageRequest(p)) for i, p in enumerate(_prompts(RUNS))]
    report = await gi.Batch(session, prompts, out, download=False).run()
    return report.counts["succeeded"]


def _held_polls(sim: Simulator) -> int:
    """Runs done before the job's last create but seen done only after it."""
    runs = list(sim.runs.values())
    last_create = max(run.created_at for run in runs)
    return sum(
        1
        for run in runs
        if run.finishes_at < last_create
        and run.first_seen_done_at is not None
        and run.first_seen_done_at > last_create
    )


@pytest.mark.parametrize(
    "job",
    [_as_completed_list, _as_completed_generator, _generate_many],
    ids=["as_completed(list)", "as_completed(generator)", "generate_many"],
)
async def test_the_last_creates_go_first_and_held_polls_fill_the_end(
    fake_clock: FakeClock,
    job: Callable[[gi.Session], AsyncIterator[int]],
) -> None:
    async def body() -> tuple[Simulator, int, gi.SessionStats]:
        async with memory_session(config=CONFIG) as (sim, session):
            return sim, await job(session), session.stats  # type: ignore[misc]

    sim, done, stats = await fake_clock.run(body())
    assert done == RUNS
    # The tail is sized as the job goes (rate x duration, both learned).
    assert 0 < stats.tail_creates < RUNS
    assert sim.stats.creates == RUNS  # nothing created twice
    # Polls first until the tail (the old order) leaves at most a few finished
    # runs to poll after the last create; holding them back leaves many.
    assert _held_polls(sim) >= 10


async def test_a_batch_ends_the_same_way(fake_clock: FakeClock, tmp_path: Path) -> None:
    async def body() -> tuple[Simulator, int, gi.SessionStats]:
        async with memory_session(config=CONFIG) as (sim, session):
            return sim, await _batch(session, tmp_path), session.stats

    sim, done, stats = await fake_clock.run(body())
    assert done == RUNS
    assert stats.tail_creates > 0
    assert _held_polls(sim) >= 10


async def test_a_create_marked_last_goes_ahead_of_due_polls(fake_clock: FakeClock) -> None:
    # Public surface: submit(ahead_of_polls=True) is what the bulk verbs use.
    async def body() -> Simulator:
        async with memory_session(config=CONFIG) as (sim, session):
            runs = [await session.submit(p) for p in _prompts(3)]
            last = await session.submit("the last lamp", ahead_of_polls=True)
            for run in [*runs, last]:
                await run
            assert session.stats.tail_creates == 1
        return sim

    assert (await fake_clock.run(body())).stats.creates == 4
