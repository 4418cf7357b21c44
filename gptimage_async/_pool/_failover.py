"""Failover: which errors close a lane, which cool it, and which creates may move.

The rules (issue 19, "Failover without paying twice"):

* **Closed** for new creates for ``CLOSED_TTL`` seconds (5 minutes): 401
  (``AuthenticationError``), 402 (``InsufficientCreditsError``), 403
  (``PermissionDeniedError``), 429 ``USAGE_EXCEEDED`` (``QuotaExceededError``).
  The key is bad, out of credits, denied or out of quota: asking again soon
  cannot help. The typed error is kept as the lane's cause. Runs already in
  flight on a closed lane are still polled there (a poll spends no credit).
  The closure ends, as the fleet's word in Redis does (``_fleet_closure``,
  the same ``CLOSED_TTL``), because credits get topped up and keys
  re-enabled: a long-lived process (a web app) then tries the key again, and
  a key still refused closes again at its first create.
* A session of **one lane** never closes it (``HealthPolicy.for_lanes``):
  with no other lane to fail over to, every create asks the provider and
  ends with its own typed error, so a key topped up works again at once.
* **Cooling**, until a time: a 5xx answer (``ServerError``), a request that got
  no answer (``APIConnectionError``, the transport's ``SendError``) or a create
  of uncertain fate (``UncertainCreateError``, which wraps one of those). The
  wait is the server's ``Retry-After`` when it gave one, else a jittered
  exponential backoff, ``backoff_ceiling(n, base=COOL_BASE, cap=COOL_MAX)``
  (the project's one backoff formula, ``_retry``), drawn from
  ``[COOL_JITTER_FLOOR, 1]`` of it so lanes that failed together do not come
  back together, and never zero. Any good answer ends the cooling.
* **Unreachable**: a lane whose last ``UNREACHABLE_AFTER`` (3) creates in a
  row got no answer at all and certainly never left (``APIConnectionError``:
  connection refused, DNS failure) is unreachable while it cools: creates do
  not wait for it (a circuit breaker, open until the cooling ends), so a job
  on dead lanes ends in seconds, each create with ``PoolExhaustedError``
  naming each lane's cause, instead of waiting out backoffs of up to a minute
  per lane and create. When its cooling ends, the next create tries it again
  (half-open); any answer, even an error status, makes it reachable again.
* Anything else leaves the lane as it is (a plain 429 is the limiter's
  business: it pauses the lane's own budget).

Where a create goes next:

* ``MOVE``: it was **certainly not created** (a closing status, a 429, a
  408 or 503 refused before any processing, or no answer and the request
  certainly never left): it goes back to the router, which may pick another
  lane (it never picks a closed one, and avoids a cooling one until it is due).
* ``UNCERTAIN``: it **may have been created** (and paid): a 5xx other than
  503, no answer after the request was written, an unreadable answer. It
  never moves: sending it to another lane could pay twice. It ends with
  ``UncertainCreateError`` (or, with ``resend_uncertain_creates=True``, is
  resent on the *same* lane, as today).
* ``FAIL``: the error is the outcome on any lane (400, an invalid request, a
  status the library does not know): moving cannot help.

This agrees with ``_classify.classify_status`` / ``classify_no_answer``: a
``MOVE`` is exactly a create those call ``RETRY`` or ``WAIT`` or a closing
status, and an ``UNCERTAIN`` is exactly their ``UNCERTAIN``.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from .._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    GPTImageError,
    InsufficientCreditsError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    UncertainCreateError,
)
from .._retry import backoff_ceiling
from .._transport._protocol import could_not_connect

__all__ = [
    "CLOSING_ERRORS",
    "COOL_BASE",
    "COOL_JITTER_FLOOR",
    "COOL_MAX",
    "CLOSED_TTL",
    "CreateMove",
    "Failover",
    "UNREACHABLE_AFTER",
    "HealthPolicy",
    "LaneAction",
    "LaneHealth",
    "LaneState",
    "failover",
]

#: Errors that close a lane for new creates: 401, 402, 403, 429 USAGE_EXCEEDED.
CLOSING_ERRORS: tuple[type[APIStatusError], ...] = (
    AuthenticationError,
    InsufficientCreditsError,
    PermissionDeniedError,
    QuotaExceededError,
)
#: Seconds a lane closed by a closing answer stays closed for new creates;
#: also how long the fleet's word of it lasts in Redis (``_fleet_closure``).
#: Long enough for a job to stop asking a dead key, short enough that a key
#: topped up is tried again soon by a process that lives for days.
CLOSED_TTL = 300.0
#: First cooling of a lane after an outage, in seconds (before jitter); each
#: next one in a row doubles (``BACKOFF_FACTOR``), up to ``COOL_MAX``. One
#: second is two slots of a Runbase key: long enough not to hammer a failing
#: server, short enough that a blip costs little.
COOL_BASE = 1.0
#: The longest cooling, in seconds: a lane is tried again at least once a minute.
COOL_MAX = 60.0
#: A cooling lasts between this share of its ceiling and all of it (never 0).
COOL_JITTER_FLOOR = 0.5
#: Creates in a row that got no answer (and never left) before a cooling lane is
#: unreachable: creates stop waiting for it until its cooling ends. Three: one
#: refused connect is a blip (a server restarting), three in a row over the
#: backoff of 1 s, 2 s and 4 s (each after the lane's own connect retries) is
#: a lane that is not there.
UNREACHABLE_AFTER = 3


class LaneAction(enum.Enum):
    """What an error does to the lane it happened on."""

    #: Nothing: the lane stays as it was.
    KEEP = "keep"
    #: Closed for new creates for ``CLOSED_TTL`` seconds (the error is its cause).
    CLOSE = "close"
    #: Cooling down until a time (``LaneHealth.cool``).
    COOL = "cool"


class CreateMove(enum.Enum):
    """Where a create that met an error goes next."""

    #: Certainly not created: back to the router, any open lane may take it.
    MOVE = "move"
    #: May have been created (and paid): never sent to another lane.
    UNCERTAIN = "uncertain"
    #: The error is its outcome, on any lane.
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Failover:
    """The decision about one create's error: what happens to its lane and to it."""

    lane: LaneAction
    create: CreateMove


