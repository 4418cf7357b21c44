"""The pool at run time: which lane each create goes to, failover, and spend.

``Router`` sits between ``Session`` and its lanes (``LaneRuntime``). The
rules are the pure ``_pool`` modules'; this module applies them to live
lanes:

* **Late binding.** A create is bound to a lane only when it is ready to go
  and ``route()`` (``_pool._routing``) says a lane has a free slot: each
  lane is seen at ``max(now, limiter.next_free()) + queued * interval``,
  where ``queued`` counts creates already bound to it and not yet sent, or
  the requests waiting in its limiter (polls due go first) if more, so a
  burst of creates spreads over the lanes instead of queueing on the first,
  and the lanes' backlogs stay even. Otherwise the create waits (``Wait``)
  and asks again; it is woken early when a lane closes or a bound create
  goes out. Creates waiting for a lane wait **in order**: only the first
  asks the routing, the others queue behind it (first come, first bound),
  so none is overtaken for ever by later ones, and a bulk job's last creates
  are its last runs. A create whose turn on its lane is within
  ``BIND_AHEAD`` slots is bound at once and queues in that lane's limiter
  (which then lends no slot to an early poll). When one of a bulk job's last
  creates (``ahead_of_polls``) arrives, the creates queued before it go ahead
  of polls too, as in one key's limiter; such a create's turn counts only
  the creates bound before it (it goes ahead of the polls), and under
  ``"earliest"`` it goes to the lane whose committed work ends first (its
  bound creates and at least one poll per run in flight there), so the
  lanes end the job together rather than a window apart. A pool of one
  lane skips the routing: its creates queue in the lane's limiter as they
  always have.
* **Staggered lanes.** Lanes paced at one rate from one instant send in
  step, so one event-loop stall delays a request of each at once and draws
  a 429 on each (a window's first request arrives late, its last on time:
  one too many in the server's window). Within a slot of the pool's first
  create, the ``k``-th lane after its lane of ``n`` sends its first create
  ``k / n`` of a slot after it under ``"earliest"`` (a create moving from a
  lane it failed on does not wait); each limiter paces from its own first
  grant, so their slots stay apart.
* **Failover** (``_pool._failover``): a create that ends in an error is
  judged by ``failover()``. The lane is closed (401, 402, 403, 429
  ``USAGE_EXCEEDED``) or cooled (5xx, no answer) for new creates; runs in
  flight on it are still polled there. A create **certainly not created**
  goes back to the router, which never sends it to a lane it already failed
  on; a create of **uncertain** fate is never moved (``UncertainCreateError``
  to the caller). A create bound to a lane that closes before it is sent is
  taken back before anything is sent (the ``on_send`` hook raises). When no
  lane is left, the create ends at once with the cause (one lane: that
  lane's own error; several: ``PoolExhaustedError``).
* **Spend** (``_pool._spend``): reserved before sending, committed when the
  run is created, released when it certainly was not, kept (as maybe paid)
  when uncertain, refunded when a created run fails on a provider that
  refunds failures (Runbase): the lane says so when it resolves the run
  (``LaneRuntime.on_failed``), so nothing is held per run in flight.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._create import ATTEMPT_SETTLED, previous_error, resending_uncertain
from ._exceptions import (
    APIConnectionError,
    ConfigurationError,
    GPTImageError,
    SpendCapError,
    UncertainCreateError,
)
from ._models import ImageRequest
from ._pool import (
    CreateMove,
    CreateSpend,
    Exhausted,
    Go,
    HealthPolicy,
    LaneAction,
    LaneHealth,
    LaneState,
    LaneView,
    Pool,
    PoolStats,
    SpendLedger,
    SpendToken,
    Wait,
    lane_view,
    refusals,
    route,
    tell_met,
)
from ._pool import Lane as PoolLane
from ._pool._line import CreateLine, timed_out
from ._secrets import shown

if TYPE_CHECKING:
    from ._lane import LaneRuntime
    from ._run import Run

__all__ = ["PoolStats", "Router"]

logger = logging.getLogger("gptimage_async")

#: Under ``"cheapest"``, how many slot intervals of a cheaper lane a create may
#: wait for it before it overflows to a dearer one. More than one: a lane whose
#: last slot just went (to a poll, say) is busy for one interval, not saturated;
#: under 2, so the second create queued on it already overflows.
CHEAP_SLOTS = 1.5
#: The create at the head of the line is bound to the lane the routing picks
#: once its turn there is within this many slot intervals (the head looks again
#: whenever a bound create goes out); it then queues in that lane's limiter. A
#: limiter that sees no request waiting lends its slots to speculative polls
#: (spare budget, even ahead of its pace): were the router's line invisible to
#: it, those polls would take the slots the line waits for, and a busy pool
#: spent a tenth of its budget polling early. Two, not one: the poll scheduler
#: parks a new run during cold start only if a create waits in the limiter when
#: the run is added, and with one bound ahead the next was often still on its
#: way there (a pool of 3 then polled its first runs twice each, a 300-run job
#: 8% more polls than one key's: fake clock, efficiency 0.93 -> 0.98). About
#: two creates wait in each lane's limiter, so late binding still holds.
BIND_AHEAD = 2.0


class _Rebind(Exception):
    """A bound create's lane closed before it was sent: nothing was sent, route it again."""


