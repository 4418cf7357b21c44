"""Every delay and cap of the retry logic, and reading ``Retry-After``.

Retry-After is read first (milliseconds, seconds or an HTTP-date, capped);
only where the server gave none does jittered exponential backoff from
``backoff`` take over.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from collections.abc import Callable, Iterator, Mapping

import backoff

__all__ = [
    "MAX_RETRY_AFTER",
    "backoff_delays",
    "parse_retry_after",
]

#: The longest Retry-After we obey; a server asking for more is waited on this long.
MAX_RETRY_AFTER = 120.0
#: Jittered exponential backoff for transient failures: base, factor and cap, in seconds.
BACKOFF_BASE = 0.25
BACKOFF_FACTOR = 2.0
BACKOFF_MAX = 30.0


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


def backoff_delays(
    base: float = BACKOFF_BASE, *, factor: float = BACKOFF_FACTOR, cap: float = BACKOFF_MAX
) -> Iterator[float]:
    """Full-jitter exponential delays: ``uniform(0, min(cap, base * factor**n))``.

    >>> d = backoff_delays(0.1); 0 <= next(d) <= 0.1
    True
    """
    expo = backoff.expo(base=factor, factor=base, max_value=cap)
    next(expo)  # backoff's generators are primed with a send(None)
    for value in expo:
        yield backoff.full_jitter(value)
