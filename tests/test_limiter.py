"""The limiter's belief moves on a fake clock, and so does the loop its pacing runs on."""

from __future__ import annotations

import asyncio
import itertools
import math

import backoff
import pytest

import gptimage_async as gi
from gptimage_async._budget import (
    PRIORITY_CREATE,
    PRIORITY_LAST_CREATE,
    PRIORITY_POLL,
    AdaptiveRate,
    RateLimiter,
)
from gptimage_async._budget.belief import MIN_MARGIN, SAFETY_MARGIN
from gptimage_async._budget.local import (
    CATCH_UP,
    GRANT_AHEAD,
    SATURATED_WAIT,
    SPARE_QUIET,
    SPARE_RESERVE,
    SPARE_SPACING,
)
from gptimage_async.simulator import SimulatorConfig
from gptimage_async.testing import memory_session, scaled_rate_limit

from ._clock import FakeClock


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


# -- the limiter on a fake loop clock: tables of expected grant times ---------------
#
# RateLimit(10, 1.0) paces at SLOT = 1 / (10 * (1 - SAFETY_MARGIN)) s. The first
# slot after idle time is granted at once and the schedule restarts from
# CATCH_UP * SLOT before it, so the next slot is (1 - CATCH_UP) * SLOT later; from
# there on slots are exactly SLOT apart.

SLOT = 1.0 / (10 * (1.0 - SAFETY_MARGIN))
FIRST_GAP = (1.0 - CATCH_UP) * SLOT


def _slots(n: int, *, start: float = 0.0) -> list[float]:
    """Grant times of ``n`` back-to-back requests when the first goes at ``start``."""
    return [start, *(start + FIRST_GAP + k * SLOT for k in range(n - 1))]


async def _grants(
    clock: FakeClock, limiter: RateLimiter, requests: list[tuple[str, int]]
) -> list[tuple[str, float]]:
    """Queue ``requests`` (name, priority) in order; return (name, grant time) by grant."""
    out: list[tuple[str, float]] = []

    async def take(name: str, priority: int) -> None:
        out.append((name, await limiter.acquire(priority)))

    tasks = []
    for name, priority in requests:
        tasks.append(asyncio.create_task(take(name, priority)))
        await clock.settle()  # queued in this order
    await clock.run(asyncio.gather(*tasks))
    return out


async def test_pacing_is_even_at_the_rate_with_the_safety_margin(fake_clock: FakeClock) -> None:
    # 10/s over a 20 s window: the run below stays inside half a window (slow
    # start's span), so the belief does not probe upward between the two tables.
    limiter = RateLimiter(gi.RateLimit(200, 20.0))
    assert limiter.interval == pytest.approx(0.1 / 0.98)
    granted = await _grants(fake_clock, limiter, [(f"c{i}", PRIORITY_CREATE) for i in range(8)])
    assert [t for _, t in granted] == pytest.approx(_slots(8))
    assert [name for name, _ in granted] == [f"c{i}" for i in range(8)]
    assert limiter.granted == 8
    # Idle for a while: the schedule restarts from now, no burst of saved-up slots.
    await fake_clock.advance(5.0)
    start = fake_clock.now
    granted = await _grants(fake_clock, limiter, [(f"d{i}", PRIORITY_CREATE) for i in range(4)])
    assert [t for _, t in granted] == pytest.approx(_slots(4, start=start))
    assert limiter.rate == pytest.approx(10.0)


async def test_polls_go_before_creates_and_each_priority_is_first_come(
    fake_clock: FakeClock,
) -> None:
    limiter = RateLimiter(gi.RateLimit(10, 1.0))
    await limiter.acquire()  # t=0: the free slot; everyone below waits
    requests = [
        ("c0", PRIORITY_CREATE),
        ("c1", PRIORITY_CREATE),
        ("p0", PRIORITY_POLL),
        ("c2", PRIORITY_CREATE),
        ("p1", PRIORITY_POLL),
    ]
    granted = await _grants(fake_clock, limiter, requests)
    expected = ["p0", "p1", "c0", "c1", "c2"]
    assert granted == [
        (name, pytest.approx(t)) for name, t in zip(expected, _slots(6)[1:], strict=True)
    ]


