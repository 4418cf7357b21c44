"""Per-key sliding-window rate limiter, the way the providers enforce it."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

from gptimage_async.simulator._config import RetryAfterMode

__all__ = ["SlidingWindowLimiter", "format_retry_after"]


class SlidingWindowLimiter:
    """Admit at most ``limit`` requests per key in any ``window`` seconds.

    The limit and window are passed on every call rather than fixed at
    construction, so a test can tighten or relax the limit while requests are
    in flight and the very next request obeys it.

    With ``count_rejected`` the rejected request is logged too (the
    "INCR-then-check" counter many real gateways use): a client that keeps
    knocking keeps the window full and never gets back in, which is the
    behaviour a polite client must survive by honouring ``Retry-After``.
    """

    __slots__ = ("_clock", "_logs")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._logs: dict[str, deque[float]] = {}

    def __repr__(self) -> str:
        busiest = max((len(log) for log in self._logs.values()), default=0)
        return f"<SlidingWindowLimiter keys={len(self._logs)} busiest={busiest}>"

    def acquire(self, key: str, limit: int, window: float, count_rejected: bool) -> float | None:
        """Record one request; ``None`` if admitted, else seconds until a slot frees."""
        now = self._clock()
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = deque()
        cutoff = now - window
        while log and log[0] <= cutoff:
            log.popleft()
        if len(log) < limit:
            log.append(now)
            return None
        if count_rejected:
            log.append(now)
        # The log is in time order: the next request is admitted once fewer
        # than `limit` entries remain, i.e. when entry [len - limit] expires.
        return max(log[len(log) - limit] + window - now, 0.0)

    def in_window(self, key: str, window: float) -> int:
        """How many requests of ``key`` the window currently holds."""
        log = self._logs.get(key)
        if not log:
            return 0
        cutoff = self._clock() - window
        return sum(1 for t in log if t > cutoff)

    def clear(self) -> None:
        """Forget every key's history."""
        self._logs.clear()


def format_retry_after(mode: RetryAfterMode, delay: float, wall_now: float) -> str | None:
    """The ``Retry-After`` value for a slot that frees ``delay`` seconds from now.

    ``seconds`` keeps millisecond precision because compressed time makes
    sub-second waits normal; it never says ``0``, which some clients read as
    "retry at once" and others as "no hint". ``http-date`` can only say whole
    seconds, so it rounds up: a client that obeys it is never early.
    """
    if mode == "none":
        return None
    if mode == "seconds":
        millis = max(math.ceil(round(delay * 1000, 6)), 1)
        return f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    moment = datetime.fromtimestamp(math.ceil(wall_now + delay), UTC)
    return format_datetime(moment, usegmt=True)
