"""Recorded 429 traces for the limiters: a sliding-window server, storms, and a closed-loop driver.

``TraceServer`` answers as a provider's rate limiter does (``limit`` requests
per ``window`` seconds, sliding), except during its ``storms``: spans of its
clock in which it refuses everything ("temporarily overloaded"), and from
``drops_to``: a genuine lower limit from a given time on. ``drive`` sends
saturated traffic through any ``Limiter`` against it, on whatever clock the
limiter's loop has (a fake one, or real time for the shared limiter).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gptimage_async._budget import PRIORITY_CREATE, Limiter


@dataclass
class TraceServer:
    limit: int
    window: float
    storms: list[tuple[float, float]] = field(default_factory=list)
    drops_to: tuple[float, int] | None = None
    retry_after: float | None = None
    log: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)

    def hit(self, now: float) -> bool:
        self.log = [t for t in self.log if t > now - self.window]
        limit = self.limit
        if self.drops_to is not None and now >= self.drops_to[0]:
            limit = self.drops_to[1]
        storm = any(a <= now < b for a, b in self.storms)
        ok = not storm and len(self.log) < limit
        if ok:
            self.log.append(now)
            self.accepted.append(now)
        else:
            self.refused.append(now)
        return ok

    def accepted_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.accepted if start <= t < end)


async def drive(limiter: Limiter, server: TraceServer, until: float, *, senders: int = 3) -> None:
    """Keep ``senders`` requests waiting (saturated demand) until the loop clock reads ``until``."""
    loop = asyncio.get_running_loop()

    async def sender() -> None:
        while loop.time() < until:
            sent = await limiter.acquire(PRIORITY_CREATE)
            if server.hit(sent):
                limiter.on_answer()
            else:
                limiter.on_rate_limited(sent, server.retry_after)

    await asyncio.gather(*(sender() for _ in range(senders)))
