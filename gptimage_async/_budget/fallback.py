"""Pacing alone while Redis is away: a local ``RateLimiter`` at this process's share.

The share is one over the processes seen alive at the last Redis answer
(heartbeats), of the last known belief: whole requests over a window stretched
to fit. A process that never heard from Redis cannot see its fleet, and never
assumes it is alone: it starts at ``1/UNSEEN_FLEET`` and probes upward (slow
start, the local belief's rules) to the whole belief at most. Processes
falling back together start at a random point of their first interval, so
they do not all send at once. Waiters leave the local
queue as soon as Redis is back (``rejoined``): left there they would be paced
at a share on top of the full shared rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random

from .._models import RateLimit
from .local import RateLimiter

__all__ = ["UNSEEN_FLEET", "LocalFallback"]

#: A process that never heard from Redis starts at this share of the belief.
UNSEEN_FLEET = 4


class LocalFallback:
    """A share of the key's budget, paced in this process. Times are the loop's clock.

    ``rate`` is the fleet's last known belief (requests/s), ``window`` its
    window (seconds), ``share`` the processes alive (``None``: unknown); ``now`` the
    loop's time; ``rejoined`` is set when Redis answers again.
    """

    def __init__(
        self,
        *,
        rate: float,
        window: float,
        share: int | None,
        now: float,
        rejoined: asyncio.Event,
    ) -> None:
        self.share = max(1, share or UNSEEN_FLEET)
        requests = max(1, math.floor(rate * window / self.share))
        start = RateLimit(requests=requests, per=requests * self.share / rate, ceiling=True)
        # Known share: that, exactly. Unknown: from a small share up to the whole.
        self.limiter = RateLimiter(start, ceiling=None if share else rate)
        self._start = now + random.uniform(0.0, self.limiter.interval)
        self._rejoined = rejoined

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
        return max(self.limiter.next_spare(), self._start)

    def try_acquire(self, now: float, *, speculative: bool) -> bool:
        return now >= self._start and self.limiter.try_acquire(speculative=speculative)

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
