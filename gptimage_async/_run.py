"""A handle on one run: awaitable, and resolved exactly once."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Generator
from typing import Any

import anyio

from ._exceptions import ConfigurationError, GPTImageError
from ._models import ImageRequest, Result, RunStatus

__all__ = ["Run"]


class _PollState:
    """The scheduler's bookkeeping for one run. Strictly private: only ``_scheduler`` writes it."""

    __slots__ = ("errors", "last_pending_age", "next_poll", "not_before", "polls", "status_word")

    def __init__(self) -> None:
        #: Polls sent for the run.
        self.polls = 0
        #: Age (seconds since the create was sent) of the last poll that found it not done.
        self.last_pending_age = 0.0
        #: Consecutive failed polls (transient errors).
        self.errors = 0
        #: Clock time the scheduler means to poll next; stale heap entries are skipped.
        self.next_poll = 0.0
        #: Clock time before which no poll may go, not even a speculative one (a Retry-After).
        self.not_before = 0.0
        #: The provider's own word for the status last seen (a timeout names it).
        self.status_word: str | None = None

    def __repr__(self) -> str:
        return (
            f"<_PollState polls={self.polls} errors={self.errors} "
            f"last_pending_age={self.last_pending_age:.3f} next_poll={self.next_poll:.3f}>"
        )


class Run:
    """One run on a provider, tracked by its session until it is resolved.

    Await it for its ``Result``; a run that fails raises its typed error
    instead. Awaiting never disturbs the run: cancelling the awaiting task
    leaves the run tracked and the session untouched.

    >>> run = await session.submit("a ceramic lamp")   # doctest: +SKIP
    >>> result = await run                              # doctest: +SKIP
    """

    __slots__ = (
        "_future",
        "_poll",
        "created_at",
        "deadline",
        "index",
        "provider",
        "request",
        "run_id",
        "status",
    )

    def __init__(
        self,
        run_id: str | None,
        provider: str,
        request: ImageRequest | None,
        *,
        created_at: float,
        deadline: float,
        status: RunStatus = RunStatus.PENDING,
        index: int | None = None,
    ) -> None:
        self.run_id = run_id
        self.provider = provider
        self.request = request
        self.status = status
        #: Position in the input of ``generate_many`` / ``as_completed``.
        self.index = index
        #: Session clock time (seconds) the create was sent; the run's age is measured from it.
        self.created_at = created_at
        #: Session clock time (seconds) by which the run must be resolved: ``created_at``
        #: plus the session's ``run_timeout``.
        self.deadline = deadline
        self._poll = _PollState()
        self._future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

    @property
    def polls(self) -> int:
        """Status requests sent for this run so far (read-only)."""
        return self._poll.polls

    @property
    def id(self) -> str | None:
        """The provider's run id; ``None`` only if the create itself failed."""
        return self.run_id

    def done(self) -> bool:
        """True once the run is resolved (result or error)."""
        return self._future.done()

    @property
    def error(self) -> BaseException | None:
        """The error the run was resolved with, if any (``None`` while in flight)."""
        if not self._future.done() or self._future.cancelled():
            return None
        return self._future.exception()

    @property
    def outcome(self) -> Result | None:
        """The result if the run succeeded, else ``None``."""
        if not self._future.done() or self._future.cancelled() or self._future.exception():
            return None
        return self._future.result()

    def _outcome(self) -> Result | GPTImageError:
        """The result or the error of a resolved run."""
        error = self._future.exception()
        if error is None:
            return self._future.result()
        assert isinstance(error, GPTImageError)
        return error

    async def result(self, timeout: float | None = None) -> Result:  # noqa: ASYNC109
        """Wait for the run's result.

        ``timeout`` bounds this wait only (the built-in ``TimeoutError`` is
        raised and the run carries on); the session's ``run_timeout`` bounds
        the run itself. ``timeout`` is ``None`` (wait as long as it takes) or
        seconds, a finite number >= 0; anything else raises
        ``ConfigurationError``.
        """
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 <= timeout < math.inf
        ):
            raise ConfigurationError(
                f"timeout must be None or seconds (a finite number >= 0), not {timeout!r}"
            )
        if self._future.done():
            return self._future.result()
        with anyio.move_on_after(timeout):
            return await asyncio.shield(self._future)
        # The bare TimeoutError of fail_after says nothing; name the wait and the run.
        raise TimeoutError(
            f"run {self.id or '(not created yet)'} did not resolve within {timeout} s "
            "(this wait only: the run carries on; await it again to keep waiting)"
        )

    def __await__(self) -> Generator[Any, None, Result]:
        return self.result().__await__()

    # -- resolution (called by the session and scheduler only) ---------------

    def _resolve(self, result: Result) -> bool:
        if self._future.done():
            return False
        self.status = RunStatus.SUCCEEDED
        self._future.set_result(result)
        return True

    def _fail(self, error: GPTImageError, status: RunStatus) -> bool:
        if self._future.done():
            return False
        self.status = status
        if error.run_id is None:
            error.run_id = self.run_id
        self._future.set_exception(error)
        # Nobody may ever await this run; that is the caller's choice, not a bug to log.
        self._future.exception()
        return True

    def __repr__(self) -> str:
        return (
            f"<Run {self.run_id or '(not created)'} {self.provider} {self.status.value} "
            f"polls={self.polls}>"
        )
