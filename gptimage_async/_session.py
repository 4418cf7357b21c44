"""The session: one provider, one key, one limiter, one poll scheduler.

``Session`` holds the configuration, the lifecycle (open, close, cancel) and
the public verbs (``submit``, ``generate``, ``attach``, ``generate_many``,
``as_completed``). How a run travels, one module per step:

1. validated: ``_models`` (``as_request``), then the provider's own limits
   (``_providers``);
2. encoded by its provider adapter: ``_providers`` (one module per provider);
3. sent through the rate limiter: ``_create`` (the create pipeline) waits in
   ``_limiter`` and sends with ``_transport``;
4. its answer read and its errors sorted: ``_classify`` (retry / wait as told
   / fail / uncertain), with every delay and cap in ``_retry``;
5. recorded in the registry: ``_registry``;
6. polled by the scheduler: ``_scheduler``, which reads answers through
   ``_classify`` too;
7. resolved: ``_run`` (the user's handle).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, overload
from urllib.parse import urlsplit

from ._budget import AdaptiveRate, Limiter, check_redis_option, make_limiter
from ._create import Creator
from ._exceptions import (
    ConfigurationError,
    GPTImageError,
    InvalidRequestError,
    SessionClosedError,
)
from ._feed import Countdown
from ._models import AspectRatio, ImageRequest, Quality, RateLimit, Result, RunStatus, as_request
from ._providers import Provider, ProviderName, get_provider
from ._registry import RunRegistry
from ._run import Run
from ._scheduler import PollScheduler
from ._state import FileStateStore, RedisStateStore, StateStore, apply_state, capture_state
from ._stats import SessionStats
from ._transport import Secret, Transport, check_proxy
from ._version import USER_AGENT

if TYPE_CHECKING:
    from redis.asyncio import Redis
else:  # get_type_hints() must work without the optional redis package
    Redis = Any

__all__ = ["LimiterView", "OnExit", "ProviderName", "SchedulerView", "Session"]

logger = logging.getLogger("gptimage_async")

OnExit = Literal["wait", "cancel"]

#: Defaults, in seconds unless named otherwise.
DEFAULT_REQUEST_TIMEOUT = 60.0
DEFAULT_RUN_TIMEOUT = 900.0
DEFAULT_MAX_CREATE_ATTEMPTS = 6
DEFAULT_MAX_CONNECTIONS = 100
#: Workers that feed creates for ``as_completed`` / ``generate_many``: enough to
#: keep the limiter busy when each create takes a round trip.
FEEDERS = 32
#: ``as_completed`` / ``generate_many`` without ``concurrency`` start at most this
#: many times the runs the key's budget keeps in flight ahead of their consumer.
WINDOW_FACTOR = 2.0
#: A bulk job's last creates go ahead of polls for the rate times this
#: quantile of the run duration (``Session.tail_size``).
TAIL_QUANTILE = 0.99
TAIL_FACTOR = 2.0

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


_MISSING: Any = object()


class LimiterView:
    """A read-only view of a session's rate limiter (``session.limiter``).

    ``rate`` is the limiter's current belief about the key's limit, in
    requests per second (it learns from 429s and from saturated windows);
    ``interval`` the seconds between two requests at the current pace;
    ``per`` the window of the belief, in seconds; ``waiting`` the requests
    queued for a slot. Values are read live, each time.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter

    @property
    def rate(self) -> float:
        """The believed limit, in requests per second."""
        return self._limiter.rate

    @property
    def interval(self) -> float:
        """Seconds between two requests at the current pace."""
        return self._limiter.interval

    @property
    def per(self) -> float:
        """The window of the belief, in seconds."""
        return self._limiter.window

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return self._limiter.waiting

    def __repr__(self) -> str:
        return repr(self._limiter)


