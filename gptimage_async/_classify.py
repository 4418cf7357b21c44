"""Reading an answer and sorting errors: one place for creates, polls and downloads.

Each decision is one small function, and each branch is logged at DEBUG
(after openai-python's ``_should_retry``): a reader can tell why a request
was sent again, waited or given up on.

* ``read_answer``: a 2xx answer is the provider's run object, decoded by its
  adapter; anything else is the typed ``APIStatusError`` carrying the
  server's ``Retry-After``.
* ``classify_status`` / ``classify_no_answer`` / ``classify_unreadable``: what
  to do about an error, as a ``Verdict``.
* ``report_answer`` / ``report_no_answer``: what the limiter and the session's
  stats learn from it (a 429 pauses the key, 5xx and lost connections back
  off, any other answer ends the backoff).
"""

from __future__ import annotations

import enum
import logging

from ._budget import Limiter
from ._exceptions import APIStatusError, QuotaExceededError, RateLimitError, RunNotFoundError
from ._providers import Provider, RunSnapshot
from ._retry import parse_retry_after
from ._stats import SessionStats
from ._transport import Answer, SendError

__all__ = [
    "Verdict",
    "classify_no_answer",
    "classify_status",
    "classify_unreadable",
    "is_success",
    "is_transient_status",
    "read_answer",
    "report_answer",
    "report_no_answer",
    "wait_as_told",
]

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
    logger.debug("%s answered %s: %s", "create" if create else "poll", error, verdict.value)
    return verdict


def classify_no_answer(error: SendError, *, create: bool) -> Verdict:
    """What to do when no answer came: retry, unless a create may have arrived."""
    verdict = Verdict.UNCERTAIN if create and error.maybe_received else Verdict.RETRY
    logger.debug("%s got no answer (%s): %s", "create" if create else "poll", error, verdict.value)
    return verdict


def classify_unreadable(*, create: bool) -> Verdict:
    """What to do about an answer that cannot be understood.

    A create's run may exist though its id could not be read: uncertain. A
    poll is retried (the scheduler caps how often).
    """
    verdict = Verdict.UNCERTAIN if create else Verdict.RETRY
    logger.debug("unreadable answer to a %s: %s", "create" if create else "poll", verdict.value)
    return verdict


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


def report_no_answer(*, limiter: Limiter, stats: SessionStats) -> None:
    """Tell the limiter and the stats that a request got no answer: back off."""
    stats.connection_errors += 1
    limiter.on_server_trouble()