async def test_a_jobs_last_creates_go_before_polls_and_overtake_no_earlier_create(
    fake_clock: FakeClock,
) -> None:
    limiter = RateLimiter(gi.RateLimit(10, 1.0))
    await limiter.acquire()  # t=0: the free slot; everyone below waits
    order: list[str] = []

    async def take(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append(name)

    tasks = []
    for name, priority in [
        ("c0", PRIORITY_CREATE),
        ("p0", PRIORITY_POLL),
        ("c1", PRIORITY_CREATE),
        ("p1", PRIORITY_POLL),
    ]:
        tasks.append(asyncio.create_task(take(name, priority)))
        await fake_clock.settle()
    # The tail begins: the creates already waiting move ahead of the polls, in
    # their order, and the last create queues behind them, still ahead of polls.
    assert limiter.promote_creates() == 2
    assert limiter.promote_creates() == 0  # nothing left to move
    tasks.append(asyncio.create_task(take("last", PRIORITY_LAST_CREATE)))
    await fake_clock.settle()
    tasks.append(asyncio.create_task(take("c2", PRIORITY_CREATE)))  # another job's create
    await fake_clock.settle()
    await fake_clock.run(asyncio.gather(*tasks))
    assert order == ["c0", "c1", "last", "p0", "p1", "c2"]


async def test_promotion_skips_a_cancelled_create(fake_clock: FakeClock) -> None:
    limiter = RateLimiter(gi.RateLimit(10, 1.0))
    await limiter.acquire()
    gone = asyncio.create_task(limiter.acquire(PRIORITY_CREATE))
    kept = asyncio.create_task(limiter.acquire(PRIORITY_CREATE))
    poll = asyncio.create_task(limiter.acquire(PRIORITY_POLL))
    await fake_clock.settle()
    gone.cancel()
    await fake_clock.settle()
    assert limiter.promote_creates() == 1
    first = await fake_clock.run(asyncio.wait({kept, poll}, return_when=asyncio.FIRST_COMPLETED))
    assert first[0] == {kept}
    await fake_clock.run(poll)


async def test_try_acquire_takes_only_a_free_slot_nobody_waits_for(fake_clock: FakeClock) -> None:
    limiter = RateLimiter(gi.RateLimit(10, 1.0))
    # (loop time, try_acquire's answer): free at once, then not until the next slot
    # (GRANT_AHEAD early at most).
    table = [
        (0.0, True),
        (0.0, False),
        (FIRST_GAP - 2 * GRANT_AHEAD, False),
        (FIRST_GAP - GRANT_AHEAD / 2, True),
        (FIRST_GAP + SLOT / 2, False),
    ]
    for when, expected in table:
        await fake_clock.advance_to(when)
        assert limiter.try_acquire() is expected, when
    # A slot somebody waits for is theirs, even at the moment it comes free.
    waiter = asyncio.create_task(limiter.acquire(PRIORITY_CREATE))
    await fake_clock.settle()
    fake_clock.now = limiter.next_free()  # free now, but the waiter's timer has not run
    assert limiter.waiting == 1
    assert not limiter.try_acquire()
    await fake_clock.settle()
    assert waiter.result() == pytest.approx(FIRST_GAP + SLOT)
    assert limiter.waiting == 0


async def test_a_429_with_retry_after_holds_everything_back(fake_clock: FakeClock) -> None:
    limiter = RateLimiter(gi.RateLimit(10, 1.0))
    sent = await limiter.acquire()
    waiters = [
        asyncio.create_task(limiter.acquire(PRIORITY_CREATE)),
        asyncio.create_task(limiter.acquire(PRIORITY_POLL)),
    ]
    await fake_clock.advance(0.01)
    limiter.on_rate_limited(sent, retry_after=2.0)
    assert limiter.rate_limited == 1
    interval = limiter.interval  # the 429 may have cut the rate: slots re-spaced at the new one
    assert limiter.next_free() == pytest.approx(2.01)
    # Nothing goes out during the pause, not even a free-looking try_acquire.
    for when in (0.5, 1.0, 2.0):
        await fake_clock.advance_to(when)
        assert not any(w.done() for w in waiters)
        assert not limiter.try_acquire()
    await fake_clock.run(asyncio.gather(*waiters))
    poll, create = waiters[1].result(), waiters[0].result()
    assert (poll, create) == (pytest.approx(2.01), pytest.approx(2.01 + interval))


@pytest.mark.parametrize("retry_after", [0.0, 0.001])
async def test_retry_after_zero_still_waits_a_slot(
    fake_clock: FakeClock, retry_after: float
) -> None:
    limiter = RateLimiter(gi.RateLimit(10, 1.0))
    sent = await limiter.acquire()
    limiter.on_rate_limited(sent, retry_after=retry_after)
    # "Retry-After: 0" is "now is too soon": one slot at the (possibly cut) rate.
    granted = await fake_clock.run(limiter.acquire())
    assert granted == pytest.approx(limiter.interval)
    assert granted >= SLOT


async def test_server_trouble_backs_off_exponentially_then_an_answer_resets(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Full jitter draws uniform(0, d); taking d itself makes the table exact.
    monkeypatch.setattr(backoff, "full_jitter", lambda value: value)
    limiter = RateLimiter(gi.RateLimit(10, 1.0))
    rate = limiter.rate
    # (troubles in a row, pause in seconds): base one interval, doubling, capped at the window.
    table = [(1, SLOT), (2, 2 * SLOT), (3, 4 * SLOT), (4, 8 * SLOT), (5, 1.0), (6, 1.0)]
    for troubles, pause in table:
        start = fake_clock.now
        limiter.on_server_trouble()
        granted = await fake_clock.run(limiter.acquire())
        assert granted - start == pytest.approx(pause), troubles
    assert limiter.rate == rate  # trouble is not a rate limit
    limiter.on_answer()
    start = fake_clock.now
    limiter.on_server_trouble()
    granted = await fake_clock.run(limiter.acquire())
    assert granted - start == pytest.approx(SLOT)


async def test_a_cancelled_waiter_gives_its_slot_to_the_next(fake_clock: FakeClock) -> None:
    limiter = RateLimiter(gi.RateLimit(10, 1.0))
    await limiter.acquire()
    a = asyncio.create_task(limiter.acquire())
    b = asyncio.create_task(limiter.acquire())
    await fake_clock.settle()
    a.cancel()
    assert await fake_clock.run(b) == pytest.approx(FIRST_GAP)  # a's slot, not the one after
    assert a.cancelled()
    assert limiter.waiting == 0
    c = asyncio.create_task(limiter.acquire())
    await fake_clock.settle()
    assert limiter.waiting == 1
    limiter.close()
    with pytest.raises(asyncio.CancelledError):
        await c
    assert "RateLimiter" in repr(limiter)


async def test_waiting_behind_a_speculative_poll_is_not_demand(fake_clock: FakeClock) -> None:
    # One run at a time on an idle budget: a speculative poll takes each free
    # slot, and when the run is found done the caller's next create (with a
    # planned poll of another run, say) queues behind that slot. The second
    # of the two waits two slots: demand beyond the budget in the old
    # reckoning, which raised the belief window after window until 429s came.
    limiter = RateLimiter(gi.RateLimit(20, 10.0))
    start = limiter.rate
    waits = []
    for _ in range(40):  # four windows
        await fake_clock.advance_to(max(limiter.next_free(), limiter.next_spare()))
        assert limiter.try_acquire(speculative=True)
        queued = fake_clock.now
        poll = asyncio.create_task(limiter.acquire(PRIORITY_POLL))
        create = asyncio.create_task(limiter.acquire(PRIORITY_CREATE))
        await fake_clock.run(asyncio.gather(poll, create))
        waits.append(create.result() - queued)
    assert min(waits) >= SATURATED_WAIT * limiter.interval  # each create waited ~two slots
    assert limiter.adaptive.increases == 0
    assert limiter.rate == start
    # The same two requests behind a slot that real demand took do show it.
    for _ in range(20):
        await fake_clock.advance_to(limiter.next_free())
        assert limiter.try_acquire()
        poll = asyncio.create_task(limiter.acquire(PRIORITY_POLL))
        create = asyncio.create_task(limiter.acquire(PRIORITY_CREATE))
        await fake_clock.run(asyncio.gather(poll, create))
    assert limiter.adaptive.increases >= 1
    assert limiter.rate > start


async def test_spare_slots_go_ahead_of_the_pace_and_keep_room_for_demand(
    fake_clock: FakeClock,
) -> None:
    limiter = RateLimiter(gi.RateLimit(20, 10.0))
    window = 10.0 * (1 + limiter.adaptive.margin)
    await fake_clock.advance_to(100.0)  # idle for a while: credit saved up
    sent = []
    for _ in range(60):
        await fake_clock.advance_to(max(limiter.next_spare(), fake_clock.now))
        # Demand never takes spare slots: a plain try_acquire waits for the pace.
        if limiter.next_free() > fake_clock.now + GRANT_AHEAD:
            assert not limiter.try_acquire()
        assert limiter.try_acquire(speculative=True)
        sent.append(fake_clock.now)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) == pytest.approx(SPARE_SPACING * limiter.interval)
    # Closer than the even pace at first, yet no window holds more than the
    # belief less the reserve, and over time they average the belief.
    assert sum(g < limiter.interval for g in gaps[:8]) >= 6
    for i, t in enumerate(sent):
        assert sum(1 for u in sent[i:] if u < t + window) <= 20 - SPARE_RESERVE
    assert (sent[-1] - sent[0]) / (len(sent) - 1) >= 0.9 * limiter.interval
    # A create arriving now goes within a slot: spare slots never moved the pace.
    queued = fake_clock.now
    granted = await fake_clock.run(limiter.acquire(PRIORITY_CREATE))
    assert granted - queued <= limiter.interval + GRANT_AHEAD


async def test_no_spare_slots_soon_after_a_429(fake_clock: FakeClock) -> None:
    limiter = RateLimiter(gi.RateLimit(20, 10.0))
    await fake_clock.advance_to(100.0)
    assert limiter.try_acquire(speculative=True)
    limiter.on_rate_limited(fake_clock.now, 1.0)
    quiet_until = fake_clock.now + SPARE_QUIET * limiter.window
    while fake_clock.now < quiet_until - limiter.interval:
        # Only the even pace: never ahead of the next regular slot.
        assert limiter.next_spare() >= limiter.next_free() - GRANT_AHEAD
        await fake_clock.advance_to(max(limiter.next_spare(), fake_clock.now))
        assert limiter.try_acquire(speculative=True)
    await fake_clock.advance(limiter.interval * 4)
    assert limiter.try_acquire(speculative=True)
    assert limiter.next_spare() < limiter.next_free()  # spare slots are back


async def test_single_runs_on_an_idle_budget_keep_the_belief_near_the_limit(
    fake_clock: FakeClock,
) -> None:
    # Found by the benchmarks: a create waiting behind a speculative poll's slot
    # counted as saturation, so an idle session raised its belief past the real
    # limit and then drew 429s. One run at a time never saturates the budget.
    # On the fake clock in memory: a loaded machine's lag cannot add 429s.
    config = SimulatorConfig(time_scale=0.02, seed=7)
    real = scaled_rate_limit(config)
    assert real is not None
    beliefs = []
    async with memory_session("runbase", config=config) as (sim, session):
        for i in range(12):
            await fake_clock.run(session.generate(f"one at a time {i}"))
            beliefs.append(session.limiter.rate)
        # Speculative polls use the whole idle budget: a jitter 429 is possible, but rare.
        assert sim.stats.rate_limited <= 0.03 * sim.stats.requests
    assert max(beliefs) <= 1.5 * real.rate, beliefs


def test_a_confirmed_belief_is_paced_at_itself() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0, ceiling=True), now=0.0)
    assert not rate.confirmed and rate.margin == SAFETY_MARGIN
    drive(rate, 0.0, 60.0)  # saturated, 429-free windows at the belief
    assert rate.confirmed and rate.margin == MIN_MARGIN
    assert rate.interval == pytest.approx(0.5 / (1 - MIN_MARGIN))
    now = drive(rate, 60.0, 12.0, saturated=False)
    rate.record_429(now, now)  # at the limit: jitter, the margin widens again
    assert rate.cuts == 0 and rate.margin >= SAFETY_MARGIN


