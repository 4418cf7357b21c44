"""One rate limiter per provider key, shared by creates and polls.

Two parts:

``AdaptiveRate`` is the belief about the server's limit. It is pure state
driven by the caller's clock, so tests move time by hand. It cuts the rate on a
429, estimating the server's real limit from how many requests went out in the
last window, and probes gently upward after a window in which the budget was
the bottleneck and no 429 came back.

``RateLimiter`` paces requests evenly at that rate (a GCRA with no burst:
servers count with sliding windows, so a burst of a window's worth followed by
steady pacing would overrun them), hands slots out by priority, and holds every
request back while a 429's ``Retry-After`` or backoff runs. Speculative polls
alone may take *spare* slots ahead of that pace on an idle budget, within a
credit of a few slots and never into the last slots of a window (``SPARE_*``).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
from collections.abc import Iterator
from typing import Protocol

from ._models import RateLimit
from ._retry import backoff_delays

__all__ = [
    "PRIORITY_CREATE",
    "PRIORITY_LAST_CREATE",
    "PRIORITY_POLL",
    "AdaptiveRate",
    "Limiter",
    "RateLimiter",
]

#: Polls of runs that are probably done go before creates: results keep
#: flowing during a bulk job, and a finished run polled late holds memory.
PRIORITY_POLL = 0
PRIORITY_CREATE = 1
#: Except the last creates of a bulk job (its *tail*), which go before polls.
#: The job ends when its last run is done and polled, so its last runs should
#: start as early as possible; the polls they overtake (runs already finished)
#: fill the budget while those runs are in progress, instead of leaving it idle
#: after the last create. See ``Session.submit(ahead_of_polls=...)``.
PRIORITY_LAST_CREATE = -1

#: Pace this far under the believed limit until it is confirmed, so arrival
#: jitter at the server does not push one window over (2% of a 10 s window is
#: 200 ms of slack).
SAFETY_MARGIN = 0.02
#: Once a saturated window at the believed limit passes without a 429, the
#: margin halves per such window down to MIN_MARGIN (50 ms of a 10 s window);
#: a 429 at the limit (jitter) doubles it again, up to MAX_MARGIN.
MIN_MARGIN = 0.005
MAX_MARGIN = 0.04
#: A slot granted late (the event loop woke late) keeps the schedule: the next
#: slot is one interval after the *planned* one, as long as the lateness is
#: under this share of an interval. Past it (after idle time) the schedule
#: restarts from now, so no burst builds up.
CATCH_UP = 0.25
#: A request that waited this many slots shows demand beyond the budget. The
#: wait behind a speculative poll's slot is not counted at all (that poll took
#: budget nobody wanted); the half slot more absorbs a late wake-up.
SATURATED_WAIT = 1.5
#: Spare slots, for speculative polls only: with nobody waiting, one may come
#: SPARE_SPACING of an interval after the last request, ahead of the even
#: pace, on a credit of at most SPARE_BURST slots saved while little was sent
#: (so over time all requests still average the belief), and only while every
#: window keeps SPARE_RESERVE slots of the belief free (a create arriving then
#: finds room at once). An idle session can then poll densely where its runs
#: are likely to finish, not evenly over their whole life.
SPARE_SPACING = 0.5
SPARE_BURST = 8.0
SPARE_RESERVE = 2
#: No spare slots for this many windows after a 429: the server may count
#: spacing after all, and the even pace is what is known to hold.
SPARE_QUIET = 4
#: Slots due this soon are granted in the same pass: at high rates the event
#: loop cannot wake once per slot.
GRANT_AHEAD = 0.001
#: On a 429, never cut below this share of the current rate in one step,
#: unless at least TRUSTED_COUNT requests went out in the window before it.
DECREASE_MIN = 0.5
TRUSTED_COUNT = 5
#: A 429 whose window held at least this share of our rate came at the limit,
#: not above it; a second one within JITTER_MEMORY windows nudges the rate down.
JITTER_BAND = 0.95
JITTER_MEMORY = 4
NUDGE = 0.03
#: Multiplicative probe per saturated, 429-free window: before any 429 (slow
#: start: a limit 2x above the belief is found in one window), while below the
#: rate that drew one, and once past it.
INCREASE_START = 2.0
#: Share of a window over which slow start judges saturation.
SLOW_START_SPAN = 0.5
INCREASE_FAST = 1.25
INCREASE_SLOW = 1.03
#: Windows without a 429 after which the rate that drew one is doubted. The
#: requests a server let through in the window before its 429 *are* its limit:
#: the rate stays there (no gap under it), and is doubted only after a long
#: quiet spell, so a job at the limit draws its 429s once, not every few windows.
FORGET_BAD_AFTER = 30
#: Share of the rate that last drew a 429 that probing climbs back to: all of
#: it, since that count went through (the shared limiter reads this too).
BELOW_BAD = 1.0
#: The learned rate never drifts past these multiples of the starting belief.
MIN_RATE_FACTOR = 1 / 64
MAX_RATE_FACTOR = 64.0


class Limiter(Protocol):
    """What the create path and the poll scheduler need of a rate limiter. Strictly private.

    The seam between the session and a key's request budget: ``RateLimiter``
    below keeps the budget in this process; a shared limiter keeps it in
    Redis for every process on the key. Every time it takes or returns is on
    the event loop's clock (``loop.time()``, seconds), the one clock the
    scheduler reads and wakes on.
    """

    @property
    def rate(self) -> float:
        """The believed limit, in requests per second (before any safety margin)."""
        ...

    @property
    def interval(self) -> float:
        """Seconds between two requests at the current pace."""
        ...

    @property
    def per(self) -> float:
        """The window length of the belief, in seconds."""
        ...

    @property
    def waiting(self) -> int:
        """Requests of this process waiting for a slot."""
        ...

    def next_free(self) -> float:
        """The loop-clock time of this process's next free slot, ignoring waiters."""
        ...

    def next_spare(self) -> float:
        """The loop-clock time a ``try_acquire(speculative=True)`` may next succeed."""
        ...

    def try_acquire(self, *, speculative: bool = False) -> bool:
        """Take a slot only if one is free now and nobody waits; never blocks.

        ``speculative``: the request is opportunistic (a poll ahead of plan);
        a request that then waits behind its slot is not demand beyond the
        budget, and must not raise the belief.
        """
        ...

    async def acquire(self, priority: int = ...) -> float:
        """Wait for a slot (lowest ``priority`` first); return the loop time it was granted."""
        ...

    def promote_creates(self) -> int:
        """Creates waiting now go ahead of polls (``PRIORITY_LAST_CREATE``); return how many.

        Called as a job's tail begins, so its last creates do not overtake the
        creates queued before them, which would then wait behind polls.
        """
        ...

    def on_rate_limited(self, sent_at: float, retry_after: float | None) -> None:
        """A request sent at ``sent_at`` got a 429 (``retry_after`` in seconds, if stated)."""
        ...

    def on_server_trouble(self) -> None:
        """A 5xx or a failed connection: hold every request back with backoff."""
        ...

    def on_answer(self) -> None:
        """An answer that was neither a 429 nor server trouble: backoff restarts."""
        ...

    async def start(self) -> None:
        """Connect whatever the budget lives in (called once, when the session opens)."""
        ...

    def close(self) -> None:
        """Cancel every waiter and timer (the session is closing)."""
        ...

    async def aclose(self) -> None:
        """``close()``, then release connections (called once, when the session closes)."""
        ...


