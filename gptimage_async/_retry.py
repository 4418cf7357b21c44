"""Every delay and cap of the retry logic, and reading ``Retry-After``.

Retry-After is read first (milliseconds, seconds or an HTTP-date, capped);
only where the server gave none does jittered exponential backoff from
``backoff`` take over.
"""

from __future__ import annotations

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
    accepted) or an HTTP-date (RFC 9110). The result is capped at
    ``MAX_RETRY_AFTER`` and never negative: a date in the past means "now is
    too soon", which the caller turns into its smallest real wait.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return _clamp(value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        return _clamp(when.timestamp() - now())
    if not math.isfinite(value):
        return None
    return _clamp(value)


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
