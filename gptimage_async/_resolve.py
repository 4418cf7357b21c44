"""From a poll's answer to a run's end: what the answer says, and the ``Result`` or typed error.

* ``read_poll`` is the one place a poll's answer (or the lack of one) is
  read: it sends the status request, tells the limiter and the stats what
  came back, and sorts the outcome into a ``Reading``. An answer about a
  run other than the one asked for is never taken as this run's state: it
  is an unreadable answer (``RunIdMismatchError``), retried like any other.
  An answer with no id at all is read as the run asked for: the request's
  URL names the run, and PROVIDERS.md asks adapters to be tolerant of what
  the documentation leaves out.
* ``outcome_of`` turns a finished run's snapshot into its ``Result`` or its
  ``RunFailedError``; ``settle`` resolves the run exactly once and then calls
  the session back (which drops it from the registry and signals idleness).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from ._budget import Limiter
from ._classify import (
    Verdict,
    classify_no_answer,
    classify_status,
    read_answer,
    report_answer,
    report_no_answer,
    wait_as_told,
)
from ._exceptions import (
    APIStatusError,
    GPTImageError,
    ProtocolError,
    RunFailedError,
    RunIdMismatchError,
    RunNotFoundError,
)
from ._models import Result, RunStatus
from ._providers import Provider, RunSnapshot
from ._run import Run
from ._stats import SessionStats
from ._transport import SendError, Transport

__all__ = ["Kind", "Reading", "outcome_of", "read_poll", "settle"]


class Kind(enum.Enum):
    """What a poll's answer means for its run."""

    #: The run's state, about this run.
    SNAPSHOT = "snapshot"
    #: Nothing learned; poll again after a backoff (no answer, a 5xx, a 408).
    RETRY = "retry"
    #: Poll again once the server's ``Retry-After`` has passed (``Reading.wait`` seconds).
    WAIT = "wait"
    #: 404: the run is not visible (the scheduler decides whether yet or for good).
    NOT_FOUND = "not_found"
    #: An answer that cannot be used (unreadable, or about another run); bounded retries.
    UNREADABLE = "unreadable"
    #: Final: the error is the run's outcome.
    FAIL = "fail"


class Reading(NamedTuple):
    """One poll's outcome: ``snapshot`` for ``Kind.SNAPSHOT``, else ``error``."""

    kind: Kind
    snapshot: RunSnapshot | None = None
    error: GPTImageError | None = None
    #: Seconds to wait before the next poll (``Kind.WAIT`` only).
    wait: float = 0.0


async def read_poll(
    *,
    transport: Transport,
    provider: Provider,
    limiter: Limiter,
    stats: SessionStats,
    run_id: str,
    sent_at: float,
) -> Reading:
    """Send one status request for ``run_id`` and read its answer.

    ``sent_at`` is the loop time the limiter granted the request (dates a
    429's pause). Never raises for anything the server or the network does.
    """
    stats.polls += 1
    stats.requests += 1
    try:
        answer = await transport.send("GET", provider.poll_path(run_id))
    except SendError as exc:
        report_no_answer(limiter=limiter, stats=stats)
        classify_no_answer(exc, create=False)  # always a retry: a poll changes nothing
        return Reading(Kind.RETRY, error=exc)
    except ProtocolError as exc:
        stats.poll_errors += 1
        return Reading(Kind.UNREADABLE, error=exc)
    except APIStatusError as exc:  # a redirect the transport would not follow
        report_answer(exc, limiter=limiter, stats=stats, sent_at=sent_at)
        return _status_reading(exc)
    try:
        snapshot = read_answer(provider, answer, run_id=run_id)
    except APIStatusError as exc:
        report_answer(exc, limiter=limiter, stats=stats, sent_at=sent_at)
        return _status_reading(exc)
    except ProtocolError as exc:
        report_answer(None, limiter=limiter, stats=stats, sent_at=sent_at)
        stats.poll_errors += 1
        return Reading(Kind.UNREADABLE, error=exc)
    report_answer(None, limiter=limiter, stats=stats, sent_at=sent_at)
    if snapshot.id != run_id:
        # One user's picture must never be shown to another: an answer about
        # another run (a mixed-up cache, a proxy, a provider bug) says nothing
        # about this one.
        stats.poll_errors += 1
        return Reading(
            Kind.UNREADABLE,
            error=RunIdMismatchError(
                f"a poll of run {run_id} was answered about run {snapshot.id}; "
                "that answer was not used",
                run_id=run_id,
                answered_id=snapshot.id,
            ),
        )
    return Reading(Kind.SNAPSHOT, snapshot=snapshot)


def _status_reading(error: APIStatusError) -> Reading:
    verdict = classify_status(error, create=False)
    if verdict is Verdict.WAIT:
        # After a 429 the limiter holds it back; after a Retry-After on any
        # other status, the poll itself waits that long (within its deadline).
        return Reading(Kind.WAIT, error=error, wait=wait_as_told(error))
    if verdict is Verdict.RETRY:
        kind = Kind.NOT_FOUND if isinstance(error, RunNotFoundError) else Kind.RETRY
        return Reading(kind, error=error)
    return Reading(Kind.FAIL, error=error)


def outcome_of(run: Run, snapshot: RunSnapshot, *, elapsed: float) -> Result | RunFailedError:
    """The ``Result`` of a run seen succeeded, or the error of one seen failed or canceled.

    ``elapsed`` is seconds from the create to now.
    """
    run_id = run.run_id or snapshot.id
    if snapshot.status is RunStatus.SUCCEEDED:
        return Result(
            run_id=run_id,
            provider=run.provider,
            urls=list(snapshot.urls),
            request=run.request,
            elapsed=elapsed,
        )
    if snapshot.status is RunStatus.CANCELED:
        message = snapshot.error_message or "the run was canceled on the provider's side"
    else:
        message = snapshot.error_message or "the provider reports that the run failed"
    return RunFailedError(message, run_id=run_id, code=snapshot.error_code)


def settle(
    run: Run,
    outcome: Result | GPTImageError,
    on_resolved: Callable[[Run], None],
    *,
    status: RunStatus | None = None,
) -> bool:
    """Resolve ``run`` with ``outcome`` unless it already is; True if this call resolved it.

    ``status`` is the final status of a failed run (default: ``FAILED`` for a
    ``RunFailedError``, else ``ERRORED``). ``on_resolved`` (the session's:
    registry update, idle signal) runs only for the call that resolved it.
    """
    if isinstance(outcome, Result):
        resolved = run._resolve(outcome)
    else:
        if status is None:
            failed = isinstance(outcome, RunFailedError)
            status = RunStatus.FAILED if failed else RunStatus.ERRORED
        resolved = run._fail(outcome, status)
    if resolved:
        on_resolved(run)
    return resolved