class AdaptiveRate:
    """The limiter's current belief about the server's rate limit, in requests per second.

    >>> r = AdaptiveRate(RateLimit(requests=20, per=10.0))
    >>> round(r.rate, 2)
    2.0
    """

    __slots__ = (
        "_ceiling",
        "_last_429",
        "_last_cut",
        "_lowest_429_rate",
        "_margin",
        "_per",
        "_rate",
        "_sent",
        "_start",
        "_window_429",
        "_window_saturated",
        "_window_start",
        "cuts",
        "increases",
    )

    def __init__(self, belief: RateLimit, *, now: float = 0.0) -> None:
        self._per = float(belief.per)
        self._start = belief.rate
        self._rate = belief.rate
        self._ceiling = belief.rate if belief.ceiling else None
        # The lowest rate (requests/s) a 429 came back at: probing stays below it.
        self._lowest_429_rate: float | None = None
        self._margin = SAFETY_MARGIN
        self._last_cut = -float("inf")
        self._last_429 = -float("inf")
        self._window_start = now
        self._window_saturated = False
        self._window_429 = False
        # Send times within the last window (and a margin): their count at a
        # 429 estimates the limit, and they keep any window at the belief.
        self._sent: collections.deque[float] = collections.deque()
        self.cuts = 0
        self.increases = 0

    @property
    def rate(self) -> float:
        """Requests per second the limiter currently allows (before the safety margin)."""
        return self._rate

    @property
    def interval(self) -> float:
        """Seconds between two requests at the current rate, safety margin included."""
        return 1.0 / (self._rate * (1.0 - self._margin))

    @property
    def per(self) -> float:
        """The window length of the belief, in seconds."""
        return self._per

    @property
    def margin(self) -> float:
        """Share of the belief left unused against jitter (``SAFETY_MARGIN`` until confirmed)."""
        return self._margin

    @property
    def confirmed(self) -> bool:
        """True once a saturated window at the current rate passed without a 429."""
        return self._margin < SAFETY_MARGIN

    def window_free(self) -> float:
        """The earliest time a request keeps every window within the belief.

        Even pacing alone lets a slot granted late (an event loop that woke
        late) sit closer than a window to the one ``limit`` slots after it; a
        server counting a sliding window then sees ``limit + 1``. So the
        request ``limit`` sends back bounds the next one too, on the same
        grant times the server's window will see (plus the margin).
        """
        sent = self._sent
        limit = max(1, int(self._rate * self._per + 1e-9))
        if len(sent) < limit:
            return -math.inf
        return sent[-limit] + self._per * (1.0 + self._margin)

    @property
    def last_429(self) -> float:
        """When (caller's clock, seconds) the last 429 came back (``-inf``: never)."""
        return self._last_429

    def spare_free(self) -> float:
        """The earliest time a spare (speculative) request leaves room for demand in every window.

        Like ``window_free``, with ``SPARE_RESERVE`` slots of the belief kept
        free (fewer for a belief of under ten requests per window).
        """
        limit = max(1, int(self._rate * self._per + 1e-9))
        limit -= min(SPARE_RESERVE, limit // 10)
        sent = self._sent
        if len(sent) < limit:
            return -math.inf
        return sent[-limit] + self._per * (1.0 + self._margin)

    def record_send(self, now: float, *, saturated: bool) -> None:
        """Note a request going out; ``saturated`` if it had to wait for its slot."""
        sent = self._sent
        sent.append(now)
        horizon = now - self._per * (1.0 + MAX_MARGIN)
        while sent and sent[0] <= horizon:
            sent.popleft()
        if len(sent) > 100_000:  # a belief far above reality must not grow this forever
            sent.popleft()
        if saturated:
            self._window_saturated = True
        self._maybe_increase(now)

    def record_429(self, sent_at: float, now: float) -> None:
        """React to a 429 for a request sent at ``sent_at`` (once per congestion event).

        The requests sent in the window before it measure the server's limit:
        it refused the next one. Well above that count, the rate drops to it
        at once (the count itself, not a share under it). At the count, the
        429 is arrival jitter at a correct rate: the margin widens, and only
        if that recurs within a few windows is the rate nudged down.
        """
        self._window_429 = True
        previous_429, self._last_429 = self._last_429, now
        if sent_at < self._last_cut + self._per:
            # Within a window of the previous cut: the server's window still
            # holds the traffic that cut answered (and, where it counts
            # rejected requests, the rejections too). At most one cut per window.
            return
        in_window = sum(1 for t in self._sent if sent_at - self._per < t < sent_at)
        rate = self._rate
        if in_window:
            estimate = in_window / self._per
            at_limit = estimate >= rate * JITTER_BAND
            if at_limit and now - previous_429 > JITTER_MEMORY * self._per:
                # One 429 at the limit: jitter, no cut; but no probing past it either.
                self._lowest_429_rate = (
                    rate if self._lowest_429_rate is None else min(self._lowest_429_rate, rate)
                )
                self._margin = min(MAX_MARGIN, max(SAFETY_MARGIN, self._margin * 2.0))
                return
            new = min(rate, estimate) * (1.0 - NUDGE if at_limit else 1.0)
            failing = min(rate, estimate)
        else:
            # Refused with nothing sent lately: another client shares the key.
            new = rate * DECREASE_MIN
            failing = rate
        self._lowest_429_rate = (
            failing if self._lowest_429_rate is None else min(self._lowest_429_rate, failing)
        )
        # A count of a few requests is no measure of the server's limit (the key
        # may be shared): then cut by half at most. A real count is trusted.
        floor = rate * DECREASE_MIN if in_window < TRUSTED_COUNT else 0.0
        self._rate = max(new, floor, self._start * MIN_RATE_FACTOR)
        self._margin = SAFETY_MARGIN
        self._last_cut = now
        self._window_start = now
        self._window_saturated = False
        self._window_429 = False
        self.cuts += 1

    def _maybe_increase(self, now: float) -> None:
        # Slow start looks every half window: a limit above the belief is
        # found a half window sooner, and overshooting it costs a 429 or two,
        # not budget (the server's window was full at the limit anyway).
        span = self._per if self._lowest_429_rate is not None else self._per * SLOW_START_SPAN
        if now - self._window_start < span:
            return
        if self._window_saturated and not self._window_429:
            self._increase(now)
        self._window_start = now
        self._window_saturated = False
        self._window_429 = False

    def _increase(self, now: float) -> None:
        rate = self._rate
        if (
            self._lowest_429_rate is not None
            and now - self._last_429 > FORGET_BAD_AFTER * self._per
        ):
            # Limits get raised; a long quiet spell makes the old failure doubtful.
            self._lowest_429_rate *= INCREASE_SLOW
        if self._lowest_429_rate is None:
            rate *= INCREASE_START
        elif rate * INCREASE_FAST <= self._lowest_429_rate * BELOW_BAD:
            rate *= INCREASE_FAST
        elif rate < self._lowest_429_rate * BELOW_BAD:
            rate = self._lowest_429_rate * BELOW_BAD
        if self._ceiling is not None:
            rate = min(rate, self._ceiling)
        rate = min(rate, self._start * MAX_RATE_FACTOR)
        if rate > self._rate:
            self._rate = rate
            self._margin = SAFETY_MARGIN  # a new rate is unconfirmed
            self.increases += 1
        else:
            # A saturated, 429-free window at this very rate: it holds.
            self._margin = max(MIN_MARGIN, self._margin / 2.0)

    def recent_sends(self, now: float, *, limit: int = 1000) -> list[float]:
        """Ages (seconds before ``now``) of the last ``limit`` sends still in a window.

        A session opened right after this one sees a server window that
        still holds them: they are how it knows.
        """
        horizon = now - self._per * (1.0 + MAX_MARGIN)
        sent = itertools.islice(self._sent, max(0, len(self._sent) - limit), None)
        return [now - t for t in sent if horizon < t <= now]

    def note_sends(self, ages: list[float], now: float) -> None:
        """Requests sent ``ages`` seconds before ``now`` (by an earlier session) still count."""
        horizon = self._per * (1.0 + MAX_MARGIN)
        earlier = sorted(now - age for age in ages if 0.0 <= age < horizon)
        self._sent.extendleft(reversed(earlier))

    def snapshot(self) -> tuple[float, float | None, bool]:
        """``(rate, bad, confirmed)``: what a later session may start from (requests/s)."""
        return self._rate, self._lowest_429_rate, self.confirmed

    def restore(self, rate: float, bad: float | None, *, confirmed: bool, now: float) -> None:
        """Start from a belief learned earlier (``snapshot()``), within this belief's bounds.

        The rate that drew a 429 is as fresh as ``now``: no probing past it
        for ``FORGET_BAD_AFTER`` windows.
        """
        low, high = self._start * MIN_RATE_FACTOR, self._start * MAX_RATE_FACTOR
        if self._ceiling is not None:
            high = min(high, self._ceiling)
        self._rate = min(max(rate, low), high)
        self._lowest_429_rate = None if bad is None else max(bad, low)
        if self._lowest_429_rate is not None:
            self._last_429 = now
        self._margin = MIN_MARGIN if confirmed else SAFETY_MARGIN

    def __repr__(self) -> str:
        bad = "unknown" if self._lowest_429_rate is None else f"{self._lowest_429_rate:.3g}/s"
        return (
            f"<AdaptiveRate {self._rate:.3g}/s (window {self._per:g}s, margin "
            f"{self._margin:.1%}, last 429 at {bad}, cuts={self.cuts}, "
            f"increases={self.increases})>"
        )


_Waiter = tuple[int, int, float, "asyncio.Future[float]"]


def promote_waiting_creates(waiters: list[_Waiter]) -> int:
    """Give the creates in the heap ``waiters`` ``PRIORITY_LAST_CREATE``, keeping their order.

    Entries are ``(priority, sequence, queued_at, future)``; the sequence
    keeps first-come order among the promoted. Returns how many moved.
    """
    moved = 0
    for i, (priority, seq, queued_at, future) in enumerate(waiters):
        if priority == PRIORITY_CREATE and not future.done():
            waiters[i] = (PRIORITY_LAST_CREATE, seq, queued_at, future)
            moved += 1
    if moved:
        heapq.heapify(waiters)
    return moved


class RateLimiter:
    """Paces a provider key's requests, creates and polls together.

    ``await acquire(priority)`` returns when the request may go out. Slots are
    spaced evenly at the current rate; waiters are served lowest priority
    number first (``PRIORITY_LAST_CREATE``, then ``PRIORITY_POLL``, then
    ``PRIORITY_CREATE``), then first come. ``try_acquire()`` takes a slot only if one
    is free right now and nobody is waiting: it is how speculative polls use
    spare budget without ever delaying anything else (``speculative=True``
    says so, and the limiter then does not mistake the wait of a request
    queued behind that slot for demand beyond the budget).

    Create it inside the running event loop: every time it takes or returns is
    that loop's ``loop.time()`` (seconds), and it wakes waiters with ``call_at``.
    """

    __slots__ = (
        "_backoff",
        "_blocked_until",
        "_credit",
        "_last_send",
        "_loop",
        "_seq",
        "_speculative_until",
        "_tat",
        "_timer",
        "_waiters",
        "adaptive",
        "granted",
        "rate_limited",
    )

    def __init__(self, belief: RateLimit) -> None:
        # The loop's clock for reading and for waking (call_at): one clock, so
        # a slot is never granted before the time it was computed for, and a
        # test that moves the loop's clock moves the limiter with it. Created
        # inside the running loop (the session's open()).
        self._loop = asyncio.get_running_loop()
        self.adaptive = AdaptiveRate(belief, now=self._loop.time())
        self._tat = -float("inf")  # theoretical time of the next free slot
        self._blocked_until = -float("inf")
        # The end of the last slot a speculative poll took: a request queued
        # behind it counts its wait as demand only from then on.
        self._speculative_until = -float("inf")
        # Spare slots: every grant advances _credit by one interval (a GCRA
        # whose burst is SPARE_BURST); their spacing counts from _last_send.
        self._credit = -float("inf")
        self._last_send = -float("inf")
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._backoff: Iterator[float] | None = None
        self.granted = 0
        self.rate_limited = 0

    @property
    def rate(self) -> float:
        """The believed limit, in requests per second (before the safety margin)."""
        return self.adaptive.rate

    @property
    def interval(self) -> float:
        """Seconds between two requests at the current pace, safety margin included."""
        return self.adaptive.interval

    @property
    def per(self) -> float:
        """The window length of the belief, in seconds."""
        return self.adaptive.per

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot (cancelled ones may linger until their turn)."""
        return len(self._waiters)

    def next_free(self) -> float:
        """Loop time (``loop.time()``, seconds) of the next free slot, ignoring waiters."""
        return max(self._tat, self._blocked_until, self.adaptive.window_free())

    def try_acquire(self, *, speculative: bool = False) -> bool:
        """Take a slot if one is free now and nobody waits; never blocks.

        ``speculative``: an opportunistic request (a poll ahead of plan). A
        request that queues behind its slot does not count that wait as
        demand beyond the budget: the belief is raised only by real demand.
        """
        now = self._loop.time()
        if self._waiters:
            return False
        if not speculative:
            if self.next_free() > now + GRANT_AHEAD:
                return False
            self._grant(now, queued_at=None)
            return True
        if self.next_spare() > now + GRANT_AHEAD:
            return False
        if self.next_free() <= now + GRANT_AHEAD:
            self._grant(now, queued_at=None)
            self._speculative_until = self._tat
            return True
        # A spare slot, off the even pace: the schedule of waiters does not move.
        self.granted += 1
        self._charge(now)
        self.adaptive.record_send(now, saturated=False)
        return True

    def next_spare(self) -> float:
        """Loop time (seconds) a ``try_acquire(speculative=True)`` may next succeed.

        Ignores waiters. The next slot of the even pace, or a spare slot ahead
        of it (``SPARE_SPACING``), as long as the window keeps room for demand.
        """
        adaptive = self.adaptive
        interval = adaptive.interval
        ahead = max(
            self._credit - SPARE_BURST * interval,
            adaptive.last_429 + SPARE_QUIET * adaptive.per,
        )
        return max(
            min(self._tat, ahead),
            self._last_send + SPARE_SPACING * interval,
            self._blocked_until,
            adaptive.spare_free(),
        )

    def _charge(self, now: float) -> None:
        self._last_send = now
        self._credit = max(self._credit, now) + self.adaptive.interval

    async def acquire(self, priority: int = PRIORITY_CREATE) -> float:
        """Wait for a slot; return the loop-clock time (seconds) it was granted at."""
        now = self._loop.time()
        if not self._waiters and self.next_free() <= now + GRANT_AHEAD:
            self._grant(now, queued_at=None)
            return now
        future: asyncio.Future[float] = self._loop.create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), now, future))
        if self._timer is None:
            # An armed timer already points at the next free slot: who waits
            # does not move it, and grants and pauses re-arm it themselves.
            self._arm()
        # A slot granted to a waiter cancelled at the same moment is simply
        # lost: spending less than the budget is always safe.
        return await future

    def promote_creates(self) -> int:
        """Creates waiting now go ahead of polls (``PRIORITY_LAST_CREATE``); return how many."""
        # The timer points at the next free slot whoever waits: nothing to re-arm.
        return promote_waiting_creates(self._waiters)

    def on_rate_limited(self, sent_at: float, retry_after: float | None) -> None:
        """A request sent at ``sent_at`` got a 429: slow down and hold everything back."""
        now = self._loop.time()
        self.rate_limited += 1
        self.adaptive.record_429(sent_at, now)
        if retry_after is not None:
            # "Retry-After: 0" means now is too soon, not "hammer": wait one slot at least.
            pause = max(retry_after, self.adaptive.interval)
        else:
            if self._backoff is None:
                self._backoff = backoff_delays(self.adaptive.interval, cap=self.adaptive.per)
            pause = self.adaptive.interval + next(self._backoff)
        self._pause(now, pause)
        # Slots already promised at the old rate are re-spaced at the new one.
        self._tat = max(self._tat, self._blocked_until)
        self._arm()

    def on_server_trouble(self) -> None:
        """A 5xx or a failed connection: hold everything back briefly, rate unchanged.

        Consecutive troubles back off exponentially (capped at one window), so
        an outage does not multiply the request rate with retries; the first
        good answer ends it.
        """
        now = self._loop.time()
        if self._backoff is None:
            self._backoff = backoff_delays(self.adaptive.interval, cap=self.adaptive.per)
        self._pause(now, next(self._backoff))
        self._tat = max(self._tat, self._blocked_until)
        self._arm()

    def _pause(self, now: float, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, now + seconds)

    def on_answer(self) -> None:
        """A request got an answer that was not a 429: the backoff sequence restarts."""
        self._backoff = None

    def _grant(self, now: float, *, queued_at: float | None) -> None:
        interval = self.adaptive.interval
        self._tat = max(self._tat, self._blocked_until, now - CATCH_UP * interval) + interval
        self.granted += 1
        self._charge(now)
        # Demand beat the budget only if a request queued for more than a
        # slot, and not because a pause (429, outage backoff) held everyone
        # back. Nor is the wait behind a speculative poll's slot demand: that
        # poll took budget nobody wanted, and only while nobody waited, so
        # every waiter queued after it and counts from the end of its slot.
        saturated = (
            queued_at is not None
            and now - max(queued_at, self._speculative_until) >= SATURATED_WAIT * interval
            and self._blocked_until <= queued_at
        )
        self.adaptive.record_send(now, saturated=saturated)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiters:
            return
        now = self._loop.time()
        self._timer = self._loop.call_at(max(self.next_free(), now), self._dispatch)

    def _dispatch(self) -> None:
        self._timer = None
        now = self._loop.time()
        waiters = self._waiters
        while waiters:
            if waiters[0][3].done():
                heapq.heappop(waiters)  # cancelled while waiting
                continue
            if self.next_free() > now + GRANT_AHEAD:
                break
            _, _, queued_at, future = heapq.heappop(waiters)
            self._grant(now, queued_at=queued_at)
            future.set_result(now)
        self._arm()

    async def start(self) -> None:
        """Nothing to connect: the budget lives in this process."""

    async def aclose(self) -> None:
        """Same as ``close()``: nothing else to release."""
        self.close()

    def close(self) -> None:
        """Cancel the timer and every waiter (the session is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for *_, future in self._waiters:
            future.cancel()
        self._waiters.clear()

    def __repr__(self) -> str:
        return (
            f"<RateLimiter {self.adaptive.rate:.3g}/s waiting={len(self._waiters)} "
            f"granted={self.granted} rate_limited={self.rate_limited}>"
        )
