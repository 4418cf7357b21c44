"""What a log of sends and refusals says around a 429: how much went through, and streaks.

The belief (``belief.py``) reads it to tell a storm (the server let more of
ours through in one window lately, and refuses ours one after another) from
a limit; the fleet's log in Redis (``timeline.py``) is handed over as
``Evidence``, one process's own log is its sends and refusals.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["STORM_WINDOWS", "STREAK", "Evidence", "refused_before", "went_through"]

#: A window the server let through whole is remembered this many windows: a
#: 429 at a lower count within them is a pause (overload), not a new limit.
STORM_WINDOWS = 4
#: A refusal within this many sends after another is part of a streak.
STREAK = 2


@dataclass(frozen=True, slots=True)
class Evidence:
    """What was sent and refused around a 429, when it is not this belief's own log.

    ``sends`` and ``refusals`` are send times (the caller's clock, seconds,
    ascending) of requests granted and of requests answered 429; ``since`` is
    when the log began (``-inf``: it covers all of the time asked about).
    """

    sends: Sequence[float]
    refusals: Sequence[float]
    since: float = -math.inf


def went_through(
    sends: Sequence[float], refusals: Sequence[float], before: float, window: float
) -> int:
    """Most sends in one window ending at a send in the last ``STORM_WINDOWS`` windows
    before ``before`` with no refused send in it: what the server let through lately.

    One pass (two pointers): a 429 at a high rate costs no more than its log.
    """
    best = 0
    first = bisect.bisect_left(sends, before - STORM_WINDOWS * window)
    last = bisect.bisect_left(sends, before)
    if first >= last:
        return 0
    j = bisect.bisect_right(sends, sends[first] - window)  # first send inside the window
    r = bisect.bisect_right(refusals, sends[first] - window)  # first refusal inside it
    for i in range(first, last):
        end = sends[i]
        while sends[j] <= end - window:
            j += 1
        while r < len(refusals) and refusals[r] <= end - window:
            r += 1
        if r < len(refusals) and refusals[r] <= end:
            continue  # a refusal in this window: it did not go through whole
        best = max(best, i + 1 - j)
    return best


def refused_before(
    sends: Sequence[float], refusals: Sequence[float], sent_at: float, slack: float
) -> bool:
    """True if one of the ``STREAK`` sends just before the one at ``sent_at`` was refused.

    A streak, allowing for a fleet whose refusals reach Redis slightly out of
    order. ``slack`` (seconds, under a slot): how far from its logged send a
    refusal may be logged (each log converts clocks on its own, a fraction of
    a millisecond apart). The refusal at ``sent_at`` is never its own streak.
    """
    current = bisect.bisect_right(sends, sent_at + slack / 2) - 1
    for previous in sends[max(0, current - STREAK) : max(0, current)]:
        k = bisect.bisect_left(refusals, previous - slack)
        if k < len(refusals) and refusals[k] <= min(previous + slack, (previous + sent_at) / 2):
            return True
    return False
