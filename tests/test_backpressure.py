"""``as_completed`` and ``generate_many`` stop creating when their consumer stops pulling.

Issue 11, item 3. The small input: ``runs = session.as_completed(200 prompts)``,
``break`` after the first, ``runs`` still referenced: creates must stop at the
window ahead of the consumer, whether or not the generator is closed. In
memory on the fake clock: "nothing more was created" is checked after 30 s
of fake time, at no wall-clock cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

import pytest

import gptimage_async as gi
from gptimage_async._bulk import FEEDERS, WINDOW_FACTOR
from gptimage_async.simulator import SimulatorConfig
from gptimage_async.testing import DEFAULT_TIME_SCALE, memory_session

from ._clock import FakeClock

PROMPTS = [f"a lamp, take {i}" for i in range(200)]


def _default_window(requests_per_window: int = 20) -> int:
    # The simulated key's budget: Runbase's 20 requests per (scaled) window.
    return max(FEEDERS, int(WINDOW_FACTOR * requests_per_window))


#: The belief held at Runbase's 20 requests per window (a ceiling: it does not probe
#: upward), so the window stays near ``_default_window()`` throughout.
CEILING = gi.RateLimit(20, 10.0 * DEFAULT_TIME_SCALE, ceiling=True)
CONFIG = SimulatorConfig(time_scale=DEFAULT_TIME_SCALE, seed=11)
#: The window follows the learned p95 run duration, about ``per`` here (runs last
#: at most 10 provider seconds = ``per``); a run's end is seen a poll late, so
#: the bound allows twice the window.
MAX_AHEAD = 1 + 2 * _default_window()


async def test_break_without_closing_stops_the_creates(fake_clock: FakeClock) -> None:
    async def body() -> None:
        async with memory_session(config=CONFIG, rate_limit=CEILING) as (sim, session):
            runs = session.as_completed(PROMPTS)
            async for _run in runs:
                break
            await asyncio.sleep(1.0)  # fake: ~50 s of provider time, enough to create all 200
            created = len(sim.runs)
            assert created <= MAX_AHEAD
            assert created < len(PROMPTS) / 3
            await asyncio.sleep(30.0)
            assert len(sim.runs) == created  # stopped, not slowed
            await runs.aclose()

    await fake_clock.run(body())


@pytest.mark.parametrize("concurrency", [1, 5, 40])
async def test_the_window_is_the_concurrency_when_given(
    fake_clock: FakeClock, concurrency: int
) -> None:
    async def body() -> None:
        async with memory_session() as (sim, session):
            runs = session.as_completed(PROMPTS, concurrency=concurrency)
            taken = 0
            async for _run in runs:
                taken += 1
                if taken == 3:
                    break
            await asyncio.sleep(30.0)  # fake time: every create that could go, went
            assert len(sim.runs) <= taken + concurrency
            await runs.aclose()

    await fake_clock.run(body())


async def test_a_slow_consumer_is_never_more_than_the_window_behind(fake_clock: FakeClock) -> None:
    async def body() -> int:
        async with memory_session() as (sim, session):
            taken = 0
            async with contextlib.aclosing(
                session.as_completed(PROMPTS[:60], concurrency=4)
            ) as runs:
                async for _run in runs:
                    taken += 1
                    assert len(sim.runs) <= taken + 4 - 1 + 1
                    await asyncio.sleep(0.02)  # fake: a consumer slower than the runs
        return taken

    assert await fake_clock.run(body()) == 60


async def test_aclosing_stops_everything_at_once(fake_clock: FakeClock) -> None:
    async def body() -> None:
        async with memory_session(config=CONFIG, rate_limit=CEILING) as (sim, session):
            async with contextlib.aclosing(session.as_completed(PROMPTS)) as runs:
                async for _run in runs:
                    break
            created = len(sim.runs)
            await asyncio.sleep(30.0)
            assert len(sim.runs) == created <= MAX_AHEAD

    await fake_clock.run(body())


async def test_a_consumer_that_keeps_pulling_gets_everything(fake_clock: FakeClock) -> None:
    async def body() -> None:
        async with memory_session() as (sim, session):
            results = await session.generate_many(PROMPTS[:80])
            assert len(results) == 80 and len(sim.runs) == 80
            seen = [run.index async for run in session.as_completed(PROMPTS[:50])]
            assert sorted(seen) == list(range(50))

    await fake_clock.run(body())


async def test_a_generator_dropped_unclosed_is_finalized_cleanly(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with memory_session() as (sim, session):
            runs = session.as_completed(PROMPTS[:50])
            async for _run in runs:
                break
            del runs
            gc.collect()  # the loop's asyncgen hook closes it
            await asyncio.sleep(0.2)
            created = len(sim.runs)
            await asyncio.sleep(30.0)
            assert len(sim.runs) == created

    await fake_clock.run(body())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