class Router:
    """Routes each create of a session over its lanes. Strictly private.

    ``pool`` is the session's ``Pool`` (lane descriptions, routing policy,
    spend cap); ``lanes`` the running lanes in the same order; ``clock`` the
    event loop's clock (seconds); ``resend_uncertain`` is
    ``resend_uncertain_creates`` (a resend is reserved anew, never moved).
    """

    def __init__(
        self,
        pool: Pool,
        lanes: Sequence[LaneRuntime],
        *,
        stats: PoolStats,
        clock: Callable[[], float],
        run_timeout: float,
        resend_uncertain: bool,
    ) -> None:
        self.pool = pool
        self.lanes = tuple(lanes)
        # The lane health policy: a session of one lane never closes it (_pool._failover).
        self.policy = HealthPolicy.for_lanes(len(self.lanes))
        self.health = [LaneHealth(closed_for=self.policy.closed_for) for _ in self.lanes]
        self.ledger = SpendLedger(pool.lanes, cap=pool.spend_cap)
        stats._ledger = self.ledger
        for i, lane in enumerate(self.lanes):
            if lane.spec.refunds_failed:
                # Told by the lane when a run it created fails: no callback held per run.
                lane.on_failed = functools.partial(self.ledger.refund_created, i)
        self.clock = clock
        self._run_timeout = run_timeout
        self._resend = resend_uncertain
        # Creates bound to each lane and not yet sent (late binding's queue).
        self._bound = [0] * len(self.lanes)
        self._changed: asyncio.Event | None = None
        # Creates waiting for a lane, first come first routed: only the head routes.
        self._line = CreateLine()
        self._arrivals = itertools.count()
        # Creates that arrived up to this number go ahead of polls (a job's tail began).
        self._promoted = -1
        # Staggered starts: when the pool's first create was sent and on which lane,
        # and which lanes have sent.
        self._start = (-math.inf, 0)
        self._started = [False] * len(self.lanes)

    @property
    def waiting(self) -> int:
        """Creates waiting in the router for a lane (not yet bound to one)."""
        return len(self._line)

    def rate(self) -> float:
        """The believed rates of the lanes open for creates, summed (requests per second).

        What a bulk job can keep busy: its window and its tail scale with it.
        A pool whose every lane is closed counts its first lane's, so the
        window never drops to nothing while creates end with the cause.
        """
        now = self.clock()
        rates = [
            lane.limiter.rate
            for lane, health in zip(self.lanes, self.health, strict=True)
            if lane.limiter is not None and health.state(now) is not LaneState.CLOSED
        ]
        if rates:
            return sum(rates)
        first = self.lanes[0].limiter
        return first.rate if first is not None else 0.0

    # -- attach ----------------------------------------------------------------------------

    def lane_for(self, lane: str | PoolLane | None) -> LaneRuntime:
        """The running lane named by ``lane``: a ``Lane``, its label, its fingerprint,
        or a run's ``lane`` (``"provider:fingerprint"``); ``None`` in a pool of one.

        Raises ``ConfigurationError`` when it names no lane of the pool, or is
        ``None`` in a pool of several (a run id is known only to its own key).
        """
        if lane is None:
            if len(self.lanes) == 1:
                return self.lanes[0]
            labels = ", ".join(repr(item.spec.label) for item in self.lanes)
            raise ConfigurationError(
                "attach() in a pool needs lane=...: a run is known only to the key that "
                f"created it (its run.lane, a Lane, or one of the labels {labels})"
            )
        for item in self.lanes:
            spec = item.spec
            if isinstance(lane, PoolLane):
                if lane == spec:
                    return item
            elif lane in (spec.label, spec.fingerprint, item.runs.label):
                return item
        named = lane.label if isinstance(lane, PoolLane) else shown(lane)
        raise ConfigurationError(f"lane {named} is not one of this session's lanes")

    # -- create ----------------------------------------------------------------------------

    async def create(
        self,
        request: ImageRequest,
        *,
        index: int | None,
        on_send: Callable[[], None] | None = None,
        ahead_of_polls: bool = False,
    ) -> Run:
        """Create a run for ``request`` on the lane the routing picks (module docstring).

        Raises the typed error of the create (``UncertainCreateError`` never
        moves), ``SpendCapError`` when it does not fit under the cap (nothing
        sent), ``PoolExhaustedError`` (or the one lane's error) when no lane
        can take it, ``RunTimeoutError`` when no lane was free within
        ``run_timeout``.
        """
        deadline = self.clock() + self._run_timeout
        failed: dict[int, GPTImageError] = dict(refusals(self.pool.lanes, request))  # _accepts
        arrival = next(self._arrivals)
        if ahead_of_polls:
            self._promoted = arrival
        # One lane needs no order of its own: its limiter queues the creates.
        ticket: asyncio.Future[None] | None = None
        if len(self.lanes) > 1:
            try:
                ticket = await self._line.turn(deadline)
            except TimeoutError:
                raise timed_out(self._run_timeout) from None
        try:
            while True:
                now = self.clock()
                ahead = ahead_of_polls or arrival <= self._promoted
                decision = self._route(request, now, failed, ahead=ahead)
                if isinstance(decision, Exhausted):
                    raise decision.error
                if isinstance(decision, Wait):
                    if decision.until > deadline:
                        raise timed_out(self._run_timeout)
                    await self._wait(decision.until)
                    continue
                index_ = decision.lane
                token = self.ledger.reserve(index_, request.quality)
                if isinstance(token, SpendCapError):
                    raise token
                if ticket is not None:
                    # Bound: the next create in line routes now (this one counts as bound).
                    self._line.leave(ticket)
                    ticket = None
                try:
                    outcome = await self._send(index_, token, request, index, on_send, ahead)
                except _Rebind:
                    continue  # nothing was sent: it routes again, ahead of the line
                if not isinstance(outcome, GPTImageError):
                    return outcome
                failed[index_] = outcome  # certainly not created there: try another lane
        finally:
            if ticket is not None:
                self._line.leave(ticket)

    def _route(
        self, request: ImageRequest, now: float, failed: dict[int, GPTImageError], *, ahead: bool
    ) -> Go | Wait | Exhausted:
        """Where the head of the line goes, or when it asks again (module docstring).

        ``ahead``: the create goes ahead of polls (one of a bulk job's last).
        """
        views: list[LaneView] = []
        # When each lane would send a create that goes ahead of its polls.
        own: list[float] = []
        for i, lane in enumerate(self.lanes):
            health = self.health[i]
            if (
                self.policy.closes
                and lane.fleet is not None
                and lane.fleet.cause is not None
                and health.cause is None
            ):
                # Another process on the key was refused: closed until the fleet's word expires.
                health.close(lane.fleet.cause, now, until=lane.fleet.until)
                logger.warning(
                    "lane %s is closed for new creates: %s",  # the cause says who was told
                    lane.spec.label,
                    lane.fleet.cause,
                )
            alone = len(self.lanes) == 1 and health.cause is None and not health.unreachable(now)
            if i in failed or alone:
                # A lane this create failed on is closed to it; one open lane is always ready,
                # unless unreachable: its creates then end at once, as on a pool's dead lanes.
                cause = failed.get(i)
                own.append(now)
                views.append(
                    LaneView(
                        label=lane.spec.label,
                        next_free=now,
                        price=lane.spec.price(request.quality),
                        interval=0.0,
                        state=LaneState.CLOSED if cause is not None else LaneState.OPEN,
                        cause=cause,
                        tried=cause is not None,
                    )
                )
                continue
            limiter = lane.limiter
            assert limiter is not None  # the session is open
            interval = limiter.interval
            # Requests queued in its limiter go first (polls due, the creates bound
            # to it): a lane with a backlog is later, whatever its next free slot.
            # The lane is picked by it, so the lanes' backlogs (and ends) stay even.
            free = max(now, limiter.next_free(), self._stagger(i, now, interval, failed))
            own.append(free + self._bound[i] * interval)
            if ahead and self.pool.routing == "earliest":
                # A job's last creates: the lane whose committed work ends first, i.e.
                # its bound creates and one request at least per run in flight there
                # (under "cheapest" the price still decides: no overflow to finish sooner).
                next_free = free + (self._bound[i] + lane.runs.in_flight) * interval
            else:
                next_free = free + max(self._bound[i], limiter.waiting) * interval
            views.append(
                lane_view(
                    lane.spec,
                    health,
                    next_free=next_free,
                    interval=interval,
                    quality=request.quality,
                    now=now,
                )
            )
        # Each lane's next_free counts the creates bound to it, so a queue shows
        # saturation: a create may wait up to CHEAP_SLOTS slots of a cheaper lane
        # (a poll just sent there is no saturation), the next queued one overflows.
        decision = route(
            views,
            now=now,
            policy=self.pool.routing,
            spend=self.ledger,
            horizon=math.inf,
            share=CHEAP_SLOTS,
        )
        if isinstance(decision, Wait):
            # Bound BIND_AHEAD slots before its turn, it queues in the lane's limiter;
            # a create ahead of polls waits only for the creates bound before it.
            chosen = views[decision.lane]
            turn = max(own[decision.lane], chosen.cooling_until) if ahead else decision.until
            bind = turn - BIND_AHEAD * chosen.interval
            if not self._started[decision.lane]:
                # Bound early, it would go at once: a lane's first create waits its phase.
                bind = max(bind, self._stagger(decision.lane, now, chosen.interval, failed))
            if bind <= now:
                return Go(decision.lane)
            return Wait(bind, decision.lane)
        return decision

    def _stagger(self, i: int, now: float, interval: float, failed: dict[int, Any]) -> float:
        """When lane ``i`` may send its first create (module docstring): ``k / n`` of a
        slot after the pool's first create, lane ``i`` being ``k`` lanes after that one's.

        ``-inf`` (no wait) once it has sent, for the pool's very first create, for
        a create that moves from a lane it failed on (it goes as soon as it can),
        more than a slot after the pool's first create (no burst: the lanes will
        not run in step, and a lone create must not wait), and under ``"cheapest"``.
        """
        start, first = self._start
        if self._started[i] or failed or math.isinf(start) or now > start + interval:
            return -math.inf
        if self.pool.routing != "earliest":
            return -math.inf  # the cheap lane fills first: the lanes do not run in step
        n = len(self.lanes)
        return start + (i - first) % n * interval / n

    async def _wait(self, until: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        try:
            async with asyncio.timeout_at(until):
                await changed.wait()
        except TimeoutError:
            pass

    def _wake(self) -> None:
        # Creates waiting for a lane look again at once (a lane closed: maybe every lane).
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _send(
        self,
        i: int,
        token: SpendToken,
        request: ImageRequest,
        index: int | None,
        on_send: Callable[[], None] | None,
        ahead_of_polls: bool,
    ) -> Run | GPTImageError:
        """One binding of a create to lane ``i``: the run, or the error of a create that may move.

        Raises the error of a create that must not move (uncertain, or failed
        on any lane), and ``_Rebind`` when the lane closed before it was sent.
        """
        lane, health = self.lanes[i], self.health[i]
        self._bound[i] += 1
        bound = True
        spend = CreateSpend(self.ledger, token)  # a token per attempt that may make a run

        def sending() -> None:
            nonlocal bound
            tell_met(previous_error())  # what the attempt before met: known only now
            if resending_uncertain():  # the attempt before may be paid: room for both, or not sent
                spend.resend()
            elif health.cause is not None or health.unreachable(self.clock()):
                raise _Rebind  # closed or unreachable while it waited: nothing is sent
            elif isinstance(unsent := previous_error(), APIConnectionError):
                if len(self.lanes) > 1:  # could not connect, never left: another lane, no retry
                    raise unsent
                if health.unanswered(unsent, self.clock()):  # one lane: each attempt counts
                    raise _Rebind  # unreachable: it ends with the lane's error (_route)
            if math.isinf(self._start[0]):  # the pool's first create
                self._start = (self.clock(), i)
            self._started[i] = True
            if bound:
                bound = False
                self._bound[i] -= 1
                self._wake()  # the head of the line may bind to this lane now
            if on_send is not None:
                on_send()  # may refuse it (a batch stopping): then nothing was sent
            spend.sent()

        settled = ATTEMPT_SETTLED.set(weakref.WeakMethod(spend.settled))
        try:
            run = await lane.create(
                request, index=index, on_send=sending, ahead_of_polls=ahead_of_polls
            )
        except _Rebind:
            self.ledger.release(spend.last)
            raise
        except GPTImageError as exc:
            moved = self._failed(i, spend.last, exc)
            if spend.resent:
                raise moved from None  # an earlier attempt may have made a run: never moved
            return moved
        except BaseException:
            spend.cancelled()  # an attempt out may still make a run (it is shielded)
            raise
        finally:
            ATTEMPT_SETTLED.reset(settled)
            if bound:
                self._bound[i] -= 1
        self.ledger.commit(spend.last)
        health.recover()
        return run

    def _failed(self, i: int, token: SpendToken, exc: GPTImageError) -> GPTImageError:
        # A connection error reaching here certainly never left on its last attempt: the
        # creator raises UncertainCreateError for one that may have (resent or not).
        decision = self.policy.decide(exc, maybe_received=False)
        health = self.health[i]
        was_closed = health.cause is not None
        health.apply(exc, decision, self.clock())
        if decision.lane is LaneAction.CLOSE and not was_closed:
            self.lanes[i].publish_closed(exc)
            logger.warning(
                "lane %s is closed for new creates (%s); its runs in flight are still polled",
                self.lanes[i].spec.label,
                type(exc).__name__,
            )
            self._wake()
        if decision.create is CreateMove.UNCERTAIN or isinstance(exc, UncertainCreateError):
            self.ledger.uncertain(token)
            raise exc
        self.ledger.release(token)
        if decision.create is CreateMove.FAIL:
            raise exc
        return exc
