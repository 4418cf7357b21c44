"""What every framework integration shares: one session per app, closed with a deadline."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from typing import Any, Unpack

from .._config import SessionConfig, SessionOptions
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
from .._run import Run
from .._session import ProviderName, Session

__all__ = [
    "DEFAULT_RECENT_RUNS",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "RecentRuns",
    "RunTokens",
    "SessionOptions",
    "app_config",
    "app_session",
    "http_status",
    "run_payload",
]

#: Seconds an app's shutdown waits for runs in flight before closing the session
#: under them. Short enough for a rolling deploy (Kubernetes allows 30 s in all).
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
#: Finished runs a ``RecentRuns`` remembers by default: ~1 kB each.
DEFAULT_RECENT_RUNS = 10_000


def app_config(
    provider: ProviderName | str | SessionConfig,
    shutdown_timeout: float | None,
    options: SessionOptions,
) -> SessionConfig:
    """The app's ``SessionConfig``, checked when the app is built (not when it starts).

    ``provider`` is a provider's name with ``options``, or a ``SessionConfig``
    built beforehand (then without ``options``). ``on_exit`` is refused: an
    app's shutdown waits ``shutdown_timeout`` seconds for runs in flight
    instead. The API key is read from the environment when the app starts.
    Raises ``ConfigurationError``.
    """
    if "on_exit" in options:
        raise ConfigurationError("an app's session takes shutdown_timeout=..., not on_exit")
    if shutdown_timeout is not None and (
        isinstance(shutdown_timeout, bool)
        or not isinstance(shutdown_timeout, int | float)
        or shutdown_timeout < 0
    ):
        raise ConfigurationError("shutdown_timeout must be a number of seconds >= 0, or None")
    if not isinstance(provider, SessionConfig):
        return SessionConfig(provider, **options)
    if options:
        raise ConfigurationError(
            f"give the options in the SessionConfig, not beside it: {', '.join(sorted(options))}"
        )
    if provider.on_exit != "wait":
        raise ConfigurationError("an app's session takes shutdown_timeout=..., not on_exit")
    return provider


@contextlib.asynccontextmanager
async def app_session(
    provider: ProviderName | str | SessionConfig = "runbase",
    *,
    shutdown_timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
    **options: Unpack[SessionOptions],
) -> AsyncIterator[Session]:
    """Open the one ``Session`` of an application; framework hooks wrap this.

    ``provider`` and ``options`` as for ``app_config`` (a ``SessionConfig``
    already checked is used as it is).

    Leaving normally waits up to ``shutdown_timeout`` seconds (``None``: as long
    as the runs take) for runs in flight, then closes the session: runs still
    unresolved end with ``SessionClosedError`` carrying their id (the session
    names them in a WARNING), so a later process can ``attach`` to them.
    Leaving through an exception closes at once.
    """
    session = Session.from_config(app_config(provider, shutdown_timeout, options))
    await session.open()
    try:
        yield session
    except BaseException:
        await session.aclose(cancel=True)
        raise
    await _close(session, shutdown_timeout)


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
    finally:
        # Names the runs left in one WARNING, for the next process to attach().
        await session.aclose(cancel=True)


async def _settled(run: Run) -> None:
    with contextlib.suppress(GPTImageError):
        await run


class RunTokens:
    """Run ids an app hands out, signed so that only its own can be looked up.

    ``issue(run_id)`` gives ``"<run id>.<signature>"``: an HMAC-SHA256 of the
    id with the app's ``secret``, so a client cannot make up an id that the
    app would then poll (and spend the key's budget on). ``verify(token)``
    gives the run id back, or ``None`` for anything this app did not issue.

    ``secret``: ``str | bytes | None``; ``None`` (default) draws a random
    one, so tokens are valid while the process lives. Give every process of
    the app the same secret (at least 16 bytes, from the environment, never
    from code) and the tokens stay valid across restarts and workers.
    Raises ``ConfigurationError`` for a short secret.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: str | bytes | None = None) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ConfigurationError("the tokens' secret must be str or bytes of 16 bytes or more")
        self._secret = secret

    def issue(self, run_id: str) -> str:
        """The token to hand out for ``run_id``."""
        return f"{run_id}.{self._sign(run_id)}"

    def verify(self, token: str) -> str | None:
        """The run id ``token`` was issued for, or ``None`` if this app did not issue it."""
        run_id, dot, signature = token.rpartition(".")
        if not dot or not run_id or not hmac.compare_digest(signature, self._sign(run_id)):
            return None
        return run_id

    def _sign(self, run_id: str) -> str:
        digest = hmac.new(self._secret, b"gptimage-run:" + run_id.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:16]).decode().rstrip("=")

    def __repr__(self) -> str:
        return "<RunTokens>"  # never the secret


