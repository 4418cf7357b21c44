"""A 404 right after a create is "not visible yet", for a grace measured in time (issue 20, item 2).

Both sellers' read side may lag their write side: the simulator's
``read_lag`` fault answers 404 to every poll of a run for that many seconds
after its create. The scheduler runs on the fake loop clock, and so does the
simulator (a real HTTP server on 127.0.0.1): time moves from one timer to the
next, and waits for the sockets in between, so a lag of a minute costs no
wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async._budget import RateLimiter
from gptimage_async._planner import MAX_NOT_FOUND, NOT_FOUND_GRACE, NOT_FOUND_POLLS
from gptimage_async._providers import get_provider
from gptimage_async._registry import RunRegistry
from gptimage_async._retry import POLL_JITTER_FLOOR
from gptimage_async._run import Run
from gptimage_async._scheduler import PollScheduler
from gptimage_async._transport import Answer
from gptimage_async._transport._memory import MemoryTransport
from gptimage_async.simulator import Faults, Simulator, SimulatorConfig
from gptimage_async.testing import TEST_KEYS

from ._clock import FakeClock
from .helpers import running_scheduler

pytestmark = pytest.mark.parametrize("provider", ["runbase", "apiinone"])

RUNBASE_DEFAULT = gi.RateLimit(20, 10.0)
HIGH = gi.RateLimit(1000, 1.0)  # a poll every millisecond if it wanted one


class CountingTransport(MemoryTransport):
    """The in-memory transport onto the simulator, noting when each poll is sent and
    what it was answered."""

    polls: list[tuple[float, int]]
    in_flight: int

    async def send(
        self, method: str, target: str, body: bytes | None = None, **options: Any
    ) -> Answer:
        self.in_flight += 1
        sent = asyncio.get_running_loop().time()
        try:
            answer = await super().send(method, target, body, **options)
        except gi.GPTImageError:
            if method == "GET":
                self.polls.append((sent, -1))
            raise
        finally:
            self.in_flight -= 1
        if method == "GET":
            self.polls.append((sent, answer.status))
        return answer


@dataclass
class Rig:
    clock: FakeClock
    provider: str
    sim: Simulator
    scheduler: PollScheduler
    transport: CountingTransport
    registry: RunRegistry

    async def create(self) -> Run:
        """Create a run on the simulator and hand it to the scheduler, as the creator does."""
        adapter = get_provider(self.provider)
        body = adapter.encode_create(gi.ImageRequest("a ceramic lamp"))
        answer = await self.transport.send("POST", adapter.create_path, body)
        snapshot = adapter.decode_run(answer.body, run_id=None)
        return self._track(snapshot.id, attached=False)

    def attach(self, run_id: str) -> Run:
        return self._track(run_id, attached=True)

    def _track(self, run_id: str, *, attached: bool) -> Run:
        now = self.clock.now
        run = Run(run_id, self.provider, None, created_at=now, deadline=now + 3600.0)
        self.registry._track(run)
        self.scheduler.add(run, rtt=None if attached else 0.05, poll_now=attached)
        return run

    async def until_done(self, run: Run, *, limit: float = 300.0) -> None:
        """Move time from timer to timer, letting each answer arrive, until ``run`` resolves."""
        clock = self.clock
        await self._quiet()
        while not run.done():
            due = clock._next_timer()
            assert due is not None and due <= limit, f"no progress by {clock.now:.2f} s"
            await clock.advance_to(due)
            await self._quiet()

    async def _quiet(self) -> None:
        """Let the loop run, time standing still, until no request is on the wire."""
        while True:
            await self.clock.settle()
            if self.transport.in_flight == 0:
                return
            await self.clock.wait_for(lambda: self.transport.in_flight == 0)

    def polls_before(self, when: float) -> list[float]:
        """Loop times of the polls sent before ``when`` (seconds)."""
        return [t for t, _ in self.transport.polls if t < when]

    def not_found(self) -> int:
        """404s the simulator's read lag answered (API in One's may come as 200 + envelope)."""
        return self.sim.stats.faults["read_lag"]


@contextlib.asynccontextmanager
async def rig(
    clock: FakeClock, provider: str, rate_limit: gi.RateLimit, *, lag: float
) -> AsyncIterator[Rig]:
    loop = asyncio.get_running_loop()
    config = SimulatorConfig(
        time_scale=1.0,
        seed=5,
        rate_limit=None,
        apiinone_shape="mixed",
        faults=Faults(read_lag=lag),
    )
    # The simulator reads the loop's (fake) clock: its lag and its run durations are fake time.
    async with Simulator(config, clock=lambda: loop.time()) as sim:
        transport = CountingTransport(
            sim,
            sim.base_url(provider),
            TEST_KEYS[provider],
            timeout=1e6,  # timeouts run on the fake clock too
            user_agent="test",
        )
        transport.polls, transport.in_flight = [], 0
        limiter = RateLimiter(rate_limit)
        async with running_scheduler(provider, transport, limiter) as (scheduler, registry, _):
            yield Rig(clock, provider, sim, scheduler, transport, registry)


@pytest.mark.parametrize("lag", [1.5, 3.0, 12.0])
@pytest.mark.parametrize("rate_limit", [RUNBASE_DEFAULT, HIGH], ids=["runbase-default", "high"])
async def test_a_run_invisible_for_a_while_after_its_create_still_succeeds(
    fake_clock: FakeClock, provider: str, rate_limit: gi.RateLimit, lag: float
) -> None:
    async with rig(fake_clock, provider, rate_limit, lag=lag) as r:
        run = await r.create()
        await r.until_done(run)
        result = await run
        assert result.run_id == run.run_id and result.urls
        not_found = r.polls_before(lag)
        assert r.not_found() == len(not_found) > 0, (
            "the lag was never seen: the test proves nothing"
        )
        # Paced like any retry (a backoff from the round trip): never three
        # 404s within 0.1 s, and few of them for the whole lag (each spends budget).
        gaps = [b - a for a, b in itertools.pairwise(not_found)]
        assert all(g >= 0.05 for g in gaps), gaps
        # A backoff from the round trip to NOT_FOUND_GRACE / NOT_FOUND_POLLS:
        # about log2(lag / rtt) polls, then one every few seconds.
        assert len(not_found) <= 12, not_found


@pytest.mark.parametrize("rate_limit", [RUNBASE_DEFAULT, HIGH], ids=["runbase-default", "high"])
async def test_a_run_still_invisible_after_the_grace_is_not_found(
    fake_clock: FakeClock, provider: str, rate_limit: gi.RateLimit
) -> None:
    async with rig(fake_clock, provider, rate_limit, lag=10 * NOT_FOUND_GRACE) as r:
        run = await r.create()
        await r.until_done(run, limit=NOT_FOUND_GRACE + 60.0)
        with pytest.raises(gi.RunNotFoundError) as info:
            await run
        assert info.value.run_id == run.run_id
        # Not before the grace is over, and soon after it (one retry's wait at most).
        cap = max(rate_limit.per, NOT_FOUND_GRACE / NOT_FOUND_POLLS)
        assert NOT_FOUND_GRACE <= fake_clock.now <= NOT_FOUND_GRACE + cap
        not_found = r.polls_before(fake_clock.now + 1.0)
        assert r.not_found() == len(not_found) == run.polls
        # The whole grace costs a backoff from the round trip up to ``cap``, then
        # a poll per (jittered) ``cap``: about 8 at Runbase's default, 17 at 1000/s.
        bound = math.log2(cap / 0.05) + NOT_FOUND_GRACE / (POLL_JITTER_FLOOR * cap) + 1
        assert len(not_found) <= bound, not_found
        assert r.scheduler.state_of(run.run_id or "") is None  # nothing left behind


async def test_an_attached_run_has_no_grace(fake_clock: FakeClock, provider: str) -> None:
    # We do not know when (or whether) an attached id was created: a 404 on it
    # is counted as before, so a made-up id costs a few polls, not a minute of them.
    async with rig(fake_clock, provider, RUNBASE_DEFAULT, lag=10 * NOT_FOUND_GRACE) as r:
        created = await r.create()  # a real id, still invisible
        r.registry._untrack(created)
        r.scheduler.release(created)
        run = r.attach(created.run_id or "")
        await r.until_done(run)
        with pytest.raises(gi.RunNotFoundError):
            await run
        assert run.polls == MAX_NOT_FOUND
        assert fake_clock.now < 10.0
