"""Routing: which lane takes a create that is ready to go, or how long to wait.

A pure policy over the lanes' states at ``now`` (no I/O, no clock of its own),
asked once per create at the moment it is ready to be sent (*late binding*:
a create is bound to a lane only when a slot is free on it, so no lane idles
while another has a queue). Each lane is seen as a ``LaneView``:

* ``next_free``: the earliest time its limiter has a free slot (``next_free()``);
* ``health``: open, cooling until ``cooling_until``, or closed with a ``cause``;
* ``price``: its price for this create's quality (``None``: unknown);
* ``interval``: seconds between its slots at its current rate.

A lane is **ready at** ``max(now, next_free, cooling_until)``. Closed lanes
are never picked, nor are lanes that cool while *unreachable* (connection
failures in a row, ``_failover.UNREACHABLE_AFTER``): a create does not wait
for them. When no lane is left, the create ends with ``PoolExhaustedError``
naming each lane and why: closed (its closing error), unreachable (its last
connection error), failed this very create (certainly not created there), or
refuses this request (its provider's rule, ``_accepts``; nothing was sent).

Policies:

* ``"earliest"`` (default): the lane ready first; ties by price (unknown
  last), then pool order. Fills every lane's budget: throughput is the sum.
* ``"cheapest"``: price first. Lanes are taken in order of price (unknown
  last, equal prices by readiness then pool order); the first whose ready
  time is within its *horizon* of the earliest ready time of any lane gets
  the create. A cheap lane is therefore **saturated**, and the create
  overflows to a dearer lane, only when the cheap lane's next slot is later
  than a dearer lane's by more than the horizon. The horizon is
  ``min(CHEAP_HORIZON, CHEAP_HORIZON_SHARE * interval)`` of the cheap lane: a
  create waits at most that long for a cheaper lane (0.25 s by default), and
  it stays under one slot of the cheap lane, or a cheap lane running flat out
  (its next slot one interval away after each grant) would never count as
  saturated and the dearer lanes would idle while a queue waits.

The answer is ``Go(lane)`` (send now on that lane), ``Wait(until, lane)``
(nothing is ready: ask again at ``until``, when ``lane`` will be), or
``Exhausted(error)`` (no lane can take it: end it with ``error``). With a
``spend`` ledger that has a cap, lanes dearer than its headroom are skipped
(a cheaper lane may still fit), and if that leaves none, ``Exhausted``
carries the ledger's ``SpendCapError``. Creates already reserved may later
be released, but waiting on that could hang a job: the refusal is at once.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._exceptions import APIStatusError, GPTImageError, InvalidRequestError, PoolExhaustedError
from ._failover import LaneHealth, LaneState
from ._lanes import Lane, Routing
from ._spend import SpendLedger

__all__ = [
    "ATTEMPT_MET",
    "CHEAP_HORIZON",
    "CHEAP_HORIZON_SHARE",
    "Exhausted",
    "Go",
    "LaneView",
    "Route",
    "Wait",
    "lane_view",
    "route",
    "tell_met",
    "what_it_met",
]

#: The longest a create waits for a cheaper lane under ``"cheapest"``, seconds.
CHEAP_HORIZON = 0.25
#: ... and never more than this share of one slot interval of that lane.
CHEAP_HORIZON_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class LaneView:
    """One lane as the router sees it at one moment (build it from the lane's parts).

    ``label`` names the lane in errors; ``next_free`` and ``cooling_until``
    are times on the caller's clock (seconds); ``interval`` is seconds per
    slot; ``cause`` is the closing error when ``state`` is ``CLOSED``.
    ``tried``: this create already failed on the lane (``cause`` is that error);
    ``unreachable``: the lane cools after connection failures in a row
    (``cause`` is the last), so a create does not wait for it.
    """

    label: str
    next_free: float
    price: float | None
    interval: float
    state: LaneState = LaneState.OPEN
    cooling_until: float = -math.inf
    cause: GPTImageError | None = None
    tried: bool = False
    unreachable: bool = False


def lane_view(
    lane: Lane,
    health: LaneHealth,
    *,
    next_free: float,
    interval: float,
    quality: str | None,
    now: float,
) -> LaneView:
    """The ``LaneView`` of ``lane`` at ``now`` for a create at ``quality``.

    ``next_free`` and ``interval`` come from the lane's limiter
    (``next_free()``, ``interval``); ``health`` is the lane's ``LaneHealth``.
    """
    state = health.state(now)
    unreachable = state is LaneState.COOLING and health.unreachable(now)
    return LaneView(
        label=lane.label,
        next_free=next_free,
        price=lane.price(quality),
        interval=interval,
        state=state,
        cooling_until=health.cooling_until,
        cause=health.cooling_cause if unreachable else health.cause,
        unreachable=unreachable,
    )


@dataclass(frozen=True, slots=True)
class Go:
    """Send the create now on lane number ``lane`` (its index in the pool)."""

    lane: int


@dataclass(frozen=True, slots=True)
class Wait:
    """No lane is ready: ask again at ``until`` (caller's clock), when ``lane`` will be."""

    until: float
    lane: int


@dataclass(frozen=True, slots=True)
class Exhausted:
    """No lane can take the create, now or later: end it with ``error``."""

    error: GPTImageError


Route = Go | Wait | Exhausted


def _ready(view: LaneView, now: float) -> float:
    return max(now, view.next_free, view.cooling_until)


def _price_key(price: float | None) -> float:
    return math.inf if price is None else price


def _why(view: LaneView) -> str:
    if view.tried:
        # A provider that refuses the request was never asked (_accepts).
        refused = isinstance(view.cause, InvalidRequestError)
        return "refuses this request" if refused else "failed this create"
    return "unreachable" if view.unreachable else "closed"


#: Set by a caller around one create (a batch counting the creates it sent) to be told
#: what each attempt of it met, when the next attempt is about to go (on any lane):
#: only then is an attempt's fate known, and a create may be withdrawn before another.
ATTEMPT_MET: contextvars.ContextVar[Callable[[GPTImageError], None] | None] = (
    contextvars.ContextVar("gptimage_attempt_met", default=None)
)


def tell_met(error: GPTImageError | None) -> None:
    """Tell the caller's ``ATTEMPT_MET`` hook, if one is set, an attempt's ``error``."""
    told = ATTEMPT_MET.get()
    if told is not None and error is not None:
        told(error)


def what_it_met(error: GPTImageError) -> GPTImageError:
    """What a create that failed met on the lanes it was sent to, for counting it.

    For a ``PoolExhaustedError``: the first error status a lane answered (the
    create was sent and refused), else the first error of a lane it failed on
    (no answer: it never left), else the error itself; any other error is
    returned as it is.
    """
    if not isinstance(error, PoolExhaustedError):
        return error
    tried = zip(error.causes, error.why, strict=True)
    met = [err for (_, err), why in tried if why == "failed this create"]
    return ([err for err in met if isinstance(err, APIStatusError)] or met or [error])[0]


def _exhausted(views: Sequence[LaneView]) -> Exhausted:
    causes = tuple((v.label, v.cause or GPTImageError(f"lane {v.label} is closed")) for v in views)
    if len(causes) == 1:
        return Exhausted(causes[0][1])
    return Exhausted(PoolExhaustedError(causes, why=tuple(_why(v) for v in views)))


def route(
    views: Sequence[LaneView],
    *,
    now: float,
    policy: Routing = "earliest",
    spend: SpendLedger | None = None,
    horizon: float = CHEAP_HORIZON,
    share: float = CHEAP_HORIZON_SHARE,
) -> Route:
    """Which lane a ready create goes to at ``now``, or when to ask again.

    ``views`` are the pool's lanes in pool order (at least one); ``policy``
    is ``"earliest"`` or ``"cheapest"``; ``spend``, when it has a cap, skips
    lanes whose price is above its headroom (only read); ``horizon`` (seconds) is the
    ``"cheapest"`` policy's longest wait for a cheaper lane, and ``share``
    its cap in slot intervals of that lane (a caller whose ``next_free``
    already counts the creates queued on each lane may allow a whole slot,
    or more: the queue then shows saturation). Returns ``Go``,
    ``Wait`` or ``Exhausted`` (module docstring). A pool of one closed lane
    is exhausted with that lane's own error; several closed lanes with a
    ``PoolExhaustedError`` that carries each cause. Never picks a closed lane.
    """
    if not views:
        raise ValueError("route() needs at least one lane")
    open_lanes = [
        i for i, v in enumerate(views) if v.state is not LaneState.CLOSED and not v.unreachable
    ]
    if not open_lanes:
        return _exhausted(views)
    if spend is not None and (headroom := spend.headroom()) is not None:
        # A pool with a cap has every price (Pool checks). This skip is advice;
        # the ledger's exact reserve() is what enforces the cap.
        affordable = [i for i in open_lanes if _price_key(views[i].price) <= headroom]
        if not affordable:
            cheapest = min(open_lanes, key=lambda i: (_price_key(views[i].price), i))
            view = views[cheapest]
            return Exhausted(spend.refusal(_price_key(view.price), label=view.label))
        open_lanes = affordable
    ready = {i: _ready(views[i], now) for i in open_lanes}
    if policy == "cheapest":
        earliest = min(ready.values())
        order = sorted(open_lanes, key=lambda i: (_price_key(views[i].price), ready[i], i))
        chosen = order[-1]
        for i in order:
            reach = min(horizon, share * views[i].interval)
            if ready[i] <= earliest + reach:
                chosen = i
                break
    else:
        chosen = min(open_lanes, key=lambda i: (ready[i], _price_key(views[i].price), i))
    if ready[chosen] <= now:
        return Go(chosen)
    return Wait(ready[chosen], chosen)