def test_no_window_of_grants_holds_more_than_the_belief() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0), now=0.0)
    assert rate.window_free() == -math.inf
    for i in range(20):
        rate.record_send(i * 0.1, saturated=False)  # a burst: 20 in 2 s
    # The 21st waits for the first to leave the window (plus the margin).
    assert rate.window_free() == pytest.approx(10.0 * (1 + rate.margin))


def test_a_429_above_the_limit_cuts_to_the_count_without_a_gap() -> None:
    rate = AdaptiveRate(gi.RateLimit(40, 10.0), now=0.0)  # believes 4/s, real 2/s
    run_against(rate, WindowServer(20, 10.0), 6.0)
    assert rate.cuts == 1
    assert rate.rate == pytest.approx(2.0)  # 20 went through: that is the limit


def test_a_restored_belief_is_bounded_and_fresh() -> None:
    rate = AdaptiveRate(gi.RateLimit(20, 10.0, ceiling=True), now=0.0)
    rate.restore(5.0, 2.5, confirmed=True, now=100.0)
    assert rate.rate == pytest.approx(2.0)  # the ceiling still holds
    assert rate.confirmed and rate.snapshot() == (pytest.approx(2.0), 2.5, True)
    free = AdaptiveRate(gi.RateLimit(20, 10.0), now=0.0)
    free.restore(1e9, None, confirmed=False, now=0.0)
    assert free.rate == pytest.approx(2.0 * 64) and not free.confirmed


async def test_a_speculative_poll_may_take_a_windows_last_slot_but_one(
    fake_clock: FakeClock,
) -> None:
    # Issue 22: at 1/4 of the budget a web app's windows run 17-18 of 20 full, and
    # a poll due then waited for a second reserved slot to leave the window.
    limiter = RateLimiter(gi.RateLimit(20, 10.0))
    assert SPARE_RESERVE == 1
    for _ in range(18):  # 18 requests at the even pace, all in one window
        await fake_clock.advance_to(max(limiter.next_free(), fake_clock.now))
        assert limiter.try_acquire()
    first = 10.0 * (1 + limiter.adaptive.margin)  # when the first of them leaves the window
    await fake_clock.advance_to(max(limiter.next_free(), limiter.next_spare(), fake_clock.now))
    assert fake_clock.now < first
    assert limiter.try_acquire(speculative=True)  # the 19th: one slot left free
    await fake_clock.advance_to(max(limiter.next_free(), fake_clock.now))
    assert fake_clock.now < first
    assert not limiter.try_acquire(speculative=True)  # never the 20th ...
    granted = await fake_clock.run(limiter.acquire(PRIORITY_CREATE))
    assert granted == pytest.approx(fake_clock.now)  # ... which a create finds free
