"""The requests iterable of ``as_completed`` fails midway: the caller gets every run first.

Against the simulator in memory (``memory_session``) on the fake loop clock: a generator yields
``n`` prompts and then raises. Every run created from those prompts was paid
for, so each must reach the caller before the error does, and nothing past
the error may be created.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gptimage_async.simulator import SimulatorConfig
from gptimage_async.testing import memory_session

from ._clock import FakeClock

CONFIG = SimulatorConfig(time_scale=0.01, seed=5)


class SourceBroke(Exception):
    pass


def _prompts_then_error(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"a lamp, take {i}"
    raise SourceBroke(f"line {n + 1} is unreadable")


@pytest.mark.parametrize("n", [0, 1, 5, 45])
@pytest.mark.parametrize("concurrency", [None, 1, 4])
async def test_every_run_before_the_error_reaches_the_caller_first(
    fake_clock: FakeClock, n: int, concurrency: int | None
) -> None:
    await fake_clock.run(_consume_until_broken(n, concurrency))


async def _consume_until_broken(n: int, concurrency: int | None) -> None:
    async with memory_session(config=CONFIG) as (sim, session):
        seen: list[int] = []

        async def consume() -> None:
            async for run in session.as_completed(_prompts_then_error(n), concurrency=concurrency):
                assert run.error is None
                assert run.index is not None
                seen.append(run.index)

        with pytest.raises(SourceBroke, match=f"line {n + 1}"):
            await consume()
        assert sorted(seen) == list(range(n))
        assert sim.stats.creates == n
