"""The poll scheduler on a fake loop clock: where polls are planned and when they go out.

``plan_age`` is checked as a table against a real ``DurationModel``; the
scheduler's loop runs on the fake clock against the simulator (a real HTTP
server on 127.0.0.1), and what is checked is the loop time each poll is sent
at. Simulated runs last 3-10 real seconds, so every poll here finds its run
still going.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async._budget import PRIORITY_CREATE, RateLimiter
from gptimage_async._budget.local import CATCH_UP
from gptimage_async._models import RunStatus
from gptimage_async._providers import RunSnapshot, get_provider
from gptimage_async._registry import RunRegistry
from gptimage_async._run import Run
from gptimage_async._scheduler import (
    COLD_FIRST_RTTS,
    COLD_GROWTH,
    COLD_RELEASE,
    FINAL_POLL_LEAD,
    MIN_STEP,
    PLANNED_DONE_SHARE,
    SPREAD_KEEP,
    TAIL_GROWTH,
    PollScheduler,
)
from gptimage_async._stats import SessionStats
from gptimage_async._transport import Answer, Transport
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import TEST_KEYS

from ._clock import FakeClock

RTT = 0.05


class RecordingTransport(Transport):
    """The real transport, noting the loop time each request is sent at."""

    sent: list[tuple[float, str]]

    async def send(self, method: str, path: str, body: bytes | None = None) -> Answer:
        self.sent.append((asyncio.get_running_loop().time(), method))
        return await super().send(method, path, body)


@dataclass
class Rig:
    clock: FakeClock
    scheduler: PollScheduler
    limiter: RateLimiter
    transport: RecordingTransport
    registry: RunRegistry
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def polls(self) -> list[float]:
        return [t for t, method in self.transport.sent if method == "GET"]

    async def new_run(self, *, run_timeout: float = 3600.0) -> Run:
        """Create a run on the simulator (time stands still) and hand it to the scheduler."""
        provider = get_provider("runbase")
        request = gi.ImageRequest("a ceramic lamp")
        answer = await self.transport.send(
            "POST", provider.create_path, provider.encode_create(request)
        )
        snapshot = provider.decode_run(answer.body, run_id=None)
        now = self.clock.now
        run = Run(snapshot.id, "runbase", request, created_at=now, deadline=now + run_timeout)
        self.registry.add(run)
        self.scheduler.add(run, rtt=RTT)
        return run


@contextlib.asynccontextmanager
async def rig(clock: FakeClock, rate_limit: gi.RateLimit) -> AsyncIterator[Rig]:
    async with Simulator(SimulatorConfig(time_scale=1.0, seed=3)) as sim:
        # A request timeout far past any fake time a test reaches: aiohttp's
        # timeouts run on the loop's clock too.
        transport = RecordingTransport(
            sim.base_url("runbase"),
            TEST_KEYS["runbase"],
            timeout=1e6,
            max_connections=100,
            user_agent="test",
        )
        transport.sent = []
        limiter = RateLimiter(rate_limit)
        tasks: set[asyncio.Task[Any]] = set()

        def spawn(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
            task = asyncio.get_running_loop().create_task(fn(*args))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        registry = RunRegistry()
        scheduler = PollScheduler(
            provider=get_provider("runbase"),
            transport=transport,
            limiter=limiter,
            stats=SessionStats(),
            spawn=spawn,
            on_resolved=registry.discard,
            lookup=registry.get,
        )
        spawn(scheduler.run_forever)
        try:
            yield Rig(clock, scheduler, limiter, transport, registry, tasks)
        finally:
            limiter.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await transport.aclose()


# -- plan_age: a pure function of the run, the model and the interval ----------


def _run(last_pending_age: float, polls: int) -> Run:
    run = Run("r", "runbase", None, created_at=0.0, deadline=1e9)
    run._poll.last_pending_age = last_pending_age
    run._poll.polls = polls
    return run


def _model_of_uniform_runs(scheduler: PollScheduler, n: int = 400) -> None:
    """Runs of 3-10 s, each seen done within 1 ms of finishing, in no particular order.

    (Sorted by duration they would read as a provider slowing down, which the
    model's change detector is there to catch.)
    """
    for i in range(n):
        k = i * 7919 % n  # a fixed permutation: 7919 is prime to n
        d = 3.0 + 7.0 * (k + 0.5) / n
        scheduler.model.observe(d - 0.001, d)


@pytest.fixture
async def bare_scheduler(fake_clock: FakeClock) -> AsyncIterator[PollScheduler]:
    """A scheduler whose loop is not running (nothing is sent), its rtt learned as RTT."""
    transport = Transport(
        "http://127.0.0.1:9", "unused", timeout=1.0, max_connections=1, user_agent="test"
    )
    scheduler = PollScheduler(
        provider=get_provider("runbase"),
        transport=transport,
        limiter=RateLimiter(gi.RateLimit(100, 10.0)),
        stats=SessionStats(),
        spawn=lambda *_: None,
        on_resolved=lambda run: None,
        lookup=lambda run_id: None,  # nothing is polled
    )
    scheduler.add(_run(0.0, 0), rtt=RTT)
    try:
        yield scheduler
    finally:
        await transport.aclose()


@pytest.mark.parametrize(
    ("last", "polls", "interval", "expected"),
    [
        # First poll after a few create round trips ...
        (0.0, 0, 0.01, COLD_FIRST_RTTS * RTT),
        # ... then geometric growth ...
        (0.2, 1, 0.01, 0.2 * COLD_GROWTH),
        (0.4, 2, 0.01, 0.4 * COLD_GROWTH),
        (1.6, 4, 0.01, 1.6 * COLD_GROWTH),
        # ... never closer than one slot of the budget.
        (0.0, 0, 1.0, 1.0),
        (0.2, 1, 0.5, 0.2 + 0.5),
    ],
)
async def test_plan_age_cold_start_probes_geometrically_from_the_rtt(
    bare_scheduler: PollScheduler, last: float, polls: int, interval: float, expected: float
) -> None:
    assert bare_scheduler.plan_age(_run(last, polls), interval=interval) == pytest.approx(expected)


async def test_plan_age_cold_start_never_plans_before_what_earlier_runs_showed(
    bare_scheduler: PollScheduler,
) -> None:
    bare_scheduler.model.observe(2.0, 3.0)  # one run done by 3 s: not enough to be ready
    assert not bare_scheduler.model.ready
    # Twice that: nearly every run is done there, so learning costs few polls.
    assert bare_scheduler.plan_age(_run(0.0, 0), interval=0.01) == pytest.approx(COLD_RELEASE * 3.0)


@pytest.mark.parametrize(
    ("last", "polls", "expected"),
    [
        # PLANNED_DONE_SHARE of all runs are done by 9.65 s (3 + 0.95 * 7) ...
        (0.0, 0, 3.0 + PLANNED_DONE_SHARE * 7.0),
        # ... of runs still going at 5 s, by 5 + 0.95 * 5 ...
        (5.0, 1, 5.0 + PLANNED_DONE_SHARE * 5.0),
        # ... and always at least MIN_STEP of the median (6.5 s) after the last poll.
        (9.9, 3, 9.9 + MIN_STEP * 6.5),
        # Past everything seen: the gap grows by TAIL_GROWTH.
        (20.0, 5, 20.0 * TAIL_GROWTH),
    ],
)
async def test_plan_age_with_a_model_is_its_conditional_quantile(
    bare_scheduler: PollScheduler, last: float, polls: int, expected: float
) -> None:
    _model_of_uniform_runs(bare_scheduler)
    assert bare_scheduler.model.ready
    assert bare_scheduler.plan_age(_run(last, polls), interval=0.01) == pytest.approx(
        expected, abs=0.15
    )


# -- the loop: when polls go out -----------------------------------------------


async def test_planned_polls_go_out_at_their_planned_time(fake_clock: FakeClock) -> None:
    limit = gi.RateLimit(1000, 10.0)
    async with rig(fake_clock, limit) as r:
        # More runs than cold-start scouts: no speculative polls, planned ones only.
        runs = [await r.new_run() for _ in range(10)]
        planned = runs[0]._poll.next_poll
        assert [run._poll.next_poll for run in runs] == [pytest.approx(COLD_FIRST_RTTS * RTT)] * 10
        await fake_clock.advance_to(planned - 0.001)
        assert r.polls() == []
        await fake_clock.advance_to(planned)
        # The first goes at once, the rest at the limiter's pace.
        slot = r.limiter.interval
        expected = [planned, *(planned + (1 - CATCH_UP) * slot + k * slot for k in range(9))]
        await fake_clock.wait_for(lambda: len(r.polls()) == 1)
        await fake_clock.advance_to(expected[-1])
        await fake_clock.wait_for(lambda: len(r.polls()) == 10)
        assert r.polls() == pytest.approx(expected)
        assert r.scheduler._stats.speculative_polls == 0
        assert list(r.scheduler._stats.lateness) == [0.0] * 10  # taken off the heap on time


async def test_runs_in_flight_leave_the_garbage_collector_little_to_walk(
    fake_clock: FakeClock,
) -> None:
    # A full collection pauses the event loop for every object it tracks: the
    # scheduler's bookkeeping per run (poll state, heap entries) adds none.
    async with rig(fake_clock, gi.RateLimit(1000, 10.0)) as r:
        runs = [await r.new_run() for _ in range(10)]
        await fake_clock.advance_to(runs[0]._poll.next_poll + 10 * r.limiter.interval)
        await fake_clock.wait_for(lambda: len(r.polls()) >= 10)  # polled, then re-planned
        gc.collect()
        heap = r.scheduler._heap
        assert len(heap) >= 10
        assert not [entry for entry in heap if gc.is_tracked(entry)]
        assert not [run for run in runs if gc.is_tracked(run._poll)]


async def test_a_re_planned_or_resolved_run_leaves_only_stale_entries(
    fake_clock: FakeClock,
) -> None:
    async with rig(fake_clock, gi.RateLimit(1000, 10.0)) as r:
        runs = [await r.new_run() for _ in range(10)]
        first = runs[0]._poll.next_poll
        # Re-planned earlier: polled once, at the new time, not again at the old one.
        r.scheduler._push(runs[0], first / 2)
        # Resolved elsewhere (cancelled by the session, say): never polled.
        runs[1]._fail(gi.GPTImageError("gone"), gi.RunStatus.ERRORED)
        r.registry.discard(runs[1])
        await fake_clock.advance_to(first / 2)
        await fake_clock.wait_for(lambda: len(r.polls()) == 1)
        assert r.polls() == [pytest.approx(first / 2)]
        # Run 0's next plan (twice the age it was seen pending at) is its old
        # entry's time: the stale entry must not add a poll.
        assert runs[0]._poll.next_poll == pytest.approx(first)
        await fake_clock.advance_to(first + 10 * r.limiter.interval)
        await fake_clock.wait_for(lambda: len(r.polls()) == 10)
        await fake_clock.advance_to(first * 1.5)  # before anyone's next plan
        assert len(r.polls()) == 10
        assert [run.polls for run in runs] == [2, 0, *[1] * 8]


async def test_a_speculative_poll_goes_out_only_on_a_free_limiter(fake_clock: FakeClock) -> None:
    limit = gi.RateLimit(1000, 10.0)
    # Idle budget: one run is polled speculatively halfway to its plan.
    async with rig(fake_clock, limit) as r:
        run = await r.new_run()
        planned = COLD_FIRST_RTTS * RTT
        assert run._poll.next_poll == pytest.approx(planned)
        await fake_clock.advance(planned / 2 - 0.001)
        assert r.polls() == []
        await fake_clock.advance(0.001)
        await fake_clock.wait_for(lambda: len(r.polls()) == 1)
        assert r.polls() == [pytest.approx(planned / 2)]
        assert r.scheduler._stats.speculative_polls == 1


async def test_speculative_polls_spread_over_the_likely_finish(
    bare_scheduler: PollScheduler,
) -> None:
    scheduler = bare_scheduler
    # 20 per 10 s: a window longer than the runs, as with Runbase's limit.
    scheduler._limiter = limiter = RateLimiter(gi.RateLimit(20, 10.0))
    run = _run(0.0, 0)
    # One finished run gives the scale: speculation starts before its duration.
    scheduler.model.observe(4.9, 5.0)
    assert not scheduler.model.ready
    first = scheduler._early_at(run, 0.0)
    assert 0.0 < first < 4.9
    # A mature model of 3-10 s runs: nothing before about 3 s, then the
    # window's slots spread over 3-10 s, closer together than the even pace.
    _model_of_uniform_runs(scheduler)
    first = scheduler._early_at(run, 0.0)
    assert 2.5 < first < 3.2
    run._poll.polls, run._poll.last_pending_age = 1, 5.0
    step = scheduler._early_at(run, 0.0) - 5.0
    assert step == pytest.approx((10.0 - 3.0) / (20 - SPREAD_KEEP), rel=0.1)
    assert step < limiter.interval


async def test_a_busy_limiter_gets_no_speculative_poll(fake_clock: FakeClock) -> None:
    limit = gi.RateLimit(10, 1.0)
    async with rig(fake_clock, limit) as r:
        run = await r.new_run()
        assert run._poll.next_poll < 2 * r.limiter.interval  # due before the slot it gets
        slot = r.limiter.interval
        first = (1 - CATCH_UP) * slot
        # Creates queue for the next slots: (grant time) 0, first, first + slot, ...
        await r.limiter.acquire(PRIORITY_CREATE)
        creates = [asyncio.create_task(r.limiter.acquire(PRIORITY_CREATE)) for _ in range(3)]
        await fake_clock.advance_to(first + 2 * slot - 0.001)
        assert r.polls() == []
        await fake_clock.advance(0.001)
        await fake_clock.wait_for(lambda: len(r.polls()) == 1)
        # Nothing went out early; the planned poll (due at 0.2) took the first
        # slot after it, ahead of the create still waiting.
        assert r.scheduler._stats.speculative_polls == 0
        assert r.polls() == [pytest.approx(first + 2 * slot)]
        granted = await fake_clock.run(asyncio.gather(*creates))
        assert granted == pytest.approx([first, first + slot, first + 3 * slot])


async def test_a_run_past_its_deadline_fails_with_run_timeout(fake_clock: FakeClock) -> None:
    async with rig(fake_clock, gi.RateLimit(10, 1.0)) as r:
        run = await r.new_run(run_timeout=0.15)
        # (A speculative poll may go out first: the run is still going.)
        with pytest.raises(gi.RunTimeoutError):
            await fake_clock.run(run.result())
        assert fake_clock.now == pytest.approx(0.15)
        assert run.error is not None


async def test_a_run_is_polled_before_it_times_out_whatever_the_model_believes(
    fake_clock: FakeClock,
) -> None:
    # A model (restored, say) that believes runs take hours plans every poll
    # past a 60 s deadline: one last poll still goes a little before it.
    async with rig(fake_clock, gi.RateLimit(10, 1.0)) as r:
        for i in range(400):
            r.scheduler.model.observe(3600.0 + i, 3601.0 + i)
        run = await r.new_run(run_timeout=60.0)
        with pytest.raises(gi.RunTimeoutError):
            await fake_clock.run(run.result(), limit=120.0)
        polls = r.polls()
        assert len(polls) == 1
        assert polls[0] == pytest.approx(60.0 * (1 - FINAL_POLL_LEAD), abs=0.2)


async def test_a_poll_held_back_by_retry_after_still_keeps_the_deadline(
    fake_clock: FakeClock,
) -> None:
    async with rig(fake_clock, gi.RateLimit(1000, 10.0)) as r:
        run = await r.new_run(run_timeout=1.0)
        sent = await r.limiter.acquire()
        r.limiter.on_rate_limited(sent, retry_after=100.0)
        # The planned poll waits in the limiter; its wait ends at the deadline.
        with pytest.raises(gi.RunTimeoutError):
            await fake_clock.run(run.result())
        assert fake_clock.now == pytest.approx(1.0)
        assert r.polls() == []


# -- a bulk job's tail: its cohort is left out of the duration model ---------------


def _finished(scheduler: PollScheduler, created_at: float, age: float) -> None:
    """A run created at ``created_at`` found done at its first poll, ``age`` s old."""
    run = Run("r", "runbase", None, created_at=created_at, deadline=1e9)
    run._poll.next_poll = created_at + age
    scheduler.add(run)
    snapshot = RunSnapshot("r", RunStatus.SUCCEEDED, urls=["https://x/1.png"])
    scheduler._observe(run, snapshot, age)


async def test_runs_of_a_bulk_tail_are_not_observed_but_runs_before_and_after_are(
    bare_scheduler: PollScheduler, fake_clock: FakeClock
) -> None:
    scheduler = bare_scheduler
    _model_of_uniform_runs(scheduler)
    longest = scheduler.model.quantile(0.99)
    await fake_clock.advance_to(100.0)
    scheduler.tail_began()
    await fake_clock.advance_to(110.0)
    scheduler.tail_began()  # the same tail: a stream's next last create
    scheduler.tail_ended()
    # (created at, observed?): chosen by creation time only, never by outcome.
    table = [
        (100.0 - longest - 1.0, True),  # done long before the tail
        (100.0 - longest + 0.5, False),  # still going as it began: its polls were held
        (105.0, False),
        (110.0, False),
        (111.0, True),  # after the tail
    ]
    for created_at, observed in table:
        before = scheduler.model.observed
        _finished(scheduler, created_at, 30.0)  # seen done late, as a held poll does
        assert (scheduler.model.observed == before + 1) is observed, created_at


async def test_a_later_tail_starts_a_new_cohort(
    bare_scheduler: PollScheduler, fake_clock: FakeClock
) -> None:
    scheduler = bare_scheduler
    _model_of_uniform_runs(scheduler)
    longest = scheduler.model.quantile(0.99)
    await fake_clock.advance_to(100.0)
    scheduler.tail_began()
    scheduler.tail_ended()
    await fake_clock.advance_to(500.0)  # a second job, long after
    scheduler.tail_began()
    before = scheduler.model.observed
    _finished(scheduler, 300.0, 5.0)  # between the two tails
    _finished(scheduler, 500.0 - longest + 0.5, 5.0)  # the second tail's cohort
    assert scheduler.model.observed == before + 1


async def test_before_the_model_is_ready_every_run_is_observed(
    bare_scheduler: PollScheduler, fake_clock: FakeClock
) -> None:
    # A job no longer than its tail must still learn, or parked runs would wait forever.
    scheduler = bare_scheduler
    scheduler.tail_began()
    _finished(scheduler, fake_clock.now, 5.0)
    assert scheduler.model.observed == 1
