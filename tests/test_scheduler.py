"""The poll scheduler on a fake loop clock: where polls are planned and when they go out.

The planner's rules are tables in ``tests/test_planner.py``; here the
scheduler's loop runs on the fake clock against the simulator (a real HTTP
server on 127.0.0.1), and what is checked is the loop time each poll is sent
at. Simulated runs last 3-10 real seconds, so every poll here finds its run
still going.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async._budget import PRIORITY_CREATE, RateLimiter
from gptimage_async._budget.local import CATCH_UP
from gptimage_async._models import RunStatus
from gptimage_async._planner import COLD_FIRST_RTTS, FINAL_POLL_LEAD
from gptimage_async._providers import RunSnapshot, get_provider
from gptimage_async._registry import RunRegistry
from gptimage_async._run import Run
from gptimage_async._scheduler import PollScheduler
from gptimage_async._stats import SessionStats
from gptimage_async._transport import Answer
from gptimage_async._transport import HTTPTransport as Transport
from gptimage_async._transport._memory import MEMORY_ORIGIN, MemoryTransport
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.simulator._app import BASE_PATHS
from gptimage_async.testing import TEST_KEYS, scaled_rate_limit

from ._clock import FakeClock
from .helpers import running_scheduler
from .test_planner import uniform_model

RTT = 0.05


class RecordingTransport(Transport):
    """The real transport, noting the loop time each request is sent at."""

    sent: list[tuple[float, str]]

    async def send(
        self, method: str, path: str, body: bytes | None = None, **options: Any
    ) -> Answer:
        self.sent.append((asyncio.get_running_loop().time(), method))
        return await super().send(method, path, body, **options)


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

    def next_poll(self, run: Run) -> float:
        when = self.scheduler.next_poll(run.run_id or "")
        assert when is not None
        return when

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
        self.registry._track(run)
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
        async with running_scheduler("runbase", transport, limiter) as (scheduler, registry, tasks):
            yield Rig(clock, scheduler, limiter, transport, registry, tasks)


# -- helpers ---------------------------------------------------------------------


def _model_of_uniform_runs(scheduler: PollScheduler, n: int = 400) -> None:
    """Runs of 3-10 s, each seen done within 1 ms of finishing (see ``tests/test_planner.py``)."""
    uniform_model(scheduler.model, n)


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
    scheduler.add(Run("r0", "runbase", None, created_at=0.0, deadline=1e9), rtt=RTT)
    try:
        yield scheduler
    finally:
        await transport.aclose()


# -- the loop: when polls go out -----------------------------------------------


async def test_planned_polls_go_out_at_their_planned_time(fake_clock: FakeClock) -> None:
    limit = gi.RateLimit(1000, 10.0)
    async with rig(fake_clock, limit) as r:
        # More runs than cold-start scouts: no speculative polls, planned ones only.
        runs = [await r.new_run() for _ in range(10)]
        planned = r.next_poll(runs[0])
        assert [r.next_poll(run) for run in runs] == [pytest.approx(COLD_FIRST_RTTS * RTT)] * 10
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
        await fake_clock.advance_to(r.next_poll(runs[0]) + 10 * r.limiter.interval)
        await fake_clock.wait_for(lambda: len(r.polls()) >= 10)  # polled, then re-planned
        gc.collect()
        heap = r.scheduler._heap
        assert len(heap) >= 10
        assert not [entry for entry in heap if gc.is_tracked(entry)]
        states = [r.scheduler.state_of(run.run_id or "") for run in runs]
        assert None not in states
        assert not [state for state in states if gc.is_tracked(state)]
        # The public Run carries none of it.
        assert not hasattr(runs[0], "_poll")


async def test_a_re_planned_or_resolved_run_leaves_only_stale_entries(
    fake_clock: FakeClock,
) -> None:
    async with rig(fake_clock, gi.RateLimit(1000, 10.0)) as r:
        runs = [await r.new_run() for _ in range(10)]
        first = r.next_poll(runs[0])
        # Re-planned earlier: polled once, at the new time, not again at the old one.
        state = r.scheduler.state_of(runs[0].run_id or "")
        assert state is not None
        r.scheduler._push(runs[0], state, first / 2)
        # Resolved elsewhere (cancelled by the session, say): never polled.
        runs[1]._fail(gi.GPTImageError("gone"), gi.RunStatus.ERRORED)
        r.registry._untrack(runs[1])
        await fake_clock.advance_to(first / 2)
        await fake_clock.wait_for(lambda: len(r.polls()) == 1)
        assert r.polls() == [pytest.approx(first / 2)]
        # Run 0's next plan (twice the age it was seen pending at) is its old
        # entry's time: the stale entry must not add a poll.
        assert r.next_poll(runs[0]) == pytest.approx(first)
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
        assert r.next_poll(run) == pytest.approx(planned)
        await fake_clock.advance(planned / 2 - 0.001)
        assert r.polls() == []
        await fake_clock.advance(0.001)
        await fake_clock.wait_for(lambda: len(r.polls()) == 1)
        assert r.polls() == [pytest.approx(planned / 2)]
        assert r.scheduler._stats.speculative_polls == 1


async def test_a_busy_limiter_gets_no_speculative_poll(fake_clock: FakeClock) -> None:
    limit = gi.RateLimit(10, 1.0)
    async with rig(fake_clock, limit) as r:
        run = await r.new_run()
        assert r.next_poll(run) < 2 * r.limiter.interval  # due before the slot it gets
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
    scheduler.add(run)
    state = scheduler.state_of("r")
    assert state is not None
    snapshot = RunSnapshot("r", RunStatus.SUCCEEDED, urls=["https://x/1.png"])
    scheduler._observe(run, state, snapshot, age)
    assert run.done() and scheduler.state_of("r") is None  # resolved, its state dropped


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


# -- a bulk job's cold start: one scout probes, the others are parked -----------------


@contextlib.asynccontextmanager
async def bulk_cold_start(
    clock: FakeClock, belief: gi.RateLimit, *, created_every: float = 0.0
) -> AsyncIterator[tuple[PollScheduler, list[Run]]]:
    """A scheduler in a bulk job's cold start (creates wait in ``belief``'s limiter), nothing
    sent; 5 runs tracked, not added, created ``created_every`` seconds apart."""
    transport = Transport(
        "http://127.0.0.1:9", "unused", timeout=1.0, max_connections=1, user_agent="test"
    )
    limiter = RateLimiter(belief)
    registry = RunRegistry()
    scheduler = PollScheduler(
        provider=get_provider("runbase"),
        transport=transport,
        limiter=limiter,
        stats=SessionStats(),
        spawn=lambda *_: None,  # nothing is sent
        on_resolved=registry._untrack,
        lookup=registry.get,
    )
    try:
        await limiter.acquire()
        waiter = asyncio.ensure_future(limiter.acquire())  # requests wait: a bulk job
        await clock.settle()
        assert limiter.waiting
        runs = [
            Run(f"r{i}", "runbase", None, created_at=i * created_every, deadline=1e9)
            for i in range(5)
        ]
        for run in runs:
            registry._track(run)
        try:
            yield scheduler, runs
        finally:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
    finally:
        limiter.close()
        await transport.aclose()


async def test_in_a_bulk_cold_start_one_scout_probes_and_a_failed_one_hands_over(
    fake_clock: FakeClock,
) -> None:
    async with bulk_cold_start(fake_clock, gi.RateLimit(1, 10.0)) as (scheduler, runs):
        for run in runs:
            scheduler.add(run, rtt=RTT)
        due = [scheduler.next_poll(run.run_id or "") for run in runs]
        assert due[0] is not None and due[0] < 100.0  # the scout
        parked = 1e9 * (1 - FINAL_POLL_LEAD)  # parked: only the last poll before the deadline
        assert due[1:] == [pytest.approx(parked)] * 4
        # The scout fails: the oldest parked run takes over, the others wait on.
        scheduler._fail(runs[0], gi.GPTImageError("gone"))
        assert scheduler.state_of("r0") is None and len(scheduler) == 4
        due = [scheduler.next_poll(run.run_id or "") for run in runs[1:]]
        assert due[0] is not None and due[0] < 100.0
        assert due[1:] == [pytest.approx(parked)] * 3


# -- steady arrivals: fair-share polls ------------------------------------------------


class RecordingMemoryTransport(MemoryTransport):
    """The in-memory transport onto the simulator, noting when each poll is sent."""

    def __init__(self, *args: Any, clock: FakeClock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.polls: list[tuple[float, str]] = []

    async def send(
        self, method: str, path: str, body: bytes | None = None, **options: Any
    ) -> Answer:
        if method == "GET":  # a poll: its path ends with the run's id
            self.polls.append((self.clock.now, path))
        return await super().send(method, path, body, **options)


async def steady_arrivals(
    clock: FakeClock, *, runs: int, gap: float
) -> list[tuple[float, list[float], float]]:
    """``runs`` arrivals ``gap`` s apart, each ``submit`` then ``await``, in memory.

    Runbase's limit counting rejected requests, runs of 8-10 s (time as the
    provider's: the fake clock costs no wall time). Per run in creation order:
    (its duration, the ages it was polled at, its detection delay), in seconds.
    """
    config = SimulatorConfig(
        time_scale=1.0,
        rate_limit=20,
        rate_window=10.0,
        count_rejected=True,
        duration="uniform",
        duration_min=8.0,
        duration_max=10.0,
        seed=5,
    )
    done: dict[str, float] = {}

    async def body() -> list[tuple[float, list[float], float]]:
        sim = Simulator(config, clock=clock.time)
        key = TEST_KEYS["runbase"]
        base_url = MEMORY_ORIGIN + BASE_PATHS["runbase"]
        transport = RecordingMemoryTransport(sim, base_url, key, timeout=60.0, clock=clock)
        async with gi.Session(
            "runbase",
            api_key=key,
            base_url=base_url,
            transport=transport,
            rate_limit=scaled_rate_limit(config),
            on_exit="cancel",
        ) as session:

            async def one(i: int) -> None:
                await asyncio.sleep(i * gap)
                run = await session.submit(f"a lamp, {i}")
                await run
                done[run.id or ""] = clock.now

            await asyncio.gather(*(one(i) for i in range(runs)))
        served = sorted(sim.runs.values(), key=lambda r: r.created_at)
        assert sim.stats.rate_limited <= 1  # the cold start's probe at most
        return [
            (
                r.duration,
                [at - r.created_at for at, path in transport.polls if path.endswith(r.id)],
                done[r.id] - r.finishes_at,
            )
            for r in served
        ]

    return await clock.run(body())


async def test_steady_arrivals_are_polled_where_their_runs_end(fake_clock: FakeClock) -> None:
    # A quarter of the budget (4 requests per run): runs arrive every 2 s.
    rows = (await steady_arrivals(fake_clock, runs=80, gap=2.0))[20:]  # once warm
    ages = [age for _, polls, _ in rows for age in polls]
    # The polls go where runs end (8-10 s), not before: one in twenty at most
    # (3 of 149 here; the previous rules, polling the run planned next: 10 of 153).
    assert sum(1 for a in ages if a < 7.8) <= len(ages) / 20
    # Within the budget: a create and at most 3 polls a run ...
    assert len(ages) / len(rows) <= 3.0
    # ... spread over the 2 s where runs end: detected within 4.7% of a run on
    # average (4.2% here; the previous rules 4.9%).
    share = sum(d for _, _, d in rows) / sum(t for t, _, _ in rows)
    assert share <= 0.047
