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
        "_lane",
        "_polls",
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
        #: Event-loop time (``loop.time()``, seconds; not wall-clock time) the create
        #: was sent, or the run attached; its age is measured from it. Compare it with
        #: ``asyncio.get_running_loop().time()``, never with ``time.time()``.
        self.created_at = created_at
        #: Event-loop time (seconds, as ``created_at``) by which the run must be
        #: resolved: ``created_at`` plus the session's ``run_timeout``.
        self.deadline = deadline
        # Status requests sent so far: written by the poll scheduler only, whose
        # other bookkeeping for the run it keeps itself, keyed by run id.
        self._polls = 0
        # The lane (provider and key fingerprint) that created or attached it: set
        # when a lane starts tracking it, never changed after (a run keeps its lane).
        self._lane: str | None = None
        self._future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

    @property
    def polls(self) -> int:
        """Status requests sent for this run so far (read-only)."""
        return self._polls

    @property
    def lane(self) -> str | None:
        """The lane the run lives on, ``"provider:fingerprint"`` (``Lane.fingerprint``:
        12 hex digits of a keyed hash of the API key, never the key); ``None``
        until a lane tracks it.

        A run is polled, attached and resumed through its lane for life.
        """
        return self._lane

    @property
    def id(self) -> str | None:
        """The provider's run id; ``None`` only if the create itself failed.

        The same value as ``run_id`` (the name ``Result`` and every error use):
        two names for one thing, both kept.
        """
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
        """The ``Result`` if the run succeeded, else ``None`` (failed, or still in flight).

        Its error, if it failed, is ``error``.
        """
        if not self._future.done() or self._future.cancelled() or self._future.exception():
            return None
        return self._future.result()

    def _result_or_error(self) -> Result | GPTImageError:
        """The result or the error of a resolved run (``outcome`` is the result only)."""
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
