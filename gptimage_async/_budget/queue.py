"""This process's queue for slots of the shared timeline, and its leases.

``SlotQueue`` asks Redis (``Timeline.admit``) for a slot for its best local
waiter, one at a time, so booking is first come, first served across
processes: a busy process cannot starve a light one. A poll may *book ahead*
(given the next free slot however far away, it sleeps until it); a create is
admitted only if the next free slot is about now and no other process has
polls waiting; a speculative poll only takes a slot free now when nobody in
the fleet waits. Redis cannot be asked synchronously, so ``try_acquire`` asks
in the background and a later call takes the slot as a *lease* (usable for
``LEASE_INTERVALS`` intervals). Trade-off: creates ask Redis again for their turn (one
round trip per free slot per waiting process, cheap at the rates providers
allow) instead of queueing in Redis, which keeps the script small and leaves
nothing to clean up when a process dies.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from .belief import AdaptiveRate
from .local import CATCH_UP, GRANT_AHEAD, SATURATED_WAIT
from .protocol import PRIORITY_CREATE, PRIORITY_POLL, Waiter, promote_waiting_creates
from .timeline import Timeline

__all__ = ["Redirect", "SlotQueue"]

logger = logging.getLogger("gptimage_async")

#: Internal priority of a speculative poll: after every real waiter.
SPECULATIVE = 2
#: A leased slot is usable this many intervals after its time. A caller refused
#: while the lease was asked for (``try_acquire``) looks again one interval
#: after the next free slot (``_scheduler``): half an interval, it found every
#: lease lapsed, asked again, and one slot an interval went unused (issue 22:
#: a fleet's last windows, measured from the grant log).
LEASE_INTERVALS = 1.5
#: Grant times kept for a fallback to count in (at most this many: a window's).
SENDS_KEPT = 1024
#: While a bug or Redis keeps the queue from serving, try again this often (seconds).
RETRY_EVERY = 0.25


class Redirect(Exception):
    """Tells a waiter to take its slot from the local fallback limiter."""


def wire_priority(priority: int) -> int:
    """The priority class Redis sees: 0 poll, 1 create, 2 speculative.

    A job's last creates (``PRIORITY_LAST_CREATE``) go in the polls' class.
    As creates they would deadlock a fleet: this process's polls wait behind
    them, so it reports polls waiting, and another process in the same state
    would then hold its creates back for ours, and ours for its.
    """
    return max(PRIORITY_POLL, min(priority, SPECULATIVE))


class SlotQueue:
    """Waiters of this process for slots of the shared timeline. Times are the loop's clock.

    ``on_grant(now, saturated, version)`` is told of every request that goes
    out (``saturated``: it waited for its slot, not for a pause; ``version``:
    the fleet's belief version Redis named with the slot, if it did);
    ``on_failure(exc)`` of every Redis call that failed. A slot booked and
    then given up (a pause began) leaves the fleet's log with the next ask.
    """

    def __init__(
        self,
        timeline: Timeline,
        belief: AdaptiveRate,
        *,
        clock: Callable[[], float],
        on_grant: Callable[[float, bool, int | None], None],
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self._timeline = timeline
        self._belief = belief
        self._clock = clock
        self._on_grant = on_grant
        self._on_failure = on_failure
        self._waiters: list[Waiter] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._lease: tuple[float, float, str] | None = None  # (slot, usable until, its name)
        # (slot name, loop time sent) not yet in the fleet's log: it holds real send times.
        self._sent_at: list[tuple[str, float]] = []
        self._spec_pending = False
        self._next_free = -math.inf
        self._released: list[str] = []  # slots booked, then given up: out of the fleet's log
        self.paused_until = -math.inf
        self.serving = True  # False while the limiter paces locally
        self.granted = 0
        #: Loop times of this process's latest grants (the fallback counts them in).
        self.sends: deque[float] = deque(maxlen=SENDS_KEPT)

    @property
    def rate(self) -> float:
        """The fleet's believed limit as this process last took it, requests per second."""
        return self._belief.rate

    @property
    def interval(self) -> float:
        """Seconds between two of the key's requests at the fleet's pace, margin included."""
        return self._belief.interval

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot (speculative asks not counted)."""
        return sum(1 for w in self._waiters if w[0] < SPECULATIVE and not w[3].done())

    def next_free(self) -> float:
        """Loop time of the key's next free slot as last seen, ignoring waiters."""
        now = self._clock()
        lease = self._valid_lease(now)
        if lease is not None:
            return lease
        free = max(self._next_free, self.paused_until)
        if self._spec_pending:
            # A speculative slot is being asked for: look again in a moment.
            free = max(free, now + GRANT_AHEAD)
        return free

    def next_spare(self) -> float:
        """Speculative polls take leased slots of the shared timeline: ``next_free()``."""
        return self.next_free()

    def try_acquire(self, now: float, *, speculative: bool) -> bool:
        """Take a leased slot if one is ready and nobody waits; else ask for one, return False.

        ``speculative`` changes nothing here: a lease is a slot of the fleet's pace.
        """
        if self._valid_lease(now) is not None and not self.waiting:
            self._granted(now, saturated=False, slot=self._lease_name())
            return True
        if not self._spec_pending and not self.waiting and now >= self.paused_until:
            self._spec_pending = True
            self._enqueue(SPECULATIVE, now)
        return False

    async def acquire(self, priority: int = PRIORITY_CREATE) -> float:
        """Wait for a slot; raises ``Redirect`` if the limiter falls back meanwhile."""
        now = self._clock()
        if self._valid_lease(now) is not None and not self.waiting:
            self._granted(now, saturated=False, slot=self._lease_name())
            return now
        return await self._enqueue(priority, now)

    def promote_creates(self) -> int:
        """Creates waiting now go ahead of this process's polls (see ``wire_priority``)."""
        moved = promote_waiting_creates(self._waiters)
        if moved:
            self._wake.set()  # the head may have changed
        return moved

    def pause_until(self, until: float) -> None:
        """Hold this process's requests back until ``until`` (a pause the fleet shares)."""
        if until > self.paused_until:
            self.paused_until = until
            self._lease = None
            self._wake.set()

    def redirect_all(self) -> None:
        """Every waiter goes to the local fallback (speculative asks are dropped)."""
        for priority, _, _, future in self._waiters:
            if future.done():
                continue
            if priority == SPECULATIVE:
                future.cancel()
            else:
                future.set_exception(Redirect())
        self._waiters.clear()
        self._spec_pending = False
        self._lease = None

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        for *_, future in self._waiters:
            future.cancel()
        self._waiters.clear()

    def _lease_name(self) -> str:
        return self._lease[2] if self._lease is not None else ""

    def _granted(
        self, now: float, *, saturated: bool, version: int | None = None, slot: str = ""
    ) -> None:
        self._lease = None
        self.granted += 1
        self.sends.append(now)
        if slot:
            self._sent_at.append((slot, now))
            if not self.waiting:
                self._wake.set()  # no ask follows to carry it: the serve loop logs it
        self._on_grant(now, saturated, version)

    def _valid_lease(self, now: float) -> float | None:
        lease = self._lease
        if lease is None:
            return None
        if now > lease[1] or now < self.paused_until:
            self._lease = None
            return None
        return lease[0]

    def _enqueue(self, priority: int, now: float) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), now, future))
        self._wake.set()
        return future

    def _head(self) -> Waiter | None:
        waiters = self._waiters
        while waiters and waiters[0][3].done():
            entry = heapq.heappop(waiters)
            if entry[0] == SPECULATIVE:
                self._spec_pending = False
        return waiters[0] if waiters else None

    async def run(self) -> None:
        """Serve waiters for good: a bug in it must not leave every waiter hanging."""
        while True:
            try:
                await self._serve()
            except Exception as exc:  # pragma: no cover - a bug; waiters go local
                logger.exception("the shared limiter failed; pacing locally")
                self._on_failure(exc)
                await asyncio.sleep(RETRY_EVERY)

    async def _serve(self) -> None:
        """Ask Redis for a slot for the best local waiter, one at a time."""
        wake = self._wake
        task = asyncio.current_task()
        while True:
            _raise_if_cancelled(task)
            head = self._head()
            if head is None or not self.serving:
                if self._sent_at and self.serving:
                    await self._log_sent()
                    continue
                wake.clear()
                await wake.wait()
                continue
            now = self._clock()
            if now < self.paused_until:
                # The pause is known locally already: no need to ask Redis until it ends.
                # The sends before it go in the log now: a 429's evidence reads them.
                if self._sent_at:
                    await self._log_sent()
                    continue
                await self._sleep_until(self.paused_until)
                continue
            priority = head[0]
            live = [w[0] for w in self._waiters if not w[3].done()]
            more_polls = live.count(PRIORITY_POLL) - (priority == PRIORITY_POLL)
            more = sum(1 for p in live if p < SPECULATIVE) - (priority < SPECULATIVE)
            try:
                got = await self._timeline.admit(
                    wire_priority(priority),
                    more_polls=more_polls > 0,
                    more=more > 0,
                    interval=self._belief.interval,
                    grant_ahead=GRANT_AHEAD,
                    catch_up=CATCH_UP,
                    released=self._released,
                    sent_at=self._sent_at,
                )
                self._released = []
                self._sent_at = []
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._on_failure(exc)
                continue
            if self._timeline.pause_left > 0:
                self.pause_until(self._clock() + self._timeline.pause_left)
            if not got.admitted:
                self._next_free = got.at
                if priority == SPECULATIVE:
                    self._drop_speculative()
                    continue
                await self._sleep_until(got.at, interruptible_by_priority=priority)
                continue
            self._next_free = got.at + got.interval
            if got.at > self._clock() + GRANT_AHEAD:
                await self._sleep_until(got.at)
                if self.paused_until > got.at:
                    # A pause began after booking: the slot is given up, and
                    # the fleet's log (the belief's evidence) forgets it.
                    self._released.append(got.slot)
                    continue
            self._hand_out(got.at, got.interval, got.version, got.slot)

    async def _log_sent(self) -> None:
        sent_at, self._sent_at = self._sent_at, []
        try:
            await self._timeline.sent(sent_at)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_failure(exc)

    def _hand_out(self, at: float, interval: float, version: int, slot: str) -> None:
        now = self._clock()
        head = self._head()
        if head is not None and head[0] < SPECULATIVE:
            heapq.heappop(self._waiters)
            queued_at = head[2]
            # Demand beat the budget only if it waited for more than a slot,
            # and not because a pause held everyone back.
            saturated = (
                now - queued_at >= SATURATED_WAIT * interval and self.paused_until <= queued_at
            )
            self._granted(now, saturated=saturated, version=version, slot=slot)
            head[3].set_result(now)
            return
        if head is not None:  # the speculative ask: its slot becomes a lease
            heapq.heappop(self._waiters)
            head[3].cancel()
            self._spec_pending = False
        self._lease = (at, max(at, now) + LEASE_INTERVALS * interval, slot)

    def _drop_speculative(self) -> None:
        head = self._head()
        if head is not None and head[0] == SPECULATIVE:
            heapq.heappop(self._waiters)
            head[3].cancel()
        self._spec_pending = False

    async def _sleep_until(
        self, when: float, *, interruptible_by_priority: int | None = None
    ) -> None:
        """Sleep until ``when`` (loop time); a longer pause or a more urgent waiter ends it."""
        wake = self._wake
        task = asyncio.current_task()
        while True:
            _raise_if_cancelled(task)
            head = self._head()
            if self.paused_until > when and self._clock() < self.paused_until:
                return
            if (
                interruptible_by_priority is not None
                and head is not None
                and head[0] < interruptible_by_priority
            ):
                return
            delay = when - self._clock()
            if delay <= 0:
                return
            wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                return


def _raise_if_cancelled(task: asyncio.Task[Any] | None) -> None:
    """Raise ``CancelledError`` if ``task`` was cancelled, even if the cancel was lost.

    redis-py may finish a command it was cancelled in and return normally (the
    cancel swallowed): a queue that then waited again would wait for good, and
    the session's close with it. Checked before each of the queue's waits.
    """
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
