"""When each run is polled: pure rules on plain numbers (no loop, no I/O).

The scheduler (``_scheduler.py``) owns the heap and the wake-ups; every
decision about *when* is here, as a function of numbers it is handed (``now``
and other clock times are loop seconds, ages are seconds since the run's
create was sent) and of the learned ``DurationModel``:

* **planned polls** (``plan_age``): at the age by which most runs like this
  one are done (the ``PLANNED_DONE_SHARE`` quantile of the learned duration
  distribution, conditional on the run still going at its last poll).
  Planned polls go before creates in the limiter; when the budget is the
  bottleneck these are the only polls, and they cost close to one per run.
* **speculative polls** (``speculative_age``): when the limiter has a free
  slot nobody waits for, the run nearest its planned poll is polled early.
  Each run's speculative polls spread a window's worth of slots over its
  likely finish (the model's 2%-98% quantiles).
* **fair-share polls** (``poll_share``, ``share_age``, ``window_gap``): once
  the model is ready, a spare slot goes to the run whose next poll is due
  soonest by its share of the budget (Little's law: ``k`` polls each), which
  split the durations' distribution into ``2k - 1`` parts of even
  probability, as many as one window holds (and no closer than it allows).
  So polls gather where ends are likely, never where none can, and the
  budget is split evenly between runs, whatever the load.
* **cold start** (``plan_age``, ``should_park``; ``_cold.speculative_age``): before
  enough runs have finished to learn from, polls probe geometrically, scaled
  by the create's round trip; in a bulk job only ``SCOUTS`` runs probe and
  the others are parked until a scout's duration gives the scale, then first
  polled at ``COLD_RELEASE`` times it.
* **the deadline** (``deadline_poll_at``): no run times out unpolled.
* **retries** (``retry_ceiling``; ``_not_found.py``): how long a failed poll
  waits, and when a 404 means the run is really gone.
* **a bulk job's tail** (``_tail.TailCohort``): runs left out of the model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import TypeVar

import msgspec

from ._cold import (
    COLD_FIRST_RTTS,
    COLD_SCOUTS,
    COLD_SPECULATIVE_GROWTH,
    MATURITY_PRIOR,
    SPECULATIVE_FROM,
    SPECULATIVE_SPACING,
    SPECULATIVE_TO,
    SPREAD_KEEP,
    WINDOW_KEEP,
    speculative_age,
)
from ._durations import DurationModel
from ._not_found import (
    MAX_NOT_FOUND,
    NOT_FOUND_GRACE,
    NOT_FOUND_POLLS,
    not_found_grace,
    not_found_is_final,
)
from ._retry import backoff_ceiling
from ._tail import TailCohort

__all__ = [
    "MAX_NOT_FOUND",
    "NOT_FOUND_GRACE",
    "NOT_FOUND_POLLS",
    "COLD_FIRST_RTTS",
    "COLD_SCOUTS",
    "COLD_SPECULATIVE_GROWTH",
    "MATURITY_PRIOR",
    "SPECULATIVE_FROM",
    "SPECULATIVE_SPACING",
    "SPECULATIVE_TO",
    "SPREAD_KEEP",
    "WINDOW_KEEP",
    "PollState",
    "TailCohort",
    "censored_ages",
    "deadline_poll_at",
    "fair_share_pick",
    "not_found_ceiling",
    "not_found_grace",
    "not_found_is_final",
    "plan_age",
    "poll_share",
    "retry_ceiling",
    "share_age",
    "should_park",
    "speculative_age",
    "window_gap",
]

#: Share of runs a planned poll should find done.
PLANNED_DONE_SHARE = 0.95
#: With at most this many runs in flight (a session making a few images, not a batch's
#: tail, where extra polls add up), speculative polls may take the limiter's spare slots.
SPARE_RUNS = 8
#: Fair share: the share of the believed rate counted as the runs' (the rest
#: stays free for demand, as the limiter's spare slots keep a window's last slots) ...
SHARE_OF_RATE = 0.9
#: ... and a window's slots less this many (the create, the previous run's last
#: polls still in the window, room for demand) are the most polls one run may have ...
SHARE_KEEP = 6.0
#: ... or this many where ``window_gap`` spaces them (fake clock, idle: 3.70% -> 3.37% late) ...
GAP_SHARE_KEEP = 3.0
#: ... and the share of the durations' distribution between two of a run's
#: fair-share polls is at least this (no more than 50 polls over it).
SHARE_MIN = 0.02
#: ``window_gap``: a window's slots less ``WINDOW_KEEP`` over the window less the
#: likely shortest run: the smoothed quantile of this share,
#: less its span to 1 - this over (runs seen + 1), as the least of n draws lies above the least.
WINDOW_LOW = 0.01
#: Fitted on fewer runs than this, a model puts a run's first poll earlier (``MATURITY_PRIOR``) ...
SHARE_MATURE = 20
#: ... and on fewer than this keeps a run's polls at most the even spacing apart,
#: below its mass too (fake clock, idle: first 10 runs 4.7% -> 4.2% late; 8 -> 12,
#: 192 seeds: runs 8 and 9 4.1% -> 3.6% and 3.5%, the first 10 3.95% -> 3.84%; row 9's
#: ratio 1.33 -> 1.36, its runs before the speed-up sooner found, those after as late).
SHARE_YOUNG = 12
#: With at most this many runs in flight, the scheduler looks at every one of them
#: for the next fair-share poll (a web app's, 3/4 of run capacity: ~7-9); beyond it
#: (a batch), only at the next planned one.
SHARE_RUNS = 12
#: Runs' fair-share phases: multiples of the golden ratio's fraction, modulo 1,
#: spread evenly over 0-1 however many runs there are.
PHASE_STEP = (math.sqrt(5.0) - 1.0) / 2.0
#: Two planned polls of one run are at least this share of the median apart.
MIN_STEP = 0.05
#: Cold start: planned polls grow by this factor per poll (from ``COLD_FIRST_RTTS``).
COLD_GROWTH = 2.0
#: Cold start in bulk: runs polled before any has finished; the others are parked.
SCOUTS = 1
#: Until the model is ready, first polls go at this multiple of the first
#: finished run's duration: nearly every run is done there, so learning costs
#: few polls (and, in bulk, no throughput: creates use the budget meanwhile).
COLD_RELEASE = 2.0
#: Past the longest duration seen, the gap grows by this factor per poll.
TAIL_GROWTH = 1.25
#: A run not polled by then is polled this share of its run_timeout before its deadline.
FINAL_POLL_LEAD = 0.05
#: Consecutive unreadable answers (or answers about another run) before a run is given up on.
MAX_PROTOCOL_ERRORS = 6


class PollState(msgspec.Struct, gc=False):
    """The scheduler's bookkeeping for one run, keyed by run id. Never on the public ``Run``.

    Every field is a number, a string or ``None``, so it can hold no reference
    cycle: ``gc=False`` keeps it out of the cyclic garbage collector, whose
    full collections walk every tracked object (one fewer per run in flight).
    The run's own times (``created_at``, ``deadline``) and its poll count stay
    on the ``Run``: they are the user's to read, and not worth a copy per run.
    """

    #: Age (seconds since the create was sent) of the last poll that found it not done.
    last_pending_age: float = 0.0
    #: Consecutive failed polls (transient errors).
    errors: int = 0
    #: The scheduler's key of the run's live heap entry (-1: none); older entries are stale.
    entry: int = -1
    #: Clock time before which no poll may go, not even a speculative one (a Retry-After).
    not_before: float = 0.0
    #: The provider's own word for the status last seen (a timeout names it).
    status_word: str | None = None
    #: Seconds after the create during which a 404 means "not visible yet"
    #: (``NOT_FOUND_GRACE`` for a run this session created, 0 for an attached one).
    grace: float = 0.0
    #: Cold start: the run probes for the first duration (counted while it is in flight).
    scout: bool = False
    #: Where in the first share of the durations its first fair-share poll goes (0-1).
    phase: float = 1.0

    def __repr__(self) -> str:
        return (
            f"<PollState errors={self.errors} last_pending_age={self.last_pending_age:.3f} "
            f"not_before={self.not_before:.3f}>"
        )


def plan_age(
    model: DurationModel,
    *,
    last_pending_age: float,
    polls: int,
    interval: float,
    rtt: float,
    cold_floor: float = 0.0,
    cold_scale: float = 0.0,
) -> float:
    """The age (seconds) at which to poll a run next, if the budget is the bottleneck.

    ``interval`` is the limiter's even spacing (seconds per request), ``rtt``
    the smoothed create round trip; ``cold_floor`` the longest age any run was
    seen still going during cold start, ``cold_scale`` the first finished
    run's duration (0: none yet).
    """
    last = last_pending_age
    if not model.ready:
        # Probe geometrically from a few round trips, but never below what
        # earlier runs showed: still going at cold_floor, done by longest.
        first = max(
            COLD_FIRST_RTTS * rtt,
            interval,
            cold_floor,
            # A run done by then (or, restored, the longest one seen) sets the scale.
            COLD_RELEASE * (cold_scale or model.longest),
        )
        if polls == 0:
            return first
        return max(last * COLD_GROWTH, last + interval, first)
    target = model.conditional_quantile(last, PLANNED_DONE_SHARE)
    if target is None:
        target = last * TAIL_GROWTH
    if polls:
        target = max(target, last + MIN_STEP * model.quantile(0.5))
    return target


def poll_share(
    model: DurationModel,
    *,
    rate: float,
    in_flight: int,
    slots_per_window: float,
    window: float = 0.0,
) -> float:
    """The share (0-1) of all runs' durations between two fair-share polls of one run.

    ``rate`` is the believed limit (requests per second), ``in_flight`` the
    runs being polled, ``slots_per_window`` the limiter's rate times its
    window (requests). By Little's law runs start at ``in_flight / mean``
    per second (``mean``: the model's mean duration, seconds), so each has
    ``SHARE_OF_RATE x rate x mean / in_flight`` requests of budget, one of
    them its create: ``k`` polls. Polls that split the duration's
    distribution into ``m`` even parts cost ``(m + 1) / 2`` polls per run on
    average, whatever the distribution (the ``j``-th goes only if the run is
    still going, a chance ``1 - j / m``): so ``m = 2k - 1``. The longest runs
    take all ``m``, which must fit in one window (less ``SHARE_KEEP``, or
    ``GAP_SHARE_KEEP`` where ``window_gap`` spaces them: ``window``, seconds,
    0 for none) while runs are shorter than a window: the sliding window
    forbids borrowing more. At most ``PLANNED_DONE_SHARE`` (planned only).
    """
    if model.mean() <= 0.0 or rate <= 0.0:
        return PLANNED_DONE_SHARE
    per = {"rate": rate, "slots_per_window": slots_per_window}
    gap = window_gap(model, in_flight=in_flight, window=window, **per) if window else 0.0
    keep = GAP_SHARE_KEEP if gap else SHARE_KEEP
    parts = min(*_parts(model, in_flight=in_flight, keep=keep, **per))
    return PLANNED_DONE_SHARE if parts <= 1.0 else max(SHARE_MIN, 1.0 / parts)


def _parts(
    model: DurationModel,
    *,
    rate: float,
    in_flight: int,
    slots_per_window: float,
    keep: float = SHARE_KEEP,
) -> tuple[float, float]:
    """``poll_share``'s parts: as the budget's share affords them, as one window holds them."""
    polls = SHARE_OF_RATE * rate * model.mean() / max(1, in_flight) - 1.0
    longest = model.quantile(SPECULATIVE_TO)
    return 2.0 * polls - 1.0, max(1.0, min(slots_per_window, rate * longest) - keep)


def window_gap(
    model: DurationModel,
    *,
    rate: float,
    in_flight: int,
    slots_per_window: float,
    window: float,
) -> float:
    """The least gap (seconds) between two fair-share polls of one run (0: none).

    Only where the budget's share affords a run more polls than one window
    holds (an idle budget, one run at a time). A window then holds a run's
    create, the limiter's spare slot kept free and, with the previous run's
    last polls, ``window - shortest`` seconds of polls (the likely shortest
    run's age; benchmarks' *idle_delay* diagnosis): so no closer than
    ``(window - shortest) / (rate x window - WINDOW_KEEP)``. Closer where the
    smoothed estimate peaks (its ends), they fill the window and the next
    run's first polls wait. Arguments as for ``poll_share``; ``window`` is
    the limiter's (seconds). The model must be ready.
    """
    if model.mean() <= 0.0 or rate <= 0.0 or window <= 0.0:
        return 0.0
    budget, _ = _parts(model, rate=rate, in_flight=in_flight, slots_per_window=slots_per_window)
    if budget <= slots_per_window - SHARE_KEEP:
        return 0.0
    low = model.quantile(WINDOW_LOW, smooth=True)
    span = model.quantile(1.0 - WINDOW_LOW, smooth=True) - low
    shortest = max(0.0, low - span / (model.observed + 1))
    slots = rate * window - WINDOW_KEEP
    if shortest >= window or slots < 1.0 or 2.0 * span < window - shortest:
        # Runs longer than a window, or a narrow band: ``poll_share``'s parts
        # (as many as the run's longest duration earns) already fit.
        return 0.0
    return (window - shortest) / slots


def share_age(
    model: DurationModel,
    *,
    last_pending_age: float,
    share: float,
    phase: float = 1.0,
    gap: float = 0.0,
) -> float:
    """The age (seconds) of a run's next fair-share poll: ``share`` of all runs'
    durations (by the model's smoothed distribution) after ``last_pending_age``
    (seconds; 0: never polled).

    The first poll goes at ``phase`` (0-1) of ``share``: runs given phases
    spread evenly over 0-1 are polled at staggered ages, so the model sees
    their ends in intervals that overlap, not always the same ones (it
    cannot tell where in an interval runs end, and would keep its lumps).
    The model must be ready. Its first poll comes earlier while the model is
    fitted on fewer than ``SHARE_MATURE`` runs (``MATURITY_PRIOR``: they say
    little of the shortest ones; ``SHARE_YOUNG``); two polls are at least
    ``SPECULATIVE_SPACING`` of the median apart (and at least ``gap``
    seconds, ``window_gap``, while the run may end), and a run older than
    any seen is polled that far apart.
    """
    last = last_pending_age
    step = SPECULATIVE_SPACING * model.quantile(0.5)
    done = model.cdf(last, smooth=True)
    if done >= 1.0 - 1e-6:
        return last + step
    if last <= 0.0:
        n = model.observed
        first = model.quantile(share * min(max(phase, 0.0), 1.0), smooth=True)
        return first * n / (n + MATURITY_PRIOR) if n < SHARE_MATURE else first
    target = model.quantile(min(1.0, done + share), smooth=True)
    # Never further apart than the even split of the likely finish while runs may
    # end there (a young model's: below its mass too): few runs leave gaps.
    latest = model.quantile(SPECULATIVE_TO)
    even = last + (latest - model.quantile(SPECULATIVE_FROM)) * share
    young = model.observed < SHARE_YOUNG and last < latest
    if young or model.cdf(even, smooth=True) > done + 1e-6:
        target = min(target, even)
    return max(target, last + step, last + gap)


T = TypeVar("T")


def censored_ages(states: Collection[PollState]) -> Iterable[float]:
    """The ages (seconds) at which the runs in flight were last seen still going.

    The duration model counts them as right-censored observations
    (``DurationModel.in_flight``), but only of a few runs (``SPARE_RUNS``, a
    web app's): in bulk, the restart after a slowdown would be fitted mostly
    on runs still going, and poll them later than its few finished ones say.
    """
    return (s.last_pending_age for s in states) if len(states) <= SPARE_RUNS else ()


def fair_share_pick(
    model: DurationModel,
    runs: Iterable[tuple[T, float, PollState]],
    *,
    now: float,
    default: T,
    rate: float,
    slots_per_window: float,
    window: float = 0.0,
) -> tuple[float, T]:
    """The run a spare slot should poll, and from when (loop seconds; ``inf``: none).

    ``runs`` holds ``(key, created_at, state)`` for each run that may be
    polled (``created_at`` and ``now`` in loop seconds); the key of the pick
    is returned (``default`` if none has a poll to come). A run is due at its
    fair-share poll (``share_age``, never ahead of a Retry-After); of the
    runs due by ``now``, the one most likely to have ended since its last
    poll goes first (its chance by the smoothed model, given it was still
    going then): a slot is worth most there. None due: the soonest. ``rate``
    and ``slots_per_window`` are as for ``poll_share``, ``window`` (seconds;
    0: none) as for ``window_gap``; the model must be ready.
    """
    polled = list(runs)
    per = {"rate": rate, "slots_per_window": slots_per_window, "window": window}
    share = poll_share(model, in_flight=len(polled), **per)
    gap = window_gap(model, in_flight=len(polled), **per)
    soonest, pick = math.inf, default
    urgent, chance = default, -1.0
    for key, created_at, state in polled:
        last = state.last_pending_age
        at = max(
            created_at
            + share_age(model, last_pending_age=last, share=share, phase=state.phase, gap=gap),
            state.not_before,
        )
        if at <= now:
            done = model.cdf(last, smooth=True)
            left = 1.0 - done
            p = (model.cdf(now - created_at, smooth=True) - done) / left if left > 1e-6 else 1.0
            if p > chance:
                urgent, chance = key, p
        elif at < soonest:
            soonest, pick = at, key
    return (now, urgent) if chance >= 0.0 else (soonest, pick)


def deadline_poll_at(
    when: float, *, created_at: float, deadline: float, last_pending_age: float, not_before: float
) -> float:
    """Where a poll planned for loop time ``when`` goes, given the run's deadline.

    Never time a run out unpolled (a model that believes runs take longer
    than run_timeout, say): one last poll goes a little before the deadline,
    unless a poll already found it still going there, or the server asked for
    a wait past it (Retry-After). Past the deadline, the entry only times it out.
    """
    if when < deadline:
        return when
    final = deadline - FINAL_POLL_LEAD * (deadline - created_at)
    polled = created_at + last_pending_age >= final
    return deadline if polled or not_before > final else final


def retry_ceiling(
    errors: int, *, model: DurationModel, rtt: float, interval: float, window: float
) -> float:
    """The longest wait (seconds) before the ``errors``-th retry of a failed poll.

    Exponential backoff from the larger of the request interval and a small
    share of the typical run (the round trip, in cold start), capped at the
    rate window: a retry waits at most what the budget takes to refill.
    """
    scale = model.quantile(0.5) * MIN_STEP if model.ready else rtt
    return backoff_ceiling(errors, base=max(interval, scale), cap=window)


def not_found_ceiling(
    errors: int, *, model: DurationModel, rtt: float, interval: float, window: float
) -> float:
    """The longest wait (seconds) before polling again a run of ours not visible yet.

    As ``retry_ceiling``, but capped at ``NOT_FOUND_GRACE / NOT_FOUND_POLLS``
    where that is longer than the window: under a high rate limit (a window
    of a second, say) the cap of a window would spend a poll a second on it.
    """
    cap = max(window, NOT_FOUND_GRACE / NOT_FOUND_POLLS)
    return retry_ceiling(errors, model=model, rtt=rtt, interval=interval, window=cap)


def should_park(
    *, model_ready: bool, cold_scale: float, is_scout: bool, scouts: int, waiting: bool
) -> bool:
    """Cold start: hold a run's first poll until a scout has finished (True: park it).

    Only while requests wait for the budget (a bulk job): a session making a
    few images polls each of them, on idle budget. ``scouts`` counts the
    scouts still in flight.
    """
    if model_ready or cold_scale or is_scout:
        return False
    return scouts >= SCOUTS and waiting
