"""Every delay and cap of the retry logic, and reading ``Retry-After``.

Retry-After is read first (milliseconds, seconds or an HTTP-date, capped);
only where the server gave none does jittered exponential backoff take over.
There is one backoff formula, ``backoff_ceiling``: the limiter's outage
pauses, the scheduler's poll retries and the downloads' retries all grow by
it, each from its own base and up to its own cap, then jittered.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping

import backoff

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_FACTOR",
    "BACKOFF_MAX",
    "MAX_BACKOFF_EXPONENT",
    "MAX_RETRY_AFTER",
    "POLL_JITTER_FLOOR",
    "backoff_ceiling",
    "backoff_delays",
    "full_jitter",
    "parse_retry_after",
    "poll_jitter",
]

#: The longest Retry-After we obey; a server asking for more is waited on this long.
MAX_RETRY_AFTER = 120.0
#: Default backoff for transient failures (image downloads): the first retry
#: waits up to ``BACKOFF_BASE`` seconds, each next one ``BACKOFF_FACTOR`` times
#: longer, none longer than ``BACKOFF_MAX`` seconds. The limiter (outage
#: pauses) and the scheduler (poll retries) use the same formula from their own
#: base (the request interval) and cap (the rate-limit window).
BACKOFF_BASE = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_MAX = 10.0
#: The exponent stops growing here, so a long outage never overflows a float.
MAX_BACKOFF_EXPONENT = 16
#: Poll retries wait between this share of their delay and all of it: spread
#: enough that runs which failed together do not retry together, never early.
POLL_JITTER_FLOOR = 0.5


def parse_retry_after(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait according to the answer's headers, or ``None`` if it gave none.

    Reads ``retry-after-ms``, then ``Retry-After`` as delta-seconds (decimals
    accepted) or an HTTP-date in any of RFC 9110's three forms (IMF-fixdate,
    RFC 850, asctime), all of which are UTC: a date without a zone, or with
    ``-0000``, is never read as local time. An unreadable ``retry-after-ms``
    is ignored, not allowed to hide a valid ``Retry-After``. The result is
    capped at ``MAX_RETRY_AFTER`` and never negative: a date in the past means
    "now is too soon", which the caller turns into its smallest real wait.
    """
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None and ms >= 0.0:
        return _clamp(ms / 1000.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    value = _seconds(raw)
    if value is not None:
        return _clamp(value)
    try:
        parsed = email.utils.parsedate_tz(raw.strip())
        if parsed is None:
            return None
        # The fields are read as UTC; a missing zone (asctime, -0000) is UTC too.
        # datetime() also refuses fields out of range (a 99th day, a 25th hour).
        wall = datetime.datetime(*parsed[:6], tzinfo=datetime.UTC)
        when = wall.timestamp() - (parsed[9] or 0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _clamp(when - now())


def _seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff_ceiling(retries: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """The longest wait before retry number ``retries + 1``, in seconds.

    ``min(cap, base * BACKOFF_FACTOR ** min(retries, MAX_BACKOFF_EXPONENT))``:
    ``retries`` is how many retries came before (0 for the first).

    >>> backoff_ceiling(0, base=0.5, cap=10.0), backoff_ceiling(3, base=0.5, cap=10.0)
    (0.5, 4.0)
    >>> backoff_ceiling(99, base=0.5, cap=10.0)
    10.0
    """
    return min(cap, base * BACKOFF_FACTOR ** min(retries, MAX_BACKOFF_EXPONENT))


def full_jitter(ceiling: float) -> float:
    """A wait drawn uniformly from ``[0, ceiling]`` seconds (AWS's "full jitter")."""
    return backoff.full_jitter(ceiling)


def poll_jitter(ceiling: float) -> float:
    """A wait drawn uniformly from ``[POLL_JITTER_FLOOR * ceiling, ceiling]`` seconds."""
    return random.uniform(POLL_JITTER_FLOOR, 1.0) * ceiling


def backoff_delays(base: float = BACKOFF_BASE, *, cap: float = BACKOFF_MAX) -> Iterator[float]:
    """Full-jitter waits before each retry: ``full_jitter(backoff_ceiling(n, base, cap))``.

    >>> d = backoff_delays(0.1); 0 <= next(d) <= 0.1
    True
    """
    retries = 0
    while True:
        yield full_jitter(backoff_ceiling(retries, base=base, cap=cap))
        retries += 1