class SchedulerView:
    """A read-only view of a session's poll scheduler (``session.scheduler``).

    ``len(view)`` and ``in_flight`` are the runs being polled; the repr shows
    what the scheduler has learned of run durations.
    """

    __slots__ = ("_scheduler",)

    def __init__(self, scheduler: PollScheduler) -> None:
        self._scheduler = scheduler

    @property
    def in_flight(self) -> int:
        """Runs being polled."""
        return len(self._scheduler)

    def __len__(self) -> int:
        return len(self._scheduler)

    def __repr__(self) -> str:
        return repr(self._scheduler)


class Session:
    """An open line to one provider: submits runs and resolves them.

    >>> async with Session("runbase") as session:            # doctest: +SKIP
    ...     result = await session.generate("a ceramic lamp", quality="high")
    ...     print(result.urls)

    Parameters (all keyword-only but ``provider``):

    * ``provider``: ``ProviderName``, ``"runbase"`` (default) or ``"apiinone"``.
    * ``api_key``: ``str | None``, default ``None``: read from
      ``RUNBASE_API_KEY`` / ``APIINONE_API_KEY``. Never logged or shown in a
      repr or an error.
    * ``base_url``: ``str | None``, the API root including ``/api/v1``;
      default ``None``: the provider's (``https://runbase.net/api/v1``,
      ``https://apiin.one/api/v1``). Plain ``http://`` is accepted only for
      loopback hosts (the simulator).
    * ``rate_limit``: ``RateLimit | None``, the starting belief about the key's
      limit; default ``None``: the provider's (Runbase 20 requests per 10 s,
      API in One 10 per 10 s; creates and polls together). The limiter
      learns from there.
    * ``request_timeout``: seconds one HTTP request may take, connect to last
      byte; default ``DEFAULT_REQUEST_TIMEOUT`` (60 s).
    * ``run_timeout``: seconds from a run's create to its resolution; past it
      the run ends with ``RunTimeoutError`` (it may still finish: ``attach``
      it). Default ``DEFAULT_RUN_TIMEOUT`` (900 s).
    * ``on_exit``: ``OnExit``, what leaving the ``async with`` block normally
      does with runs in flight: ``"wait"`` (default) for them, or ``"cancel"``
      them (they end with ``SessionClosedError``). Leaving through an
      exception always cancels.
    * ``resend_uncertain_creates``: ``bool``, default ``False``. ``True``
      resends a create whose fate is unknown (a lost connection, a 5xx after
      the request was written), accepting the risk of paying twice; ``False``
      raises ``UncertainCreateError`` instead.
    * ``max_create_attempts``: ``int`` >= 1, attempts per create for errors
      that certainly created nothing (connection refused, 503, 408), the first
      included. Waits as told do not count (a 429, or a ``Retry-After`` on a
      503, 502, 504 or 408, per RFC 9110): ``run_timeout`` bounds those. Default
      ``DEFAULT_MAX_CREATE_ATTEMPTS`` (6).
    * ``max_connections``: ``int`` >= 1, open connections to the provider, and
      so polls on the wire at once; default ``DEFAULT_MAX_CONNECTIONS`` (100).
    * ``user_agent``: ``str | None``, the ``User-Agent`` header; default
      ``None``: ``gptimage-async/<version>``.
    * ``proxy``: ``str | None``, an ``http://`` or ``https://`` proxy URL every
      request goes through; default ``None``: ``HTTPS_PROXY`` / ``HTTP_PROXY``
      (by the base URL's scheme), ``ALL_PROXY`` and ``NO_PROXY`` are honoured
      as requests and httpx do, read when the session opens. Credentials in
      it are never shown.
    * ``redis``: ``str | redis.asyncio.Redis | None``, default ``None``: a
      ``redis://`` / ``rediss://`` URL or a client; every session, in any
      process, naming the same Redis, provider and key then shares the key's
      budget (one GCRA schedule kept in Redis; see the README's "Several
      processes, one key"). Needs the extra ``gptimage-async[redis]``;
      without it, ``ConfigurationError`` names the extra. ``None``: the
      budget is this process's alone and Redis is never imported.
      With ``redis``, what the session learned (recent run durations) is
      also kept in that Redis, loaded when it opens and saved when it closes,
      so every process on the key and the next job start warm: one key per
      provider, API key and base URL, named by keyed hashes (never the key or
      URL), kept 7 days after the last save. Processes closing one after the
      other: the last to save wins (one that could not read Redis at open
      saves only where it holds nothing). Redis not answering at open or
      close costs at most two Redis timeouts (0.25 s each) and a warning,
      never an error.
    * ``state_file``: ``str | os.PathLike[str] | None``, default ``None``: a
      path where the session keeps what it learned (the rate belief, the last
      window's requests and recent run durations), loaded when it opens and
      saved when it closes, so the next batch starts warm. A missing, stale
      (over 7 days) or corrupt file is ignored with a DEBUG line. ``None``
      keeps nothing. With ``redis`` too, Redis is the shared truth and the
      file its fallback: the state is loaded from the file only when Redis
      does not answer or holds none, and saved to both. The shared budget is
      Redis's either way: only run durations are taken from the file.
    * ``remember``: ``bool``, default ``True``. ``False``: nothing learned is
      loaded or saved, neither in Redis nor in ``state_file``.

    Raises ``ConfigurationError`` (a ``ValueError``) for any bad argument,
    before anything is opened.

    Open one session per process and share it: its limiter and poller then
    see all the traffic for the key. Its background work is owned by the
    session itself, so a framework may open and close it from different tasks.
    A session opens once: ``open()`` after ``aclose()`` raises
    ``SessionClosedError``.
    """

    def __init__(
        self,
        provider: ProviderName | str = "runbase",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        rate_limit: RateLimit | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
        on_exit: OnExit = "wait",
        resend_uncertain_creates: bool = False,
        max_create_attempts: int = DEFAULT_MAX_CREATE_ATTEMPTS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        user_agent: str | None = None,
        proxy: str | None = None,
        redis: str | Redis | None = None,
        state_file: str | os.PathLike[str] | None = None,
        remember: bool = True,
    ) -> None:
        self._provider: Provider = get_provider(provider)
        self._api_key = Secret(_resolve_key(self._provider, api_key))
        self._base_url = _check_base_url(base_url or self._provider.default_base_url)
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError("rate_limit must be a gptimage_async.RateLimit or None")
        self._belief = rate_limit or self._provider.default_rate_limit
        _check_positive("request_timeout", request_timeout)
        _check_positive("run_timeout", run_timeout)
        if on_exit not in ("wait", "cancel"):
            raise ConfigurationError(f"on_exit must be 'wait' or 'cancel', not {on_exit!r}")
        for name, count in (
            ("max_create_attempts", max_create_attempts),
            ("max_connections", max_connections),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigurationError(f"{name} must be a positive int")
        if not isinstance(resend_uncertain_creates, bool):
            raise ConfigurationError("resend_uncertain_creates must be True or False")
        if user_agent is not None and (
            not isinstance(user_agent, str)
            or not user_agent.strip()
            or any(ord(c) < 32 or ord(c) == 127 for c in user_agent)
        ):
            # aiohttp would refuse it on the first request, with a plain ValueError.
            raise ConfigurationError(
                "user_agent must be a non-empty str without control characters"
            )
        self._request_timeout = float(request_timeout)
        self._run_timeout = float(run_timeout)
        self._on_exit: OnExit = on_exit
        self._resend = bool(resend_uncertain_creates)
        self._max_attempts = max_create_attempts
        self._max_connections = max_connections
        self._user_agent = user_agent or USER_AGENT
        check_redis_option(redis)
        self._redis = redis
        if not isinstance(remember, bool):
            raise ConfigurationError("remember must be True or False")
        self._remember_state = remember
        # Where learned state lives between sessions: a file here; with redis,
        # open() puts the shared store in front of it (the file is its fallback).
        self._memory: StateStore | None = (
            FileStateStore(state_file) if state_file is not None and remember else None
        )
        self._proxy = None if proxy is None else check_proxy(proxy)
        # Replaced by the running loop's clock in open(): the limiter and the
        # scheduler read and wake on it, and run times must compare with theirs.
        self._clock: Callable[[], float] = time.monotonic
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self.runs = RunRegistry()
        self.stats = SessionStats()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None
        self._transport: Transport | None = None
        self._limiter: Limiter | None = None
        self._scheduler: PollScheduler | None = None
        self._creator: Creator | None = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def provider(self) -> str:
        """The provider's name: ``"runbase"`` or ``"apiinone"``."""
        return self._provider.name

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self._base_url

    @property
    def limiter(self) -> LimiterView:
        """A read-only view of the session's rate limiter, for monitoring.

        Raises ``SessionClosedError`` before ``open()``.
        """
        if self._limiter is None:
            raise SessionClosedError("the session is not open")
        return LimiterView(self._limiter)

    @property
    def scheduler(self) -> SchedulerView:
        """A read-only view of the session's poll scheduler, for monitoring.

        Raises ``SessionClosedError`` before ``open()``.
        """
        if self._scheduler is None:
            raise SessionClosedError("the session is not open")
        return SchedulerView(self._scheduler)

    @property
    def closed(self) -> bool:
        """True once the session has been closed; it cannot be reopened."""
        return self._state in ("closing", "closed")

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose(cancel=exc_type is not None or self._on_exit == "cancel")

    async def open(self) -> None:
        """Open the session (``async with`` does this)."""
        if self._state != "new":
            raise SessionClosedError(
                "this session was already opened; a closed session cannot be reused, "
                "create a new Session"
            )
        self._state = "open"
        self._clock = asyncio.get_running_loop().time
        self._idle = asyncio.Event()
        self._idle.set()
        self._transport = Transport(
            self._base_url,
            self._api_key.reveal(),
            timeout=self._request_timeout,
            max_connections=self._max_connections,
            user_agent=self._user_agent,
            proxy=self._proxy,
        )
        try:
            self._limiter = make_limiter(
                self._belief,
                provider=self._provider.name,
                api_key=self._api_key.reveal(),
                redis=self._redis,
            )
            await self._limiter.start()
            shared = self._limiter.shared
            if self._remember_state and shared is not None:
                self._memory = RedisStateStore(
                    shared.client,
                    budget=shared.budget,
                    timeout=shared.timeout,
                    fallback=self._memory,
                )
            self._scheduler = PollScheduler(
                provider=self._provider,
                transport=self._transport,
                limiter=self._limiter,
                stats=self.stats,
                spawn=self._spawn,
                on_resolved=self._resolved,
                lookup=self.runs.get,
                max_polls_in_flight=self._max_connections,
            )
            if self._memory is not None:
                learned = await self._memory.load(self._provider.name, self._base_url)
                if learned is not None:
                    apply_state(
                        learned,
                        belief=self._belief,
                        adaptive=_adaptive(self._limiter),
                        model=self._scheduler.model,
                        clock_now=self._clock(),
                        run_timeout=self._run_timeout,
                    )
                    logger.debug("session starts from what was learned: %r", self._scheduler.model)
            self._creator = Creator(
                provider=self._provider,
                transport=self._transport,
                limiter=self._limiter,
                scheduler=self._scheduler,
                registry=self.runs,
                stats=self.stats,
                clock=self._clock,
                run_timeout=self._run_timeout,
                max_attempts=self._max_attempts,
                resend_uncertain=self._resend,
                check_open=self._check_open,
                on_busy=self._busy,
                on_settled=self._maybe_idle,
            )
            self._spawn(self._scheduler.run_forever)
        except BaseException:
            # Half open (say Redis refused its URL): release what was opened, then say why.
            await self._shutdown()
            raise
        logger.debug("session opened: %s at %s", self._provider.name, self._base_url)

    async def aclose(self, *, cancel: bool = False) -> None:
        """Close the session: wait for runs in flight (or cancel them), then release everything.

        Cancelled runs end with ``SessionClosedError`` carrying their run id,
        so a later session can ``attach`` to them. Closing twice is harmless.
        """
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        try:
            if not cancel:
                assert self._idle is not None
                await self._idle.wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        # Creates already sent are let finish, so their runs get an id to report.
        if self._creator is not None and self._creator.in_flight:
            await asyncio.gather(*self._creator.in_flight, return_exceptions=True)
        for run in self.runs:
            run._fail(
                SessionClosedError(
                    f"the session was closed before run {run.run_id} was resolved; "
                    "it may still finish: attach() it from another session",
                    run_id=run.run_id,
                ),
                RunStatus.ERRORED,
            )
            self.runs.discard(run)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._remember()
        if self._limiter is not None:
            await self._limiter.aclose()
        if self._transport is not None:
            await self._transport.aclose()
        self._state = "closed"
        logger.debug("session closed: %s", self.stats)

    async def _remember(self) -> None:
        """Save what this session learned, if it has somewhere to and sent anything."""
        if self._memory is None or self._scheduler is None or self._limiter is None:
            return
        if not self.stats.requests:
            return  # nothing learned: keep the state as it was
        state = capture_state(
            provider=self._provider.name,
            base_url=self._base_url,
            belief=self._belief,
            adaptive=_adaptive(self._limiter),
            model=self._scheduler.model,
            clock_now=self._clock(),
        )
        try:
            await self._memory.save(state)
        except OSError as exc:  # a full disk or a read-only cache must not fail a close
            logger.warning("could not save the learned state to %r: %s", self._memory, exc)

    def _spawn(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
    ) -> None:
        task = asyncio.get_running_loop().create_task(fn(*args), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_open(self) -> None:
        if self._state != "open":
            state = "not open yet" if self._state == "new" else "closed"
            raise SessionClosedError(f"the session is {state}; use 'async with Session(...)'")

    def _resolved(self, run: Run) -> None:
        self.runs.discard(run)
        if self._scheduler is not None:
            self._scheduler.release(run)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        creating = self._creator is not None and self._creator.in_flight
        if not self.runs and not creating and self._idle is not None:
            self._idle.set()

    def _busy(self) -> None:
        if self._idle is not None:
            self._idle.clear()

    def _creator_now(self) -> Creator:
        assert self._creator is not None  # set by open(); callers checked the session is open
        return self._creator

    # -- submitting --------------------------------------------------------------

    def prepare(
        self,
        request: ImageRequest | str,
        *,
        aspect_ratio: AspectRatio | None = None,
        quality: Quality | None = None,
        image_urls: Iterable[str] | None = None,
    ) -> ImageRequest:
        """Validate a request for this session's provider without sending anything.

        Raises ``InvalidRequestError``. ``submit`` calls this itself.
        """
        req = as_request(request, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls)
        self._provider.validate(req)
        return req

    async def submit(
        self,
        request: ImageRequest | str,
        *,
        aspect_ratio: AspectRatio | None = None,
        quality: Quality | None = None,
        image_urls: Iterable[str] | None = None,
        on_send: Callable[[], None] | None = None,
        ahead_of_polls: bool = False,
    ) -> Run:
        """Create a run and return its handle once the provider has accepted it.

        Validation happens first: bad input raises ``InvalidRequestError``
        before anything is sent. Waits for the rate limiter, retries the
        create when it certainly did not happen, and raises the typed error
        otherwise. Cancelling the caller after the create was sent does not
        lose the run: it stays tracked in ``session.runs``.

        ``on_send`` is called synchronously just before each attempt goes on
        the wire (after the rate limiter let it through): the place to journal
        an intent, so that only creates really sent can have an unknown fate.
        If it raises, nothing is sent and the error propagates.

        ``ahead_of_polls`` (default ``False``): this create is one of the last
        of a bulk job and waits for its rate-limit slot ahead of polls, not
        behind them. A job ends when its last run does, so starting its last
        runs early, while polls of runs already finished fill the budget
        during them, ends it sooner (``as_completed``, ``generate_many`` and
        the CLI's ``batch`` mark their last ``tail_size()`` creates so, in a
        job longer than that). A marked create also moves every create
        already waiting in the session ahead of polls, so none is overtaken;
        runs created from one long run before it until the last marked create
        is sent are not fed to the duration model (their polls are held back
        on purpose). Marking every create would hold results back while
        creates wait: under overload, runs would time out unpolled.
        """
        req = self.prepare(
            request, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
        )
        self._check_open()
        return await self._creator_now().create(
            req, index=None, on_send=on_send, ahead_of_polls=ahead_of_polls
        )

    async def generate(
        self,
        request: ImageRequest | str,
        *,
        aspect_ratio: AspectRatio | None = None,
        quality: Quality | None = None,
        image_urls: Iterable[str] | None = None,
    ) -> Result:
        """Submit a run and wait for its result."""
        run = await self.submit(
            request, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
        )
        return await run

    def attach(self, run_id: str, *, request: ImageRequest | None = None) -> Run:
        """Track a run created earlier (by another session, before a restart ...).

        Returns the run already tracked under this id if there is one. The
        run is polled at once, then as usual; nothing is created.
        """
        self._check_open()
        if not isinstance(run_id, str) or not run_id.strip():
            raise ConfigurationError("attach() needs a non-empty run id")
        existing = self.runs.get(run_id)
        if existing is not None:
            return existing
        now = self._clock()
        run = Run(
            run_id, self._provider.name, request, created_at=now, deadline=now + self._run_timeout
        )
        self._track(run)
        assert self._scheduler is not None
        self._scheduler.add(run, poll_now=True)
        return run

    @overload
    async def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: Literal[False] = False,
        concurrency: int | None = None,
    ) -> list[Result]: ...

    @overload
    async def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: Literal[True],
        concurrency: int | None = None,
    ) -> list[Result | GPTImageError]: ...

    async def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: bool = False,
        concurrency: int | None = None,
    ) -> list[Result] | list[Result | GPTImageError]:
        """Generate many images; results come back in input order.

        Every request is validated before anything is sent. With
        ``return_exceptions=False`` the first failure is raised and creates
        not yet sent are dropped (runs already created stay tracked); with
        ``True`` each item is its ``Result`` or its error. ``concurrency``
        caps how many runs are in flight at once (default ``None``: the rate
        limiter paces creates, within the window ``as_completed`` describes).
        """
        _check_many(requests)
        prepared: list[ImageRequest | GPTImageError] = []
        for item in requests:
            try:
                prepared.append(self.prepare(item))
            except GPTImageError as exc:
                if not return_exceptions:
                    raise
                prepared.append(exc)
        self._check_open()
        out: list[Result | GPTImageError] = [_MISSING] * len(prepared)
        todo: list[tuple[int, ImageRequest | str]] = []
        for i, entry in enumerate(prepared):
            if isinstance(entry, GPTImageError):
                out[i] = entry
            else:
                todo.append((i, entry))
        source = Countdown(todo, self._tail_left, longer_than=self.tail_size)
        runs = self._stream(source, concurrency=concurrency)
        try:
            async for run in runs:
                assert run.index is not None
                error = run.error
                if error is not None and not return_exceptions:
                    raise error
                out[run.index] = run._outcome()
        finally:
            await runs.aclose()
        assert _MISSING not in out
        return out

    def as_completed(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        concurrency: int | None = None,
    ) -> AsyncGenerator[Run, None]:
        """Submit ``requests`` and yield each run as it finishes, in finishing order.

        Each yielded run is resolved: ``await run`` returns its result or
        raises its error at once. A request that fails validation or whose
        create fails is yielded as a run with ``id`` ``None`` carrying that
        error; ``run.index`` is the request's position in ``requests``.
        Requests are read lazily, so a generator of millions is fine (an
        iterable without ``len()`` is read up to ``tail_size()`` requests, at
        most 1,024, ahead of the creates, to see the job's end coming: its
        last creates go ahead of polls, see ``submit(ahead_of_polls=...)``).

        Creates keep at most a window of runs ahead of the consumer:
        ``concurrency`` if given, else twice what the key's budget keeps in
        flight (at least ``FEEDERS``, 32). A consumer that stops pulling (a
        ``break``) therefore stops the creates too, even if the generator is
        not closed; runs already created stay tracked by the session. Close
        the generator to cancel the creates at once, with ``aclosing``:

        >>> from contextlib import aclosing                  # doctest: +SKIP
        >>> async with aclosing(session.as_completed(prompts)) as runs:
        ...     async for run in runs:
        ...         print(run.index, run.error or run.outcome.urls)
        ...         if run.error:
        ...             break
        """
        _check_many(requests)
        # The stream itself, not a generator wrapping it: a generator dropped
        # unclosed is then finalized once, not twice concurrently.
        source = Countdown(
            enumerate(requests), self._tail_left, sized=requests, longer_than=self.tail_size
        )
        return self._stream(source, concurrency=concurrency)

    def tail_size(self) -> int:
        """How many of a bulk job's last creates go ahead of polls (``int``, >= 1).

        ``TAIL_FACTOR`` (2) times the believed rate (requests per second)
        times the time a run may take: the learned 99th-percentile duration,
        or the limiter's window (seconds) before enough runs have finished to
        know it. While those creates go out, about half of them worth of polls
        falls due and waits; those polls then fill the budget for as long as
        the job's last runs take. 1 before the session is open.
        """
        if self._limiter is None or self._scheduler is None:
            return 1
        model = self._scheduler.model
        longest = model.quantile(TAIL_QUANTILE) if model.ready else self._limiter.window
        return max(1, math.ceil(TAIL_FACTOR * self._limiter.rate * longest))

    def _tail_left(self) -> int:
        # Creates already waiting are promoted with the first one marked: they count.
        waiting = self._creator.waiting if self._creator is not None else 0
        return max(0, self.tail_size() - waiting)

    async def _stream(
        self, source: Countdown[tuple[int, ImageRequest | str]], *, concurrency: int | None
    ) -> AsyncGenerator[Run, None]:
        self._check_open()
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError("concurrency must be a positive int or None")
        # Feeders put resolved runs here; None when a feeder ends, or an error
        # that is a bug (never a hang).
        done: asyncio.Queue[Run | BaseException | None] = asyncio.Queue()
        # The error the requests iterable raised: the caller must see it, not a
        # short stream, but after every run created before it (paid for).
        source_error: list[Exception] = []
        feeders_left = min(FEEDERS, concurrency or FEEDERS)
        outstanding = 0
        # Runs started and not yet handed to the consumer. Bounded by the window,
        # so a consumer that stops pulling (a ``break`` with the generator still
        # referenced) stops the creates too: nothing is bought that nobody takes.
        ahead = 0
        room = asyncio.Event()

        def full() -> bool:
            if concurrency is not None:
                return ahead >= concurrency
            return ahead >= FEEDERS and ahead >= self._default_window()

        async def feed() -> None:
            nonlocal outstanding, ahead
            try:
                while True:
                    while full():
                        room.clear()
                        await room.wait()
                    ahead += 1
                    try:
                        (index, item), last = source.take()
                    except Exception as exc:
                        ahead -= 1
                        room.set()  # the next feeder must not wait forever
                        if not isinstance(exc, StopIteration):
                            source_error.append(exc)  # the caller's iterable failed
                        return
                    try:
                        run = await self._create_or_failed(item, index, last)
                    except Exception as exc:  # a bug, not a run's error: never a hang
                        done.put_nowait(exc)
                        return
                    outstanding += 1
                    run._future.add_done_callback(
                        functools.partial(_call_with_run, done.put_nowait, run)
                    )
            finally:
                done.put_nowait(None)

        loop = asyncio.get_running_loop()
        feeders = [loop.create_task(feed()) for _ in range(feeders_left)]
        for task in feeders:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while feeders_left or outstanding:
                item = await done.get()
                if item is None:
                    feeders_left -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    outstanding -= 1
                    ahead -= 1  # handed over: its place goes to the next create
                    room.set()
                    yield item
            if source_error:
                raise source_error[0]
        finally:
            for task in feeders:
                task.cancel()
            await asyncio.gather(*feeders, return_exceptions=True)

    def _default_window(self) -> int:
        """Runs ``as_completed`` / ``generate_many`` may start ahead of their consumer.

        Without ``concurrency``: twice the runs the key's budget can keep in
        flight (its believed rate times the longer of its window and the
        learned 95th-percentile run duration), at least ``FEEDERS``. So a
        consumer that keeps pulling is never held back by it, and one that
        stops leaves at most this many runs nobody takes.
        """
        if self._limiter is None or self._scheduler is None:
            return FEEDERS
        duration = self._limiter.window
        model = self._scheduler.model
        if model.ready:
            duration = max(duration, model.quantile(0.95))
        return max(FEEDERS, math.ceil(WINDOW_FACTOR * self._limiter.rate * duration))

    async def _create_or_failed(self, item: ImageRequest | str, index: int, last: bool) -> Run:
        try:
            req = self.prepare(item)
            return await self._creator_now().create(req, index=index, ahead_of_polls=last)
        except GPTImageError as exc:
            now = self._clock()
            request = item if isinstance(item, ImageRequest) else None
            run = Run(None, self._provider.name, request, created_at=now, deadline=now, index=index)
            run._fail(exc, RunStatus.ERRORED)
            return run

    def _track(self, run: Run) -> None:
        self.runs.add(run)
        self._busy()

    def __repr__(self) -> str:
        # Safe on a half-built session too (its __init__ raised): tracebacks render locals.
        provider = getattr(getattr(self, "_provider", None), "name", "?")
        runs = getattr(self, "runs", None)
        return (
            f"<Session {provider} {getattr(self, '_base_url', '?')} "
            f"{getattr(self, '_state', 'new')} in_flight={len(runs) if runs is not None else 0}>"
        )