def _status_decision(error: APIStatusError) -> Failover:
    if isinstance(error, CLOSING_ERRORS):
        # The server refused it: no run exists, another key may make it.
        return Failover(LaneAction.CLOSE, CreateMove.MOVE)
    if isinstance(error, RateLimitError):
        return Failover(LaneAction.KEEP, CreateMove.MOVE)
    status = error.status_code
    if status == 503:
        # Refused before any processing (as _classify reads it): nothing was made.
        return Failover(LaneAction.COOL, CreateMove.MOVE)
    if status == 408:
        return Failover(LaneAction.KEEP, CreateMove.MOVE)
    if isinstance(error, ServerError) or status >= 500:
        return Failover(LaneAction.COOL, CreateMove.UNCERTAIN)
    return Failover(LaneAction.KEEP, CreateMove.FAIL)


def failover(error: BaseException, *, maybe_received: bool) -> Failover:
    """The failover decision for a create that ended in ``error`` on its lane.

    ``maybe_received`` is the transport's word for a create that got **no**
    answer (``SendError.maybe_received``): False only when the request
    certainly never left. For an error answer (``APIStatusError``) the status
    decides and ``maybe_received`` is not read: the server did receive it,
    and its status says whether it made a run. Pure: no I/O, no state. See
    the module docstring for the table and where each rule comes from.
    """
    if isinstance(error, APIStatusError):
        return _status_decision(error)
    if isinstance(error, UncertainCreateError):
        return Failover(LaneAction.COOL, CreateMove.UNCERTAIN)
    if isinstance(error, APIConnectionError):
        move = CreateMove.UNCERTAIN if maybe_received else CreateMove.MOVE
        return Failover(LaneAction.COOL, move)
    if isinstance(error, ProtocolError):
        # The answer came but could not be read: the run may exist.
        return Failover(LaneAction.KEEP, CreateMove.UNCERTAIN)
    return Failover(LaneAction.KEEP, CreateMove.FAIL)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """How a session's lanes answer to errors: whether a closing answer closes one.

    ``closes`` is False for a session of one lane (``for_lanes(1)``): with
    nothing to fail over to, closing its lane would only hide a key topped up
    or re-enabled, so a closing answer is the create's own error and the lane
    stays open; nor is it closed by the fleet's word. ``closed_for`` is how
    long a closure lasts, in seconds (``CLOSED_TTL``).
    """

    closes: bool = True
    closed_for: float = CLOSED_TTL

    @classmethod
    def for_lanes(cls, lanes: int) -> HealthPolicy:
        """The policy of a session of ``lanes`` lanes: closing only with somewhere to go."""
        return cls(closes=lanes > 1)

    def decide(self, error: BaseException, *, maybe_received: bool) -> Failover:
        """``failover(error, maybe_received=...)`` under this policy (a lane that never
        closes keeps a closing error's create move: ``MOVE``, nothing was made)."""
        decision = failover(error, maybe_received=maybe_received)
        if decision.lane is LaneAction.CLOSE and not self.closes:
            return Failover(LaneAction.KEEP, decision.create)
        return decision


class LaneState(enum.Enum):
    """A lane's health, as the router sees it at one moment."""

    OPEN = "open"
    COOLING = "cooling"
    CLOSED = "closed"


