"""The local limiter: a key's budget kept in this process (a GCRA with no burst).

``RateLimiter`` paces requests evenly at the belief's rate (servers count with
sliding windows, so a burst of a window's worth followed by steady pacing would
overrun them), hands slots out by priority, and holds every request back while
a 429's ``Retry-After`` or backoff runs. Speculative polls alone may take
*spare* slots ahead of that pace on an idle budget, within a credit of a few
slots and never into the last slots of a window (``SPARE_*``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterator

from .._models import RateLimit
from .._retry import backoff_delays
from .belief import AdaptiveRate
from .protocol import PRIORITY_CREATE, SharedBudget, Waiter, promote_waiting_creates

__all__ = ["CATCH_UP", "GRANT_AHEAD", "RateLimiter"]

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
#: are likely to finish, not evenly over their whole life. One slot kept, not
#: two (issue 22, fake clock, 12 seeds): a web app's polls at 1/4 of the budget
#: waited for that second slot (windows run 17-18 of 20 full there), 4.5% ->
#: 4.2% of the run late, 3/8: 10.0% -> 9.3%, with creates waiting no longer
#: (one slot still free per window) and idle runs 3.76% -> 3.70% late (24 seeds).
#: None kept was tried: creates at 3/8 then waited 0.24 s instead of 0.13 s.
SPARE_SPACING = 0.5
SPARE_BURST = 8.0
SPARE_RESERVE = 1
#: No spare slots for this many windows after a 429: the server may count
#: spacing after all, and the even pace is what is known to hold.
SPARE_QUIET = 4
#: Slots due this soon are granted in the same pass: at high rates the event
#: loop cannot wake once per slot.
GRANT_AHEAD = 0.001


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

    ``ceiling`` (requests/s) caps probing when it is not the belief itself
    (default: the belief's own ``ceiling`` flag). Create it inside the running
    event loop: every time it takes or returns is
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

    def __init__(self, belief: RateLimit, *, ceiling: float | None = None) -> None:
        # The loop's clock for reading and for waking (call_at): one clock, so
        # a slot is never granted before the time it was computed for, and a
        # test that moves the loop's clock moves the limiter with it. Created
        # inside the running loop (the session's open()).
        self._loop = asyncio.get_running_loop()
        self.adaptive = AdaptiveRate(belief, now=self._loop.time(), ceiling=ceiling)
        self._tat = -float("inf")  # theoretical time of the next free slot
        self._blocked_until = -float("inf")
        # The end of the last slot a speculative poll took: a request queued
        # behind it counts its wait as demand only from then on.
        self._speculative_until = -float("inf")
        # Spare slots: every grant advances _credit by one interval (a GCRA
        # whose burst is SPARE_BURST); their spacing counts from _last_send.
        self._credit = -float("inf")
        self._last_send = -float("inf")
        self._waiters: list[Waiter] = []
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
    def window(self) -> float:
        """The length of the server's counting window the belief is about, in seconds."""
        return self.adaptive.window

    @property
    def belief(self) -> AdaptiveRate:
        """This process's belief (the budget is its alone)."""
        return self.adaptive

    @property
    def shared(self) -> SharedBudget | None:
        """``None``: the budget lives in this process."""
        return None

    @property
    def redis_errors(self) -> int:
        """0: no Redis to fail."""
        return 0

    @property
    def live_processes(self) -> int:
        """1: the budget is this process's alone."""
        return 1

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
            adaptive.last_429 + SPARE_QUIET * adaptive.window,
        )
        return max(
            min(self._tat, ahead),
            self._last_send + SPARE_SPACING * interval,
            self._blocked_until,
            adaptive.spare_free(SPARE_RESERVE),
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
                self._backoff = backoff_delays(self.adaptive.interval, cap=self.adaptive.window)
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
            self._backoff = backoff_delays(self.adaptive.interval, cap=self.adaptive.window)
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
