"""What every framework integration shares: one session per app, closed with a deadline."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack, overload

from .._exceptions import (
    BadRequestError,
    ConfigurationError,
    GPTImageError,
    InvalidRequestError,
    RateLimitError,
    RunNotFoundError,
    RunTimeoutError,
    SessionClosedError,
)
from .._models import RateLimit
from .._run import Run
from .._session import ProviderName, Session
from .._transport import Transport

if TYPE_CHECKING:
    from redis.asyncio import Redis
else:  # get_type_hints() must work without the optional redis package
    Redis = Any

__all__ = [
    "DEFAULT_RECENT_RUNS",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "RecentRuns",
    "SessionOptions",
    "app_session",
    "check_options",
    "http_status",
    "run_payload",
]

logger = logging.getLogger("gptimage_async")

#: Seconds an app's shutdown waits for runs in flight before closing the session
#: under them. Short enough for a rolling deploy (Kubernetes allows 30 s in all).
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
#: Finished runs a ``RecentRuns`` remembers by default: ~1 kB each.
DEFAULT_RECENT_RUNS = 10_000


class SessionOptions(TypedDict, total=False):
    """The ``Session`` keywords an app's session accepts (see ``Session``).

    ``on_exit`` is not among them: an app's shutdown waits ``shutdown_timeout``
    seconds for runs in flight instead, then closes the session under the rest.
    ``redis`` shares the key's budget between the app's worker processes
    (``uvicorn --workers 4``, several pods): every worker names the same Redis.
    """

    api_key: str | None
    base_url: str | None
    rate_limit: RateLimit | None
    request_timeout: float
    run_timeout: float
    resend_uncertain_creates: bool
    max_create_attempts: int
    max_connections: int
    user_agent: str | None
    proxy: str | None
    redis: str | Redis | None
    state_file: str | os.PathLike[str] | None
    remember: bool
    transport: Transport | None


@contextlib.asynccontextmanager
async def app_session(
    provider: ProviderName | str = "runbase",
    *,
    shutdown_timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
    **options: Unpack[SessionOptions],
) -> AsyncIterator[Session]:
    """Open the one ``Session`` of an application; framework hooks wrap this.

    Leaving normally waits up to ``shutdown_timeout`` seconds (``None``: as long
    as the runs take) for runs in flight, then closes the session: runs still
    unresolved end with ``SessionClosedError`` carrying their id, so a later
    process can ``attach`` to them. Leaving through an exception closes at once.
    """
    check_options(shutdown_timeout, options)
    session = Session(provider, **options)
    await session.open()
    try:
        yield session
    except BaseException:
        await session.aclose(cancel=True)
        raise
    await _close(session, shutdown_timeout)


def check_options(shutdown_timeout: float | None, options: SessionOptions) -> None:
    """Refuse what ``app_session`` would refuse, early: when the app is built."""
    if "on_exit" in options:
        raise ConfigurationError("an app's session takes shutdown_timeout=..., not on_exit")
    if shutdown_timeout is not None and (
        isinstance(shutdown_timeout, bool)
        or not isinstance(shutdown_timeout, int | float)
        or shutdown_timeout < 0
    ):
        raise ConfigurationError("shutdown_timeout must be a number of seconds >= 0, or None")


async def _close(session: Session, grace: float | None) -> None:
    if grace is None:
        await session.aclose()
        return
    try:
        runs = list(session.runs)
        if runs and grace > 0:
            waiters = [asyncio.ensure_future(_settled(run)) for run in runs]
            try:
                await asyncio.wait(waiters, timeout=grace)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        left = [run.run_id for run in session.runs]
        if left:
            logger.warning(
                "shutting down with %d run(s) still in flight; they may still finish, "
                "attach() them from the next process: %s",
                len(left),
                ", ".join(str(run_id) for run_id in left[:20]) + (" ..." if len(left) > 20 else ""),
            )
    finally:
        await session.aclose(cancel=True)


async def _settled(run: Run) -> None:
    with contextlib.suppress(GPTImageError):
        await run


class RecentRuns:
    """The runs an app handed out ids for, remembered after they finish.

    A session forgets a run once it is resolved. An app that answers "how is
    run X doing?" keeps its ``Run`` handles here: the newest ``maxlen`` of them,
    whose ``status``, ``outcome`` and ``error`` stay readable after the fact.

    >>> recent = RecentRuns()
    >>> run = await session.submit("a lamp")        # doctest: +SKIP
    >>> recent.add(run)                             # doctest: +SKIP
    >>> recent.find(session, run.id)                # doctest: +SKIP
    <Run run_... runbase pending polls=0>
    """

    __slots__ = ("_runs", "maxlen")

    def __init__(self, maxlen: int = DEFAULT_RECENT_RUNS) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ConfigurationError("maxlen must be a positive int")
        self.maxlen = maxlen
        self._runs: collections.OrderedDict[str, Run] = collections.OrderedDict()

    def add(self, run: Run) -> None:
        """Remember ``run`` (it must have an id); the oldest one is forgotten past ``maxlen``."""
        if run.run_id is None:
            raise ConfigurationError("only a created run (with an id) can be looked up later")
        self._runs[run.run_id] = run
        self._runs.move_to_end(run.run_id)
        while len(self._runs) > self.maxlen:
            self._runs.popitem(last=False)

    def get(self, run_id: str) -> Run | None:
        """The remembered run with this id, if any."""
        return self._runs.get(run_id)

    @overload
    def find(self, session: Session, run_id: str, *, attach: Literal[True]) -> Run: ...

    @overload
    def find(self, session: Session, run_id: str, *, attach: bool = False) -> Run | None: ...

    def find(self, session: Session, run_id: str, *, attach: bool = False) -> Run | None:
        """The run with this id: remembered here, or in flight in ``session``.

        With ``attach=True`` an id known to neither, say one handed out before
        a restart, is attached to ``session`` (and remembered): its status is
        ``pending`` until the first poll answers, and an id the provider does
        not know ends with ``RunNotFoundError``. Each attach costs polls, so
        attach only ids your app could have handed out.
        """
        run = self._runs.get(run_id) or session.runs.get(run_id)
        if run is None and attach:
            run = session.attach(run_id)
            self.add(run)
        return run

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def __repr__(self) -> str:
        return f"<RecentRuns {len(self._runs)}/{self.maxlen}>"


def run_payload(run: Run) -> dict[str, Any]:
    """A run as a JSON-ready dict for an API's clients: id, status, and URLs or the error.

    Never the request's details, never a key.
    """
    payload: dict[str, Any] = {"run_id": run.id, "status": run.status.value}
    if run.outcome is not None:
        payload["urls"] = run.outcome.urls
    elif run.error is not None:
        payload["error"] = type(run.error).__name__
        payload["detail"] = str(run.error)
    return payload


def http_status(error: GPTImageError) -> int:
    """The HTTP status a web service should answer for a library error.

    422 for bad input, 404 for an unknown run, 503 when rate-limited or shutting
    down, 504 for a run that timed out, 502 for anything the provider failed.
    """
    if isinstance(error, InvalidRequestError | BadRequestError):
        return 422
    if isinstance(error, RunNotFoundError):
        return 404
    if isinstance(error, RateLimitError | SessionClosedError):
        return 503  # quota gone or shutting down: try again later (or elsewhere)
    if isinstance(error, RunTimeoutError):
        return 504
    return 502  # the provider failed us: its error, its run failure, a doubtful create