class LaneHealth:
    """One lane's open / cooling / closed state; pure (every time is passed in).

    Times are the caller's clock in seconds (the event loop's ``loop.time()``).
    ``rng`` draws the jitter (a seeded ``random.Random`` makes it repeatable);
    ``closed_for`` is how long a closure lasts (seconds, ``CLOSED_TTL``).
    Closing wins while it lasts: a closed lane stays closed whatever comes
    after, until ``closed_until``; ``state()`` at or after it opens the lane.
    """

    __slots__ = (
        "_rng",
        "_troubles",
        "_unanswered",
        "cause",
        "closed_for",
        "closed_until",
        "cooling_cause",
        "cooling_until",
    )

    def __init__(self, *, rng: random.Random | None = None, closed_for: float = CLOSED_TTL) -> None:
        self._rng = rng or random.Random()
        self._troubles = 0
        # Creates in a row that got no answer and never left (connection failures).
        self._unanswered = 0
        self.closed_for = closed_for
        #: The error that began or last extended the cooling; ``None`` when not cooling.
        self.cooling_cause: GPTImageError | None = None
        #: The typed error that closed the lane, or ``None`` while it is not closed.
        self.cause: GPTImageError | None = None
        #: Until when (caller's clock) the lane is closed; ``-inf`` when it is not.
        self.closed_until = -math.inf
        #: Until when (caller's clock) the lane is cooling; ``-inf`` when not.
        self.cooling_until = -math.inf

    def state(self, now: float) -> LaneState:
        """The lane's state at ``now``; a closure that has run out ends here (``cause`` -> None)."""
        if self.cause is not None:
            if now < self.closed_until:
                return LaneState.CLOSED
            # Run out: the key may have been topped up; its next create asks again.
            self.cause = None
            self.closed_until = -math.inf
        if now < self.cooling_until:
            return LaneState.COOLING
        return LaneState.OPEN

    def unreachable(self, now: float) -> bool:
        """Whether the lane cools at ``now`` after ``UNREACHABLE_AFTER`` connection failures
        in a row: creates do not wait for it (module docstring)."""
        return self._unanswered >= UNREACHABLE_AFTER and now < self.cooling_until

    def unanswered(self, error: GPTImageError, now: float) -> bool:
        """An attempt that never left (``error``) on a lane with no other to move to: if
        no connection could be made at all (``could_not_connect``: refused, no route, no
        such host; not a timeout before the request was written, which a slow but live
        server causes), the lane cools and the attempt counts toward unreachable, as a
        create does in a pool; returns whether the lane is unreachable at ``now``.

        So a session of one lane whose address is dead ends its creates within
        seconds, not after each has used its ``max_create_attempts`` backoffs.
        """
        if could_not_connect(error):  # not a timeout or a reset: the server may be slow
            self.apply(error, failover(error, maybe_received=False), now)
        return self.unreachable(now)

    def close(
        self, cause: GPTImageError, now: float | None = None, *, until: float | None = None
    ) -> None:
        """Close the lane for new creates from ``now`` for ``closed_for`` seconds.

        ``until`` (caller's clock) ends it at that time instead (the fleet's
        word in Redis expires then). With neither, it stays closed for good
        (the pure form, for tests of routing). A closure already running
        keeps its first cause and is never shortened.
        """
        if until is None:
            until = math.inf if now is None else now + self.closed_for
        if self.cause is None:
            self.cause = cause
        self.closed_until = max(self.closed_until, until)

    def cool(self, now: float, *, retry_after: float | None = None) -> float:
        """Cool the lane from ``now``; returns the time it is due again.

        The wait is ``retry_after`` seconds when the server gave one, else
        ``uniform(COOL_JITTER_FLOOR, 1) * backoff_ceiling(n, base=COOL_BASE,
        cap=COOL_MAX)`` where ``n`` counts coolings since the last good
        answer. A cooling never ends earlier than one already running.
        """
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            wait = retry_after
        else:
            ceiling = backoff_ceiling(self._troubles, base=COOL_BASE, cap=COOL_MAX)
            wait = self._rng.uniform(COOL_JITTER_FLOOR, 1.0) * ceiling
        self._troubles += 1
        self.cooling_until = max(self.cooling_until, now + wait)
        return self.cooling_until

    def recover(self) -> None:
        """A good answer came: the cooling and its backoff end (a closed lane stays closed)."""
        self._troubles = 0
        self._unanswered = 0
        self.cooling_until = -math.inf
        self.cooling_cause = None

    def apply(self, error: BaseException, decision: Failover, now: float) -> None:
        """Do what ``decision`` (from ``failover(error, ...)``) says to this lane."""
        if decision.lane is LaneAction.CLOSE and isinstance(error, GPTImageError):
            self.close(error, now)
        elif decision.lane is LaneAction.COOL:
            after = error.retry_after if isinstance(error, APIStatusError) else None
            self.cool(now, retry_after=after)
            if isinstance(error, GPTImageError):
                self.cooling_cause = error
        if isinstance(error, APIConnectionError) and decision.create is CreateMove.MOVE:
            self._unanswered += 1  # no answer, never left: the lane may not be there
        elif isinstance(error, APIStatusError | ProtocolError):
            self._unanswered = 0  # it answered: reachable, whatever it said


def cannot_connect(health: Iterable[LaneHealth], now: float) -> bool:
    """Whether no lane of ``health`` (a router's, one per lane) can take a create at ``now``:
    each is ``CLOSED``, or unreachable (``LaneHealth.unreachable``: connection failures in a
    row while it cools). A bulk job then stops at once (``Batch``: a session of one lane
    as a pool of several, whose creates end in ``PoolExhaustedError``).
    """
    return all(h.state(now) is LaneState.CLOSED or h.unreachable(now) for h in health)
