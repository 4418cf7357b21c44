"""The limiter's belief moves on a fake clock; its pacing is checked on the loop's clock."""

from __future__ import annotations

import asyncio
import time

import pytest

import gptimage_async as gi
from gptimage_async._limiter import (
    CATCH_UP,
    GRANT_AHEAD,
    PRIORITY_CREATE,
    PRIORITY_POLL,
    SAFETY_MARGIN,
    AdaptiveRate,
    RateLimiter,
)
from gptimage_async.simulator import SimulatorConfig
from gptimage_async.testing import scaled_rate_limit, simulated_session


def drive(rate: AdaptiveRate, start: float, seconds: float, *, saturated: bool = True) -> float:
    """Send at the limiter's pace for ``seconds``; return the clock at the end."""
    now = start
    while now < start + seconds:
        rate.record_send(now, saturated=saturated)
        now += rate.interval
    return now


def test_starts_from_the_belief() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0))
    assert rate.rate == pytest.approx(2.0)
    assert rate.interval == pytest.approx(0.5 / (1 - SAFETY_MARGIN))


def test_probes_upward_only_while_saturated_and_quiet() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0), now=0.0)
    drive(rate, 0.0, 35.0, saturated=False)
    assert rate.rate == pytest.approx(2.0)  # idle budget: no evidence, no probing
    drive(rate, 35.0, 35.0)
    assert rate.rate > 2.0 * 1.5


class WindowServer:
    """A sliding-window counter, as servers keep them: ``limit`` per ``window`` seconds."""

    def __init__(self, limit: int, window: float, *, count_rejected: bool = False) -> None:
        self.limit, self.window, self.count_rejected = limit, window, count_rejected
        self.log: list[float] = []
        self.rejected = 0
        self.accepted = 0

    def hit(self, now: float) -> bool:
        self.log = [t for t in self.log if t > now - self.window]
        ok = len(self.log) < self.limit
        if ok or self.count_rejected:
            self.log.append(now)
        self.accepted += ok
        self.rejected += not ok
        return ok


def run_against(
    rate: AdaptiveRate, server: WindowServer, seconds: float, *, start: float = 0.0
) -> float:
    """Send saturated traffic at the limiter's pace, pausing a slot after each 429."""
    now = start
    while now < start + seconds:
        rate.record_send(now, saturated=True)
        if not server.hit(now):
            rate.record_429(now, now + 0.001)
            now += rate.interval  # the limiter's minimum pause
        now += rate.interval
    return now


def test_a_429_cuts_to_what_the_server_allowed() -> None:
    rate = AdaptiveRate(gi.RateLimit(40, 10.0), now=0.0)  # believes 4/s, real 2/s
    server = WindowServer(20, 10.0)
    run_against(rate, server, 6.0)
    assert server.rejected >= 1
    assert rate.cuts == 1
    assert 1.8 <= rate.rate <= 2.05  # straight to the real limit, not a blind halving


@pytest.mark.parametrize("count_rejected", [False, True])
@pytest.mark.parametrize("factor", [0.5, 2.0, 10.0])
def test_a_wrong_belief_converges_with_few_429s(factor: float, count_rejected: bool) -> None:
    real = 20
    rate = AdaptiveRate(gi.RateLimit(round(real * factor), 10.0), now=0.0)
    server = WindowServer(real, 10.0, count_rejected=count_rejected)
    run_against(rate, server, 300.0)
    total = server.accepted + server.rejected
    assert server.rejected / total < 0.05
    # The last few windows run close to the real limit.
    tail = WindowServer(real, 10.0, count_rejected=count_rejected)
    before = tail.accepted
    run_against(rate, tail, 60.0, start=400.0)
    assert (tail.accepted - before) / 60.0 >= 0.85 * real / 10.0


def test_429s_for_requests_sent_before_the_cut_do_not_cut_again() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0), now=0.0)
    now = drive(rate, 0.0, 12.0)
    rate.record_429(now - 0.2, now)
    after_first = rate.rate
    rate.record_429(now - 0.1, now + 0.05)  # in flight when the first came back
    assert rate.rate == after_first
    assert rate.cuts == 1


def test_ceiling_is_never_exceeded() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0, ceiling=True), now=0.0)
    drive(rate, 0.0, 120.0)
    assert rate.rate == pytest.approx(2.0)


