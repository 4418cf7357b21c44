"""Reading an answer and sorting errors: one reader for creates, polls and downloads.

``read`` turns what one exchange gave (an ``Answer``, or the ``SendError`` /
``ProtocolError`` / ``APIStatusError`` the transport raised) into a
``Reading``: the decoded value, or a ``Verdict`` (retry, wait as told, fail,
uncertain) with the typed error and the seconds to wait. Callers act on the
verdict and nothing else; each non-OK reading is logged once at DEBUG (after
openai-python's ``_should_retry``), so a reader of the log can tell why a
request was sent again, waited or given up on. ``exchange`` sends one request
and hands back its outcome, ready for ``read``.

* ``read_answer``: a 2xx answer is the provider's run object, decoded by its
  adapter; anything else is the typed ``APIStatusError`` carrying the
  server's ``Retry-After``.
* ``classify_status`` / ``classify_no_answer``: the verdict on an error
  status, and on a request that got no answer (``read`` uses both).
* ``report`` (``report_answer`` / ``report_no_answer``): what the limiter and
  the session's stats learn from a reading (a 429 pauses the key, 5xx and
  lost connections back off, any other answer ends the backoff).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from ._budget import Limiter
from ._exceptions import (
    APIStatusError,
    EndpointNotFoundError,
    GPTImageError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RunIdMismatchError,
    RunNotFoundError,
)
from ._providers import Provider, RunSnapshot
from ._retry import parse_retry_after
from ._stats import SessionStats
from ._transport import ACCEPT_JSON, MAX_BODY_BYTES, Answer, SendError, Transport, display_url

__all__ = [
    "IncompleteBody",
    "Kind",
    "Outcome",
    "Reading",
    "Verdict",
    "classify_no_answer",
    "classify_status",
    "exchange",
    "is_success",
    "is_transient_status",
    "read",
    "read_answer",
    "read_poll",
    "report",
    "report_answer",
    "report_no_answer",
    "wait_as_told",
]

T = TypeVar("T")

#: What a request was: a create may be paid for, a poll or a download is safe to repeat.
Kind = Literal["create", "poll", "download"]
#: What one exchange gave: an answer, or the typed error the transport raised.
Outcome = Answer | GPTImageError

logger = logging.getLogger("gptimage_async")


class Verdict(enum.Enum):
    """What to do about a request that did not get the answer it wanted."""

    #: It certainly had no effect: send it again (after a backoff); costs an attempt.
    RETRY = "retry"
    #: Rate limited, or told when to come back: send it again once the
    #: server's ``Retry-After`` (or the limiter's pause after a 429) is over;
    #: costs no attempt.
    WAIT = "wait"
    #: Final: the error is the outcome.
    FAIL = "fail"
    #: A create that may have had effect (and been paid for): never resent silently.
    UNCERTAIN = "uncertain"
    #: The answer was what was wanted: ``Reading.value`` holds it.
    OK = "ok"


class IncompleteBody(ProtocolError):
    """A 2xx answer whose body is cut short or empty (an image without its end).

    Raised by a ``decode`` given to ``read``: asking again may help, so a poll
    or a download is retried; a create is uncertain (its run may exist).
    """


class Reading(Generic[T]):
    """What ``read`` made of one exchange.

    ``verdict``: what to do. ``value``: the decoded answer (``Verdict.OK``
    only). ``error``: the public typed error (any other verdict; for
    ``UNCERTAIN``, why). ``wait``: seconds to wait before sending again
    (``WAIT`` only; 0 after a 429 on a create or poll, whose wait is the
    limiter's). ``answered``: an HTTP answer came back (even one that could
    not be read), which the limiter hears as such.
    """

    __slots__ = ("answered", "error", "value", "verdict", "wait")

    def __init__(
        self,
        verdict: Verdict,
        *,
        value: T | None = None,
        error: GPTImageError | None = None,
        wait: float = 0.0,
        answered: bool = True,
    ) -> None:
        self.verdict = verdict
        self.value = value
        self.error = error
        self.wait = wait
        self.answered = answered

    def __repr__(self) -> str:
        return f"<Reading {self.verdict.value} {self.error or ''}>"


async def exchange(
    transport: Transport,
    method: str,
    target: str,
    body: bytes | None = None,
    *,
    accept: str = ACCEPT_JSON,
    time_limit: float | None = None,
    max_bytes: int = MAX_BODY_BYTES,
) -> Outcome:
    """Send one request through ``transport``; its ``Answer``, or the typed error it raised.

    Never raises the transport's errors (``SendError``, ``ProtocolError``,
    ``APIStatusError``): they are the outcome, for ``read`` to judge.
    """
    try:
        return await transport.send(
            method, target, body, accept=accept, time_limit=time_limit, max_bytes=max_bytes
        )
    except (SendError, ProtocolError, APIStatusError) as exc:
        return exc


def read(
    outcome: Outcome, decode: Callable[[Answer], T], *, kind: Kind, url: str | None = None
) -> Reading[T]:
    """The verdict on one exchange of a create, a poll or a download.

    ``decode(answer)`` returns the wanted value, or raises the typed
    ``APIStatusError`` for an error status (``read_answer`` does both for the
    API), ``IncompleteBody`` for a body cut short, or another
    ``GPTImageError`` for an answer that is final and wrong (a page where an
    image was wanted). ``url`` (without secrets; ``display_url``) names the
    endpoint in the hint a 404 on a create gets.

    The rules, in order:

    * no answer (``SendError``): a TLS certificate refused fails at once (a
      ``TLSCertificateError`` naming the host); a create that may have
      arrived is uncertain; anything else is retried;
    * an answer that cannot be read (``ProtocolError``: a header over the
      limit, an encoding that cannot be decoded, a body cut short): a
      create's run may exist, so it is uncertain; a poll or a download is
      retried (the caller caps how often, and then fails with the error);
    * an error status: ``classify_status``; a 404 on a create fails at once
      with ``EndpointNotFoundError`` (the base URL is likely wrong); a
      download waits its ``Retry-After`` if it has one (it has no limiter);
    * any other ``GPTImageError`` ``decode`` raises: fail.
    """
    if isinstance(outcome, Answer):
        try:
            return Reading(Verdict.OK, value=decode(outcome))
        except GPTImageError as exc:
            return _logged(_read_error(exc, kind, url), kind)
    return _logged(_read_error(outcome, kind, url), kind)


def _logged(reading: Reading[T], kind: Kind) -> Reading[T]:
    """``reading`` (not OK), once logged at DEBUG: why a request is sent again or given up."""
    logger.debug("%s: %s (%s)", kind, reading.verdict.value, reading.error)
    return reading


def read_poll(outcome: Outcome, provider: Provider, run_id: str) -> Reading[RunSnapshot]:
    """``read`` for a poll of ``run_id``: the run object decoded by ``provider``'s adapter.

    An answer about a run other than the one asked for is never taken as
    this run's state (one user's picture must never be shown to another: a
    mixed-up cache, a proxy, a provider bug): it is a ``RunIdMismatchError``,
    an answer that cannot be used, retried like any other ``ProtocolError``.
    An answer with no id at all is read as the run asked for: the request's
    URL names the run, and PROVIDERS.md asks adapters to be tolerant of what
    the documentation leaves out.

    The poll path's one call (``PollScheduler._poll_once``)::

        outcome = await exchange(transport, "GET", provider.poll_path(run_id))
        reading = read_poll(outcome, provider, run_id)
        report(reading, limiter=limiter, stats=stats, sent_at=sent_at)
        # OK: reading.value; WAIT: after reading.wait s; RETRY: backoff, capped
        # (a 404 within its grace, a ProtocolError a few times); FAIL: reading.error
        # (a refused certificate, a 400, a quota gone ...)
    """

    # ``read`` with its decode inlined: this runs for every poll, the hot path.
    if isinstance(outcome, Answer):
        try:
            snapshot = read_answer(provider, outcome, run_id=run_id)
            if snapshot.id != run_id:
                raise RunIdMismatchError(
                    f"a poll of run {run_id} was answered about run {snapshot.id}; "
                    "that answer was not used",
                    run_id=run_id,
                    answered_id=snapshot.id,
                )
        except GPTImageError as exc:
            return _logged(_read_error(exc, "poll", None), "poll")
        return Reading(Verdict.OK, value=snapshot)
    return _logged(_read_error(outcome, "poll", None), "poll")


def _read_error(error: GPTImageError, kind: Kind, url: str | None) -> Reading[T]:
    create = kind == "create"
    if isinstance(error, SendError):
        verdict = classify_no_answer(error, create=create)
        return Reading(verdict, error=error.public(), answered=False)
    if isinstance(error, APIStatusError):
        if create and error.status_code == 404:
            return Reading(Verdict.FAIL, error=_endpoint_not_found(error, url))
        if kind == "download":
            return _read_download_status(error)
        verdict = classify_status(error, create=create)
        wait = wait_as_told(error) if verdict is Verdict.WAIT else 0.0
        return Reading(verdict, error=error, wait=wait)
    if isinstance(error, ProtocolError):
        if create:
            return Reading(Verdict.UNCERTAIN, error=error)
        if kind == "poll" or isinstance(error, IncompleteBody):
            return Reading(Verdict.RETRY, error=error)
    return Reading(Verdict.FAIL, error=error)


def _read_download_status(error: APIStatusError) -> Reading[T]:
    if not is_transient_status(error.status_code):
        return Reading(Verdict.FAIL, error=error)
    if error.retry_after is not None:
        return Reading(Verdict.WAIT, error=error, wait=error.retry_after)
    return Reading(Verdict.RETRY, error=error)


def _endpoint_not_found(error: APIStatusError, url: str | None) -> EndpointNotFoundError:
    where = display_url(url) if url is not None else "the create endpoint"
    return EndpointNotFoundError(
        f"{where} answered 404 Not Found to a create: that endpoint does not exist. "
        "Check the base URL (base_url= / --base-url) and the provider; nothing was retried.",
        status_code=404,
        code=error.code,
    )


def is_success(status: int) -> bool:
    """True for a 2xx status."""
    return 200 <= status < 300


def is_transient_status(status: int) -> bool:
    """True for a status that may pass if asked again: 408, 429 or 5xx."""
    return status in (408, 429) or status >= 500


def read_answer(provider: Provider, answer: Answer, *, run_id: str | None) -> RunSnapshot:
    """The run object in a 2xx answer, decoded by the provider's adapter.

    Raises the typed ``APIStatusError`` for an error status (or an error
    dressed as a 2xx), with ``retry_after`` read from the headers, and
    ``ProtocolError`` for a 2xx answer that cannot be understood.
    """
    if is_success(answer.status):
        return provider.decode_run(answer.body, run_id=run_id)
    raise provider.decode_error(
        answer.status,
        answer.body,
        run_id=run_id,
        retry_after=parse_retry_after(answer.headers),
    )


def classify_status(error: APIStatusError, *, create: bool) -> Verdict:
    """What to do about an error answer to a create (``create=True``) or a poll.

    * quota gone (429 ``USAGE_EXCEEDED``): fail, waiting cannot help;
    * rate limited (429): wait as told, then send again;
    * 404 on a poll: retry (a run can be briefly invisible right after its
      create; the scheduler caps how often);
    * 408 and 503: retry (refused before any processing);
    * other 5xx: retry a poll; a create is uncertain (the run may exist);
    * anything else: fail.

    A retry the server gave a ``Retry-After`` for (any status: a 503 during
    maintenance, a 502, a 408) becomes a wait as told: it costs no attempt,
    and the caller waits that long (capped at ``MAX_RETRY_AFTER``, within
    the run's deadline) before sending again.
    """
    status = error.status_code
    if isinstance(error, QuotaExceededError):
        verdict = Verdict.FAIL
    elif isinstance(error, RateLimitError):
        verdict = Verdict.WAIT
    elif isinstance(error, RunNotFoundError) and not create:
        verdict = Verdict.RETRY
    elif not is_transient_status(status):
        verdict = Verdict.FAIL
    elif create and status >= 500 and status != 503:
        verdict = Verdict.UNCERTAIN
    elif error.retry_after is not None:
        verdict = Verdict.WAIT
    else:
        verdict = Verdict.RETRY
    return verdict


def classify_no_answer(error: SendError, *, create: bool) -> Verdict:
    """What to do when no answer came.

    Fail when the TLS certificate was refused (it will not change if asked
    again); uncertain when a create may have arrived; otherwise retry.
    """
    if error.certificate_host is not None:
        return Verdict.FAIL
    return Verdict.UNCERTAIN if create and error.maybe_received else Verdict.RETRY


def wait_as_told(error: APIStatusError) -> float:
    """Seconds a caller itself waits before sending again after ``error``, a wait as told.

    A 429's wait is the limiter's (it pauses the whole key): 0 here. Any other
    status waits its ``Retry-After`` (already capped by ``parse_retry_after``).
    """
    if isinstance(error, RateLimitError) or error.retry_after is None:
        return 0.0
    return error.retry_after


def report_answer(
    error: APIStatusError | None, *, limiter: Limiter, stats: SessionStats, sent_at: float
) -> None:
    """Tell the limiter and the stats what an answer said (``error=None``: a good answer).

    A 429 pauses the key for its ``Retry-After`` (``sent_at`` dates it); a
    5xx or 408 holds every request back with backoff; any other answer ends
    that backoff.
    """
    if error is not None and isinstance(error, RateLimitError):
        if not isinstance(error, QuotaExceededError):
            stats.rate_limited += 1
            limiter.on_rate_limited(sent_at, error.retry_after)
            return
    elif error is not None and (error.status_code >= 500 or error.status_code == 408):
        stats.server_errors += 1
        limiter.on_server_trouble()
        return
    limiter.on_answer()


def report(reading: Reading[T], *, limiter: Limiter, stats: SessionStats, sent_at: float) -> None:
    """Tell the limiter and the stats what one exchange of a create or poll said."""
    if not reading.answered:
        report_no_answer(limiter=limiter, stats=stats)
    elif isinstance(reading.error, APIStatusError) and not isinstance(
        reading.error, EndpointNotFoundError
    ):
        report_answer(reading.error, limiter=limiter, stats=stats, sent_at=sent_at)
    else:
        report_answer(None, limiter=limiter, stats=stats, sent_at=sent_at)


def report_no_answer(*, limiter: Limiter, stats: SessionStats) -> None:
    """Tell the limiter and the stats that a request got no answer: back off."""
    stats.connection_errors += 1
    limiter.on_server_trouble()
