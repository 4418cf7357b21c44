"""The poll scheduler's side of the fleet's one cold-start scout (``_budget/fleet_scouts.py``).

On the fake loop clock: whether a run is parked or probes, and when a parked
run is first polled once another process's duration arrives. The lease in
Redis that decides ``scouts_elsewhere`` is tested in tests/redis/test_fleet_scouts.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import gptimage_async as gi
from gptimage_async._planner import COLD_RELEASE, FINAL_POLL_LEAD
from gptimage_async._run import Run
from gptimage_async._scheduler import PollScheduler

from ._clock import FakeClock
from .test_scheduler import bulk_cold_start

RTT = 0.05
PARKED = 1e9 * (1 - FINAL_POLL_LEAD)  # parked: only the last poll before the deadline


@pytest.fixture
async def bulk(fake_clock: FakeClock) -> AsyncIterator[tuple[PollScheduler, list[Run]]]:
    """A scheduler in a bulk job's cold start (creates wait), nothing sent; 5 runs to add."""
    # An interval far below the runs; runs created a second apart.
    async with bulk_cold_start(fake_clock, gi.RateLimit(1, 0.1), created_every=1.0) as (
        scheduler,
        runs,
    ):
        yield scheduler, runs


def due(scheduler: PollScheduler, runs: list[Run]) -> list[float | None]:
    return [scheduler.next_poll(run.run_id or "") for run in runs]


async def test_with_a_scout_elsewhere_every_run_waits_for_the_fleets_duration(
    bulk: tuple[PollScheduler, list[Run]],
) -> None:
    scheduler, (*runs, late) = bulk
    scheduler.scouts_elsewhere = 1
    for run in runs:
        scheduler.add(run, rtt=RTT)
    assert due(scheduler, runs) == [pytest.approx(PARKED)] * 4  # no scout of its own
    # Another process's scout finished: its duration comes through the stream ...
    scheduler.model.restore([(3.0, 3.5)])
    scheduler.fleet_changed()
    # ... and every parked run is first polled where nearly every run is done.
    assert due(scheduler, runs) == [
        pytest.approx(run.created_at + COLD_RELEASE * 3.5) for run in runs
    ]
    # Runs added from now on are planned from it too: none is parked or probes.
    scheduler.add(late, rtt=RTT)
    assert due(scheduler, [late]) == [pytest.approx(late.created_at + COLD_RELEASE * 3.5)]


async def test_alone_or_with_the_fleets_scout_gone_one_run_probes(
    bulk: tuple[PollScheduler, list[Run]],
) -> None:
    scheduler, runs = bulk[0], bulk[1][:4]
    scheduler.scouts_elsewhere = 1
    for run in runs:
        scheduler.add(run, rtt=RTT)
    # The lease lapsed (its holder died) with no duration known: the oldest run probes.
    scheduler.scouts_elsewhere = 0
    scheduler.fleet_changed()
    first, *rest = due(scheduler, runs)
    assert first is not None and first < 100.0
    assert rest == [pytest.approx(PARKED)] * 3
    # Told again (a later sync): still one scout, not two.
    scheduler.fleet_changed()
    assert due(scheduler, runs)[1:] == [pytest.approx(PARKED)] * 3
