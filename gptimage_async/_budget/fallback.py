"""Pacing alone while Redis is away: a local ``RateLimiter`` at this process's share.

The share is one over the processes seen alive at the last Redis answer
(heartbeats), of the last known belief: whole requests per window of the
server (a longer one if not even one fits), this process's sends of the last
window counted in. A process that never heard from Redis cannot see its fleet, and never
assumes it is alone: it starts at ``1/UNSEEN_FLEET`` and probes upward (slow
start, the local belief's rules) to the whole belief at most. Processes
falling back together start at a random point of their first interval, so
they do not all send at once. Waiters leave the local
queue as soon as Redis is back (``rejoined``): left there they would be paced
at a share on top of the full shared rate.

No spare slots while away: speculative polls take only slots of the even
pace. A spare slot is judged against this process's own log of the window,
which in fallback holds neither the fleet's sends just before Redis went away
nor the other processes' sends now; three processes spending their spare
credit at once, on top of the window the fleet had just filled, drew bursts of
429s a few tenths of a second into every fallback (issue 22, the fleet test).

Nor a burst on the way back: once Redis answers, the process keeps this pace
as a floor under the shared timeline's for ``HANDOVER_WINDOWS`` (the
*handover*). The timeline's log holds none of the sends paced locally, and
the processes rejoin one by one: the first back was given the whole fleet's
pace while the others still sent their shares, a burst of 429s 0.1-0.4 s
after every return. A window on, the log holds a window of the fleet's real
sends again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Iterable

from .._models import RateLimit
from .local import GRANT_AHEAD, RateLimiter

__all__ = ["HANDOVER_WINDOWS", "UNSEEN_FLEET", "LocalFallback"]

logger = logging.getLogger("gptimage_async")

#: A process that never heard from Redis starts at this share of the belief.
UNSEEN_FLEET = 4
#: After Redis is back, the fallback's pace stays a floor this many windows.
HANDOVER_WINDOWS = 1.0


class LocalFallback:
    """A share of the key's budget, paced in this process. Times are the loop's clock.

    ``rate`` is the fleet's last known belief (requests/s), ``window`` its
    window (seconds), ``share`` the processes alive (``None``: unknown); ``now`` the
    loop's time; ``rejoined`` is set when Redis answers again; ``sent``: loop
    times this process's requests went out lately (through Redis).
    """

    def __init__(
        self,
        *,
        rate: float,
        window: float,
        share: int | None,
        now: float,
        rejoined: asyncio.Event,
        sent: Iterable[float] = (),
    ) -> None:
        self.share = max(1, share or UNSEEN_FLEET)
        self._known = share is not None
        self._belief_rate = rate
        requests = max(1, math.floor(rate * window / self.share))
        # Over a whole window at least: the local limiter's window check then holds
        # this process to ``requests`` in every window of the server, and the
        # shares add up to at most the belief. A shorter one (20/3 per 0.5 s read
        # as 6 per 0.45 s) let each process send 7 in some window: the fleet ran at
        # the limit all through the fallback, and a late send drew a 429.
        per = max(window, requests * self.share / rate)
        start = RateLimit(requests=requests, per=per, ceiling=True)
        # Known share: that, exactly. Unknown: from a small share up to the whole.
        self.limiter = RateLimiter(start, ceiling=None if share else rate)
        # The server's window still holds what this process sent through Redis:
        # its share of the next window is what is left of it (window_free).
        for at in sent:
            if at > now - per:
                self.limiter.adaptive.record_send(at, saturated=False)
        self._start = now + random.uniform(0.0, self.limiter.interval)
        self._rejoined = rejoined
        self._handover_until = -math.inf  # the floor applies only once Redis is back

    def log_start(self, exc: BaseException, url: str | None, budget: str, *, first: bool) -> None:
        """Say why and at what pace the process paces alone: a warning the first time."""
        why = type(exc).__name__
        if why == "ReadOnlyError":
            why += ": a read-only replica now, after a failover? Following its primary"
        if not first:
            logger.info("Redis unreachable again (%s): pacing locally", why)
            return
        logger.warning(
            "Redis at %s did not answer (%s): this process paces key budget %s on its own "
            "at %s of %.3g requests/s until Redis is back",
            url or "the given client",
            why,
            budget[:8],
            f"1/{self.share}" if self._known else f"1/{self.share} (the fleet unseen; probing up)",
            self._belief_rate,
        )

    @property
    def rate(self) -> float:
        return self.limiter.rate

    @property
    def interval(self) -> float:
        return self.limiter.interval

    @property
    def waiting(self) -> int:
        return self.limiter.waiting

    def next_free(self) -> float:
        return max(self.limiter.next_free(), self._start)

    def next_spare(self) -> float:
        # Even pace only (no spare slots: see the module's docstring).
        return self.next_free()

    def hand_over(self, now: float, window: float) -> None:
        """Redis is back at ``now``: this pace stays a floor ``HANDOVER_WINDOWS`` windows."""
        self._handover_until = now + HANDOVER_WINDOWS * window

    def floor(self, now: float) -> RateLimiter | None:
        """The local limiter while its pace is the handover's floor, else ``None``."""
        return self.limiter if now < self._handover_until else None

    def try_acquire(self, now: float, *, speculative: bool) -> bool:
        if now < self._start or self.limiter.next_free() > now + GRANT_AHEAD:
            return False  # a speculative poll too waits for a slot of the even pace
        return self.limiter.try_acquire(speculative=speculative)

    async def acquire(self, priority: int, now: float) -> float | None:
        """A slot from the local limiter, or ``None`` if Redis came back first."""
        joined = self._rejoined
        delay = self._start - now
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await joined.wait()
        if joined.is_set():
            return None
        task = asyncio.ensure_future(self.limiter.acquire(priority))
        rejoin = asyncio.ensure_future(joined.wait())
        try:
            await asyncio.wait({task, rejoin}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rejoin.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        return None