def _adaptive(limiter: Limiter | None) -> AdaptiveRate | None:
    """The belief a learned state saves and restores; ``None`` if the fleet's (in Redis)."""
    return limiter.belief if limiter is not None else None


def _check_many(requests: object) -> None:
    # A str is an iterable of characters: one paid run per letter is never what was meant.
    if isinstance(requests, str | bytes | bytearray | ImageRequest):
        raise InvalidRequestError(
            "requests must be an iterable of prompts or ImageRequests, not a single "
            f"{type(requests).__name__}; wrap it in a list, or use generate()/submit()"
        )


def _resolve_key(provider: Provider, api_key: str | None) -> str:
    if api_key is not None and not isinstance(api_key, str):
        raise ConfigurationError(f"api_key must be a str or None, not {type(api_key).__name__}")
    key = api_key if api_key is not None else os.environ.get(provider.env_var)
    if key is None or not key.strip():
        raise ConfigurationError(
            f"no API key for {provider.name}: pass api_key=... or set {provider.env_var}"
        )
    if not isinstance(key, str) or any(c.isspace() or ord(c) < 32 for c in key.strip()):
        raise ConfigurationError("the API key contains whitespace or control characters")
    return key.strip()


def _check_base_url(url: str) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a str or None, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError(f"base_url is not a URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, not {url!r}")
    if parts.username or parts.password:
        raise ConfigurationError("base_url must not carry credentials; use api_key")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            "plain http is accepted only for loopback hosts (the simulator), "
            f"not {parts.hostname!r}"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _call_with_run(fn: Callable[[Run], None], run: Run, _future: object) -> None:
    """A future's done-callback that hands ``fn`` the resolved ``run`` (not the future)."""
    fn(run)


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds")
