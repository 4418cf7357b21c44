"""``as_completed`` and ``generate_many`` stop creating when their consumer stops pulling.

Issue 11, item 3. The small input: ``runs = session.as_completed(200 prompts)``, ``break`` after
the first, ``runs`` still referenced: creates must stop at the window ahead
of the consumer, whether or not the generator is closed.
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
from gptimage_async.testing import DEFAULT_TIME_SCALE, simulated_session

PROMPTS = [f"a lamp, take {i}" for i in range(200)]


def _default_window(requests_per_window: int = 20) -> int:
    # The simulated key's budget: Runbase's 20 requests per (scaled) window.
    return max(FEEDERS, int(WINDOW_FACTOR * requests_per_window))


#: The belief held at Runbase's 20 requests per window (a ceiling: it does not probe
#: upward), so the window stays ``_default_window()`` throughout.
CEILING = gi.RateLimit(20, 10.0 * DEFAULT_TIME_SCALE, ceiling=True)
CONFIG = SimulatorConfig(time_scale=DEFAULT_TIME_SCALE)


def _record_windows(session: gi.Session) -> list[int]:
    """Record every window the session computes (it follows the learned p95 run duration)."""
    seen: list[int] = []
    compute = session._default_window

    def recorded() -> int:
        seen.append(compute())
        return seen[-1]

    session._default_window = recorded  # type: ignore[method-assign]
    return seen


async def test_break_without_closing_stops_the_creates() -> None:
    async with simulated_session(config=CONFIG, rate_limit=CEILING) as (sim, session):
        windows = _record_windows(session)
        runs = session.as_completed(PROMPTS)
        async for _run in runs:
            break
        await asyncio.sleep(1.0)  # ~50 s of provider time: enough to create all 200
        created = len(sim.runs)
        assert created <= 1 + max([_default_window(), *windows])
        # The window follows the learned p95 duration, about ``per`` here; on a
        # loaded machine late polls widen it (seen: 1.2x), so the bound is loose.
        assert max(windows, default=0) <= 2 * _default_window()
        assert created < len(PROMPTS) / 3
        await asyncio.sleep(0.3)
        assert len(sim.runs) == created  # stopped, not slowed
        await runs.aclose()


@pytest.mark.parametrize("concurrency", [1, 5, 40])
async def test_the_window_is_the_concurrency_when_given(concurrency: int) -> None:
    async with simulated_session() as (sim, session):
        runs = session.as_completed(PROMPTS, concurrency=concurrency)
        taken = 0
        async for _run in runs:
            taken += 1
            if taken == 3:
                break
        await asyncio.sleep(0.8)
        assert len(sim.runs) <= taken + concurrency
        await runs.aclose()


async def test_a_slow_consumer_is_never_more_than_the_window_behind() -> None:
    async with simulated_session() as (sim, session):
        taken = 0
        async with contextlib.aclosing(session.as_completed(PROMPTS[:60], concurrency=4)) as runs:
            async for _run in runs:
                taken += 1
                assert len(sim.runs) <= taken + 4 - 1 + 1
                await asyncio.sleep(0.02)
        assert taken == 60


async def test_aclosing_stops_everything_at_once() -> None:
    async with simulated_session(config=CONFIG, rate_limit=CEILING) as (sim, session):
        windows = _record_windows(session)
        async with contextlib.aclosing(session.as_completed(PROMPTS)) as runs:
            async for _run in runs:
                break
        created = len(sim.runs)
        await asyncio.sleep(0.5)
        assert len(sim.runs) == created <= 1 + max([_default_window(), *windows])


async def test_a_consumer_that_keeps_pulling_gets_everything() -> None:
    async with simulated_session() as (sim, session):
        results = await session.generate_many(PROMPTS[:80])
        assert len(results) == 80 and len(sim.runs) == 80
        seen = [run.index async for run in session.as_completed(PROMPTS[:50])]
        assert sorted(seen) == list(range(50))


async def test_a_generator_dropped_unclosed_is_finalized_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with simulated_session() as (sim, session):
        runs = session.as_completed(PROMPTS[:50])
        async for _run in runs:
            break
        del runs
        gc.collect()  # the loop's asyncgen hook closes it
        await asyncio.sleep(0.2)
        created = len(sim.runs)
        await asyncio.sleep(0.2)
        assert len(sim.runs) == created
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