def test_remembered_failure_caps_probing_until_forgotten() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0), now=0.0)
    run_against(rate, WindowServer(15, 10.0), 30.0)  # real limit 1.5/s
    assert rate.cuts >= 1
    capped = rate.rate
    assert capped <= 1.5
    now = drive(rate, 30.0, 30.0)
    assert rate.rate <= 1.5  # stays under the rate that drew the 429
    drive(rate, now, 600.0)
    assert rate.rate > capped * 1.1  # a long quiet spell: limits may have been raised


def test_one_429_at_the_limit_is_jitter_but_a_recurring_one_nudges() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0), now=0.0)
    now = drive(rate, 0.0, 12.0, saturated=False)
    rate.record_429(now, now)
    assert rate.cuts == 0 and rate.rate == pytest.approx(2.0)
    now = drive(rate, now, 5.0, saturated=False)
    rate.record_429(now, now)
    assert rate.cuts == 1 and 1.8 < rate.rate < 1.95  # a few percent under what went through


async def test_pacing_is_even_and_priority_ordered() -> None:
    limiter = RateLimiter(gi.RateLimit(200, 1.0))  # 5 ms apart
    order: list[str] = []

    async def take(name: str, priority: int) -> float:
        granted = await limiter.acquire(priority)
        order.append(name)
        return granted

    first = await limiter.acquire(PRIORITY_CREATE)  # free now: no wait
    assert first <= time.monotonic()
    tasks = [asyncio.create_task(take(f"c{i}", PRIORITY_CREATE)) for i in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(take("poll", PRIORITY_POLL)))
    times = sorted(await asyncio.gather(*tasks))
    assert order[0] == "poll"  # polls overtake waiting creates
    # The GCRA bound: any k+1 grants span k intervals, less the catch-up a
    # late event loop is allowed (the schedule, not the wake-up, sets the pace).
    grants = [first, *times]
    interval = limiter.adaptive.interval
    slack = CATCH_UP * interval + GRANT_AHEAD
    for i in range(len(grants)):
        for j in range(i + 1, len(grants)):
            assert grants[j] - grants[i] >= (j - i) * interval - slack - 1e-6
    assert grants[-1] - grants[0] >= 6 * interval - slack
    assert limiter.granted == 7


async def test_try_acquire_never_jumps_the_queue() -> None:
    limiter = RateLimiter(gi.RateLimit(100, 1.0))
    assert limiter.try_acquire()
    assert not limiter.try_acquire()  # the next slot is 10 ms away
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.02)
    await waiter
    await asyncio.sleep(0)
    assert limiter.waiting == 0


async def test_429_holds_everyone_back_for_retry_after() -> None:
    limiter = RateLimiter(gi.RateLimit(1000, 1.0))
    sent = await limiter.acquire()
    limiter.on_rate_limited(sent, retry_after=0.05)
    start = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - start >= 0.045
    assert limiter.rate_limited == 1


async def test_retry_after_zero_still_waits_a_slot() -> None:
    limiter = RateLimiter(gi.RateLimit(50, 1.0))  # 20 ms slots
    sent = await limiter.acquire()
    limiter.on_rate_limited(sent, retry_after=0.0)
    assert limiter.next_free() - time.monotonic() >= limiter.adaptive.interval * 0.9


async def test_cancelled_waiters_are_skipped_and_close_cancels_the_rest() -> None:
    limiter = RateLimiter(gi.RateLimit(10, 1.0))  # 100 ms slots
    await limiter.acquire()
    a = asyncio.create_task(limiter.acquire())
    b = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    a.cancel()
    await b  # got the slot a gave up
    assert a.cancelled()
    c = asyncio.create_task(limiter.acquire())  # the next slot is ~100 ms away
    await asyncio.sleep(0)
    assert limiter.waiting == 1
    limiter.close()
    with pytest.raises(asyncio.CancelledError):
        await c
    assert "RateLimiter" in repr(limiter)


async def test_single_runs_on_an_idle_budget_keep_the_belief_near_the_limit() -> None:
    # Found by the benchmarks: a create waiting behind a speculative poll's slot
    # counted as saturation, so an idle session raised its belief past the real
    # limit and then drew 429s. One run at a time never saturates the budget.
    config = SimulatorConfig(time_scale=0.02, seed=7)
    real = scaled_rate_limit(config)
    assert real is not None
    beliefs = []
    async with simulated_session("runbase", config=config) as (sim, session):
        for i in range(12):
            await session.generate(f"one at a time {i}")
            beliefs.append(session.limiter.rate)
        # Speculative polls use the whole idle budget: jitter 429s are possible
        # in a 200 ms window, but rare.
        assert sim.stats.rate_limited <= 0.03 * sim.stats.requests
    assert max(beliefs) <= 1.5 * real.rate, beliefs
