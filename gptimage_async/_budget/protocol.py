"""The seam between the layers above and a key's request budget: priorities and ``Limiter``."""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .belief import AdaptiveRate

__all__ = [
    "PRIORITY_CREATE",
    "PRIORITY_LAST_CREATE",
    "PRIORITY_POLL",
    "Limiter",
    "SharedBudget",
    "Waiter",
    "promote_waiting_creates",
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

#: A queued request: ``(priority, sequence, queued_at, future)``; the sequence
#: keeps first-come order within a priority.
Waiter = tuple[int, int, float, "asyncio.Future[float]"]


@dataclass(frozen=True, slots=True)
class SharedBudget:
    """Where a shared budget lives: what a learned-state store needs to sit next to it.

    ``client`` is the ``redis.asyncio.Redis`` the limiter talks through,
    ``timeout`` the seconds every Redis call may take, ``budget`` the budget's
    name (``budget_id``: an HMAC of provider and API key, never the key).
    """

    client: Any
    timeout: float
    budget: str


class Limiter(Protocol):
    """What the create path and the poll scheduler need of a rate limiter. Strictly private.

    ``RateLimiter`` keeps the budget in this process; ``SharedLimiter`` keeps
    it in Redis for every process on the key. Every time it takes or returns
    is on the event loop's clock (``loop.time()``, seconds), the one clock the
    scheduler reads and wakes on. Nothing above needs to know which it is:
    ``belief`` and ``shared`` say what a caller may do with it.
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
    def window(self) -> float:
        """The length of the server's counting window the belief is about, in seconds."""
        ...

    @property
    def waiting(self) -> int:
        """Requests of this process waiting for a slot."""
        ...

    @property
    def belief(self) -> AdaptiveRate | None:
        """The belief this process alone keeps (a learned state saves and restores it).

        ``None`` when the belief is the fleet's: it lives in Redis, and a
        process must not overwrite it from a file.
        """
        ...

    @property
    def shared(self) -> SharedBudget | None:
        """The Redis the budget is shared through, or ``None`` for a process-local budget."""
        ...

    @property
    def redis_errors(self) -> int:
        """Redis calls that failed, each request paced locally instead (0: none, or no Redis)."""
        ...

    @property
    def live_processes(self) -> int:
        """Processes sharing the budget, seen alive lately (1 for a process-local budget).

        A process's fair share of the rate is about ``rate / live_processes``.
        """
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


def promote_waiting_creates(waiters: list[Waiter]) -> int:
    """Give the creates in the heap ``waiters`` ``PRIORITY_LAST_CREATE``, keeping their order.

    The sequence keeps first-come order among the promoted. Returns how many moved.
    """
    moved = 0
    for i, (priority, seq, queued_at, future) in enumerate(waiters):
        if priority == PRIORITY_CREATE and not future.done():
            waiters[i] = (PRIORITY_LAST_CREATE, seq, queued_at, future)
            moved += 1
    if moved:
        heapq.heapify(waiters)
    return moved