class RecentRuns:
    """The runs an app created and handed out ids for, remembered after they finish.

    A session forgets a run once it is resolved. An app that answers "how is
    run X doing?" keeps its ``Run`` handles here: the newest ``maxlen`` of them,
    whose ``status``, ``outcome`` and ``error`` stay readable after the fact.
    ``find`` answers only for the app's own runs: an id it did not hand out is
    ``None`` (answer 404), and costs no request to the provider.

    ``tokens``: ``RunTokens | None``. With it, ``add`` hands out signed ids
    (``RunTokens.issue``), and ``find(..., attach=True)`` can attach a run
    the app handed out before a restart; without it, ids are the provider's
    own and only runs this process created are found.

    >>> recent = RecentRuns(tokens=RunTokens(os.environ["APP_SECRET"]))  # doctest: +SKIP
    >>> run_id = recent.add(await session.submit("a lamp"))            # doctest: +SKIP
    >>> recent.find(session, run_id)                                     # doctest: +SKIP
    <Run run_... runbase pending polls=0>
    """

    __slots__ = ("_runs", "maxlen", "tokens")

    def __init__(
        self, maxlen: int = DEFAULT_RECENT_RUNS, *, tokens: RunTokens | None = None
    ) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ConfigurationError("maxlen must be a positive int")
        if tokens is not None and not isinstance(tokens, RunTokens):
            raise ConfigurationError("tokens must be a RunTokens or None")
        self.maxlen = maxlen
        self.tokens = tokens
        self._runs: collections.OrderedDict[str, Run] = collections.OrderedDict()

    def add(self, run: Run) -> str:
        """Remember ``run`` (it must have an id) and return the id to hand out for it.

        The oldest run is forgotten past ``maxlen``. The id is ``run.id``, or
        its token with ``tokens``.
        """
        if run.run_id is None:
            raise ConfigurationError("only a created run (with an id) can be looked up later")
        self._runs[run.run_id] = run
        self._runs.move_to_end(run.run_id)
        while len(self._runs) > self.maxlen:
            self._runs.popitem(last=False)
        return run.run_id if self.tokens is None else self.tokens.issue(run.run_id)

    def get(self, run_id: str) -> Run | None:
        """The remembered run with this provider id, if any."""
        return self._runs.get(run_id)

    def find(self, session: Session, run_id: str, *, attach: bool = False) -> Run | None:
        """The app's run with this id (as ``add`` handed it out), or ``None``.

        Looks among the runs remembered here, then among ``session``'s runs
        (those it created or attached, in flight). ``None`` for any other id:
        a client's made-up id is never sent to the provider. With
        ``attach=True`` and ``tokens``, a run the app handed out before a
        restart (a valid token) is attached to ``session`` and remembered:
        ``pending`` until the first poll answers, ``RunNotFoundError`` if the
        provider does not know it. ``attach=True`` without ``tokens`` raises
        ``ConfigurationError``: an unsigned id could be anyone's.
        """
        if attach and self.tokens is None:
            raise ConfigurationError(
                "find(attach=True) needs RecentRuns(tokens=RunTokens(secret)): only ids "
                "this app signed may be attached, or any client could spend the key"
            )
        if not isinstance(run_id, str):
            return None
        own = run_id if self.tokens is None else self.tokens.verify(run_id)
        if own is None:
            return None
        run = self._runs.get(own) or session.runs.get(own)
        if run is None and attach:
            run = session.attach(own)
            self.add(run)
        return run

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def __repr__(self) -> str:
        return f"<RecentRuns {len(self._runs)}/{self.maxlen}>"


def run_payload(run: Run, *, run_id: str | None = None) -> dict[str, Any]:
    """A run as a JSON-ready dict for an API's clients: id, status, and URLs or the error.

    ``run_id``: the id the app handed out (a ``RunTokens`` token, say);
    default ``None``: the provider's. Never the request's details, never a key.
    """
    payload: dict[str, Any] = {"run_id": run_id or run.id, "status": run.status.value}
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
