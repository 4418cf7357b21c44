"""Creating a run: from a validated request to a tracked, scheduled ``Run``.

The pipeline reads from the method names::

    Creator.create                    encode once; retry as classified, within the run's deadline
      → _send_when_allowed            wait for the rate limiter, journal the intent (on_send)
        → _send_shielded              one attempt as a task the caller cannot orphan
          → _send_once                POST; read the answer (``_classify``)
            → _accept                 build the Run, register it, hand it to the scheduler
            → _not_created / _uncertain   send again, or raise the typed error

Reading the answer is ``_classify.read``'s job; this module only acts on its verdict.
A create costs money, so one that may have reached the provider is never
sent again silently: it raises ``UncertainCreateError`` (unless the session
was opened with ``resend_uncertain_creates=True``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import anyio

from ._budget import PRIORITY_CREATE, PRIORITY_LAST_CREATE, Limiter
from ._classify import Reading, Verdict, exchange, read, read_answer, report
from ._exceptions import (
    APIStatusError,
    GPTImageError,
    RunTimeoutError,
    SessionClosedError,
    SpendCapError,
    UncertainCreateError,
)
from ._models import ImageRequest
from ._providers import Provider, RunSnapshot
from ._registry import RunRegistry
from ._run import Run
from ._scheduler import PollScheduler
from ._stats import SessionStats
from ._transport import Answer, Transport

__all__ = [
    "ATTEMPT_SETTLED",
    "RESEND_HINT",
    "Creator",
    "previous_error",
    "resending_uncertain",
    "sending_lane",
]

#: The end of an ``UncertainCreateError``'s message: what a library user can do.
#: A batch says what its own users can do instead (``_batch_types.batch_words``).
RESEND_HINT = "or use resend_uncertain_creates=True to resend such creates."

logger = logging.getLogger("gptimage_async")

#: The lane (``"provider:fingerprint"``) of the create whose ``on_send`` hook runs now.
#: Creates are bound to a lane late, at send time: the hook reads it here
#: (``sending_lane``) to journal where the create went before it can be lost.
_SENDING_LANE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gptimage_sending_lane", default=None
)


def sending_lane() -> str | None:
    """Inside an ``on_send`` hook: the lane the create is sent through (``Run.lane``), else None."""
    return _SENDING_LANE.get()


#: True while the ``on_send`` hook of a resend runs: the attempt before it was of
#: uncertain fate (``resend_uncertain_creates=True``), so it may have been paid.
_RESENDING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "gptimage_resending_uncertain", default=False
)


#: The error of this create's attempt before the one whose ``on_send`` hook runs now.
_PREVIOUS: contextvars.ContextVar[GPTImageError | None] = contextvars.ContextVar(
    "gptimage_previous_error", default=None
)


def previous_error() -> GPTImageError | None:
    """Inside an ``on_send`` hook: the error of this create's attempt before, or None.

    A pool's router reads it to move a create that could not connect to
    another lane at once, rather than retrying on the lane (the hook raises
    it: the create ends on this lane with that error, nothing more sent).
    """
    return _PREVIOUS.get()


#: Set by a caller (a pool's router, around one ``create``) to be told each time an
#: attempt of the create certainly made nothing: nothing of it is outstanding then,
#: so a create cancelled before its next attempt is released, not kept as maybe paid.
#: A weak reference: timers armed meanwhile copy the context and may outlive the create.
ATTEMPT_SETTLED: contextvars.ContextVar[weakref.WeakMethod[Callable[[], None]] | None] = (
    contextvars.ContextVar("gptimage_attempt_settled", default=None)
)


def resending_uncertain() -> bool:
    """Inside an ``on_send`` hook: whether the attempt before this one may have made a run.

    A spend ledger keeps that attempt reserved (maybe paid) and reserves this
    one anew; the hook may refuse it by raising ``SpendCapError``, and the
    create then ends with ``UncertainCreateError`` (nothing more is sent).
    """
    return _RESENDING.get()


class _NotCreated:
    """The outcome of an attempt that certainly created nothing: it may be sent again.

    ``verdict`` is ``Verdict.RETRY`` (costs an attempt) or ``Verdict.WAIT``
    (costs none: the limiter holds the next attempt back after a 429, and
    ``wait`` seconds are this create's own, a ``Retry-After`` on a 503).
    """

    __slots__ = ("error", "maybe_created", "verdict", "wait", "wall")

    def __init__(
        self,
        error: GPTImageError,
        verdict: Verdict,
        wait: float = 0.0,
        *,
        maybe_created: str | None = None,
        wall: float = 0.0,
    ) -> None:
        self.error = error
        self.verdict = verdict
        self.wait = wait
        #: Why the attempt may have made a run after all (a resent uncertain create), else None.
        self.maybe_created = maybe_created
        #: When the attempt went on the wire (wall-clock seconds).
        self.wall = wall


def _made_nothing(told: Callable[[], None], task: asyncio.Task[Any]) -> None:
    """Call ``told`` if the attempt ``task`` certainly made no run (even with its caller gone)."""
    if task.cancelled():
        return
    error = task.exception()
    outcome = task.result() if error is None else None
    if isinstance(error, APIStatusError) or (
        isinstance(outcome, _NotCreated) and outcome.maybe_created is None
    ):
        told()


class Creator:
    """Sends one session's creates. Strictly private: built by ``Session.open``.

    ``check_open`` raises ``SessionClosedError`` once the session closes (no
    new attempt starts then); ``on_busy`` / ``on_settled`` tell the session a
    create went on the wire / ended, so that closing can wait for it.
    """

    __slots__ = (
        "_check_open",
        "_clock",
        "_lane",
        "_limiter",
        "_max_attempts",
        "_on_busy",
        "_on_settled",
        "_provider",
        "_registry",
        "_resend",
        "_run_timeout",
        "_scheduler",
        "_stats",
        "_tail_waiting",
        "_transport",
        "in_flight",
        "waiting",
    )

    def __init__(
        self,
        *,
        provider: Provider,
        transport: Transport,
        limiter: Limiter,
        scheduler: PollScheduler,
        registry: RunRegistry,
        stats: SessionStats,
        clock: Callable[[], float],
        run_timeout: float,
        max_attempts: int,
        resend_uncertain: bool,
        check_open: Callable[[], None],
        on_busy: Callable[[], None],
        on_settled: Callable[[], None],
        lane: str | None = None,
    ) -> None:
        #: ``Run.lane`` of the lane this creator sends for: stamped on uncertain creates.
        self._lane = lane
        self._provider = provider
        self._transport = transport
        self._limiter = limiter
        self._scheduler = scheduler
        self._registry = registry
        self._stats = stats
        self._clock = clock
        self._run_timeout = run_timeout
        self._max_attempts = max_attempts
        self._resend = resend_uncertain
        self._check_open = check_open
        self._on_busy = on_busy
        self._on_settled = on_settled
        #: Attempts on the wire; the session waits for them when it closes.
        self.in_flight: set[asyncio.Task[Any]] = set()
        #: Creates waiting for a rate-limit slot now, and those of them marked last.
        self.waiting = 0
        self._tail_waiting = 0

    async def create(
        self,
        request: ImageRequest,
        *,
        index: int | None,
        on_send: Callable[[], None] | None = None,
        ahead_of_polls: bool = False,
    ) -> Run:
        """Create a run for ``request`` (already validated) and return it, tracked.

        ``ahead_of_polls``: one of a job's last creates, which waits for its
        slot ahead of polls (``PRIORITY_LAST_CREATE``) rather than behind them.

        Retries an attempt that certainly created nothing: up to
        ``max_attempts`` for errors, without counting waits as told by a 429.
        Everything happens within ``run_timeout`` of the call. Raises the
        typed error of the last attempt, ``RunTimeoutError`` if the limiter
        never let one through, or ``UncertainCreateError``.
        """
        body = self._provider.encode_create(request)
        deadline = self._clock() + self._run_timeout
        priority = PRIORITY_CREATE
        if ahead_of_polls:
            priority = PRIORITY_LAST_CREATE
            # Creates queued before this one go first too: overtaken, they would
            # wait behind polls and become the job's real last runs.
            self._limiter.promote_creates()
            self._scheduler.tail_began()
        attempts = 0
        last_error: GPTImageError | None = None
        # The last attempt, when its fate is unknown (resend_uncertain_creates=True).
        uncertain: _NotCreated | None = None
        while True:
            try:
                outcome = await self._send_when_allowed(
                    request, body, index, deadline, last_error, on_send, priority, uncertain
                )
            except SpendCapError as refused:
                if uncertain is None:
                    raise
                # The resend does not fit under the cap beside the attempt that may be paid.
                raise self._uncertain(
                    request,
                    f"{uncertain.maybe_created}; sending it again was refused: {refused}",
                    uncertain.wall,
                    hint="it was not sent again: the spend cap leaves no room for a second "
                    "attempt while the first may be paid. Check the provider's dashboard.",
                ) from refused
            if isinstance(outcome, Run):
                return outcome
            uncertain = outcome if outcome.maybe_created is not None else None
            last_error = outcome.error
            if outcome.verdict is Verdict.RETRY:
                attempts += 1
                self._stats.create_retries += 1
                if attempts >= self._max_attempts:
                    raise self._given_up(request, outcome, attempts)
            elif self._clock() > deadline:
                raise outcome.error
            else:
                await self._wait_as_told(outcome, deadline)
            logger.debug("create not accepted (%s); sending it again", outcome.error)

    def _given_up(
        self, request: ImageRequest, outcome: _NotCreated, attempts: int
    ) -> GPTImageError:
        """The error of a create whose attempts ran out: the last one's, or, when that one
        may have made a run (resent uncertain creates), ``UncertainCreateError``, so that
        every error that is not one means the last attempt certainly made nothing."""
        if outcome.maybe_created is None:
            return outcome.error
        error = self._uncertain(
            request,
            f"{outcome.maybe_created}; sent {attempts} times",
            outcome.wall,
            hint="its attempts ran out (resend_uncertain_creates=True). "
            "Check the provider's dashboard.",
        )
        error.__cause__ = outcome.error
        return error

    async def _wait_as_told(self, outcome: _NotCreated, deadline: float) -> None:
        # A 429's wait is the limiter's; a 503's Retry-After (say) is this create's.
        # The deadline still holds: a wait that would end past it fails now.
        seconds = outcome.wait
        if self._clock() + seconds >= deadline:
            raise outcome.error
        if seconds > 0:
            logger.debug("waiting %.3gs as told before sending the create again", seconds)
            await anyio.sleep(seconds)

    async def _send_when_allowed(
        self,
        request: ImageRequest,
        body: bytes,
        index: int | None,
        deadline: float,
        last_error: GPTImageError | None,
        on_send: Callable[[], None] | None,
        priority: int,
        uncertain: _NotCreated | None = None,
    ) -> Run | _NotCreated:
        self._check_open()
        last = priority == PRIORITY_LAST_CREATE
        self.waiting += 1
        self._tail_waiting += last
        # asyncio's timeout, not an anyio cancel scope: the same deadline (both
        # read the loop's clock) for a third of the CPU, paid on every create.
        waiting = asyncio.timeout_at(deadline)
        sent_at: float | None = None
        try:
            async with waiting:
                sent_at = await self._limiter.acquire(priority)
        except TimeoutError:
            if not waiting.expired():
                raise  # the limiter's own, not the deadline's
        except asyncio.CancelledError:
            # The limiter cancels its waiters when the session closes; a caller
            # who cancelled nothing gets the typed error, not a bare cancel.
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            self._still_open()
            raise
        finally:
            self.waiting -= 1
            self._tail_waiting -= last
            if last and not self._tail_waiting:
                self._scheduler.tail_ended()
        # Granted while the session began closing: not sent. Closing lets creates
        # on the wire finish, but one sent now could be paid for and then lost.
        self._still_open()
        if last and sent_at is not None:
            self._stats.tail_creates += 1
        if sent_at is None:  # raised here, not in the except block: no TimeoutError context
            if last_error is not None:
                raise last_error  # the 429 (or 503) that kept it waiting says why
            raise RunTimeoutError(
                f"the create could not be sent within run_timeout ({self._run_timeout:g}s)"
            )
        if on_send is not None:
            token = _SENDING_LANE.set(self._lane)
            resending = _RESENDING.set(uncertain is not None)
            previous = _PREVIOUS.set(last_error)
            try:
                on_send()
            finally:
                _PREVIOUS.reset(previous)
                _RESENDING.reset(resending)
                _SENDING_LANE.reset(token)
        return await self._send_shielded(request, body, sent_at, index)

    def _still_open(self) -> None:
        """Raise ``SessionClosedError`` (nothing was sent) if the session began closing."""
        try:
            self._check_open()
        except SessionClosedError:
            raise SessionClosedError(
                "the session began closing before this create was sent: it was not sent, "
                "no run was created and nothing was paid for"
            ) from None

    async def _send_shielded(
        self, request: ImageRequest, body: bytes, sent_at: float, index: int | None
    ) -> Run | _NotCreated:
        told = ref() if (ref := ATTEMPT_SETTLED.get()) is not None else None
        # The attempt's context (its run's, for life) must not hold the caller's hook.
        hidden = ATTEMPT_SETTLED.set(None)
        try:
            task = asyncio.get_running_loop().create_task(
                self._send_once(request, body, sent_at, index), name="gptimage-create"
            )
        finally:
            ATTEMPT_SETTLED.reset(hidden)
        self.in_flight.add(task)
        self._on_busy()
        task.add_done_callback(self._settled)
        if told is not None:
            # Before the shield's own callback: the caller hears it before a next attempt.
            task.add_done_callback(functools.partial(_made_nothing, told))
        # Shielded: a caller cancelled now must not orphan a run being paid for.
        return await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self.in_flight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: the caller may be gone
        self._on_settled()

    async def _send_once(
        self, request: ImageRequest, body: bytes, sent_at: float, index: int | None
    ) -> Run | _NotCreated:
        self._stats.requests += 1
        wall = time.time()  # when it went on the wire, for an uncertain create's record
        path = self._provider.create_path
        outcome = await exchange(self._transport, "POST", path, body)
        reading = read(outcome, self._decode, kind="create", url=self._transport.base_url + path)
        report(reading, limiter=self._limiter, stats=self._stats, sent_at=sent_at)
        if reading.value is not None and isinstance(outcome, Answer):
            return self._accept(request, reading.value.id, sent_at, index, rtt=outcome.elapsed)
        return self._not_created(request, reading, wall)

    def _decode(self, answer: Answer) -> RunSnapshot:
        return read_answer(self._provider, answer, run_id=None)

    def _accept(
        self, request: ImageRequest, run_id: str, sent_at: float, index: int | None, *, rtt: float
    ) -> Run:
        self._stats.creates += 1
        run = Run(
            run_id,
            self._provider.name,
            request,
            created_at=sent_at,
            deadline=sent_at + self._run_timeout,
            index=index,
        )
        self._registry._track(run)
        self._on_busy()
        self._scheduler.add(run, rtt=rtt)
        return run

    def _not_created(
        self, request: ImageRequest, reading: Reading[RunSnapshot], wall: float
    ) -> _NotCreated:
        error, verdict = reading.error, reading.verdict
        assert error is not None
        if verdict is Verdict.UNCERTAIN:
            why = f"the provider answered {error}" if isinstance(error, APIStatusError) else ""
            if not self._resend:
                raise self._uncertain(request, why or str(error), wall)
            return _NotCreated(
                error, Verdict.RETRY, reading.wait, maybe_created=why or str(error), wall=wall
            )
        if verdict is Verdict.FAIL:
            raise error
        return _NotCreated(error, verdict, reading.wait)

    def _uncertain(
        self, request: ImageRequest, why: str, wall: float, *, hint: str | None = None
    ) -> UncertainCreateError:
        self._stats.uncertain_creates += 1
        prompt = request.prompt if len(request.prompt) <= 60 else request.prompt[:57] + "..."
        hint = hint or (
            "it was not sent again, to avoid paying twice. Check the provider's dashboard, "
            + RESEND_HINT
        )
        return UncertainCreateError(
            f"the create for {prompt!r} may have reached {self._provider.name} ({why}); " + hint,
            prompt=request.prompt,
            lane=self._lane,
            sent_at=wall,
        )

    def __repr__(self) -> str:
        return f"<Creator {self._provider.name} in_flight={len(self.in_flight)}>"
