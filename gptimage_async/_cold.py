"""Speculative polls while the duration model is young or empty: pure rules on plain numbers.

Split from ``_planner.py`` (which re-exports every name here): how a run is
probed before the model has learned enough to place fair-share polls
(``_planner.share_age``). Ages are seconds since the run's create was sent;
the limiter's numbers (``interval``, seconds per request, and
``slots_per_window``, requests) are handed in.

* **no run finished yet**: a run is probed at the even pace, as many polls
  as one window holds, for a window; past it, the gaps grow geometrically.
* **a few runs finished** (fewer than ``_durations.MIN_OBSERVATIONS``): the
  polls spread over the model's likely finish, widened for its few runs;
  one run alone on the budget is polled as densely as the window allows from
  the earliest age it may end (no denser: a young model's narrow estimate
  would fill the window and leave a hole of a second where the run ends).
"""

from __future__ import annotations

import math

from ._durations import DurationModel

__all__ = ["speculative_age"]

#: Speculative polls are spread between the ages where these shares of runs are done ...
SPECULATIVE_FROM = 0.02
SPECULATIVE_TO = 0.98
#: ... a window's worth of the limiter's slots less this many (the create, and room for demand) ...
SPREAD_KEEP = 3.0
#: ... and poll one run at most once per this share of the median duration.
SPECULATIVE_SPACING = 0.03
#: A model fitted on n runs speculates from n / (n + this) of its early quantile
#: (and to its late one over that): few runs say little about the extremes.
MATURITY_PRIOR = 2.0
#: A window's slots less this many (the create, a spare one kept) are the polls one
#: run alone on the budget may have in a window (``_planner.window_gap`` too).
WINDOW_KEEP = 2.0
#: Cold start: first poll after this many create round trips.
COLD_FIRST_RTTS = 4.0
#: Cold start on an idle budget, with at most COLD_SCOUTS runs in flight: after a
#: window of even polls, speculative polls grow by this factor per poll.
COLD_SPECULATIVE_GROWTH = 1.1
COLD_SCOUTS = 8


def speculative_age(
    model: DurationModel,
    *,
    last_pending_age: float,
    polls: int,
    in_flight: int,
    rtt: float,
    interval: float,
    slots_per_window: float,
) -> float:
    """The earliest age (seconds) at which a run may be polled ahead of plan (``inf``: not now).

    Only the run's own side: the caller still waits for a free slot and for
    any ``not_before``. ``slots_per_window`` is the limiter's rate times its
    window (requests); ``interval`` its even spacing (seconds per request).
    """
    n = model.observed
    window = slots_per_window * interval
    dense = window / max(1.0, slots_per_window - WINDOW_KEEP)
    if n == 0 or (not model.ready and in_flight > COLD_SCOUTS):
        # Nothing learned yet. A few runs in flight (a session making its
        # first images) probe idle budget evenly, as many polls as a window
        # holds with no stall (polls at the even pace fill it a slot early,
        # and the run then waits most of a slot: fake clock, idle, 192 seeds,
        # the first run 5.2% -> 4.3% late); past a window, geometrically, so
        # polls per run grow with the log of its duration. Many runs wait for
        # the model rather than storm a large budget.
        if in_flight > COLD_SCOUTS:
            return math.inf
        last = last_pending_age
        first = max(COLD_FIRST_RTTS * rtt, interval) / 2
        if last + interval <= window:
            return max(last + max(interval, dense), first)
        return max(last * COLD_SPECULATIVE_GROWTH, last + interval, first)
    # Even one finished run gives the scale (the planned polls wait for a few
    # more). A model fitted on few runs knows little of the shortest and
    # longest ones: the window it speculates over starts earlier and ends
    # later until it has seen more.
    maturity = n / (n + MATURITY_PRIOR)
    earliest_age = model.quantile(SPECULATIVE_FROM) * maturity
    if polls:
        # Spread a window's worth of slots (less a few, for the create and
        # for demand) over the likely finish: closer than the even pace when
        # runs are shorter than a window, and the limiter's spare slots allow it.
        latest_age = model.quantile(SPECULATIVE_TO) / maturity
        slots = max(1.0, slots_per_window - SPREAD_KEEP)
        spacing = min((latest_age - earliest_age) / slots, interval)
        if in_flight == 1 and earliest_age < window:
            # One run alone: what the window holds from its earliest likely end.
            spacing = (window - earliest_age) / max(1.0, slots_per_window - WINDOW_KEEP)
        spacing = max(spacing, SPECULATIVE_SPACING * model.quantile(0.5))
        earliest_age = max(earliest_age, last_pending_age + spacing)
    return earliest_age
