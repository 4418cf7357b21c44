"""The session: the public verbs over its lanes (one provider, key and base URL each).

``Session`` holds the configuration (a ``SessionConfig``), the lifecycle
(open, close, cancel) and the public verbs (``submit``, ``generate``,
``attach``, ``generate_many``, ``as_completed``); its lanes (``_lane``) hold
the limiter, the poll scheduler and the create pipeline. How a run travels,
one module per step:

1. validated: ``_models`` (``as_request``), then the provider's own limits
   (``_providers``);
2. routed to a lane (``_lane``; one today), which keeps it for life;
3. encoded by its provider adapter: ``_providers`` (one module per provider);
4. sent through the rate limiter: ``_create`` (the create pipeline) waits in
   ``_limiter`` and sends with ``_transport``;
5. its answer read and its errors sorted: ``_classify`` (retry / wait as told
   / fail / uncertain), with every delay and cap in ``_retry``;
6. recorded in the lane's registry: ``_registry``;
7. polled by the lane's scheduler: ``_scheduler``, which reads answers
   through ``_classify`` too;
8. resolved: ``_run`` (the user's handle).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, overload

from ._budget import Limiter
from ._bulk import Countdown, TailRule, in_input_order, stream
from ._config import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CREATE_ATTEMPTS,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RUN_TIMEOUT,
    OnExit,
    SessionConfig,
)
from ._create import Creator
from ._exceptions import (
    ConfigurationError,
    GPTImageError,
    InvalidRequestError,
    SessionClosedError,
)
from ._lane import Lane, Lifecycle, LimiterView, SchedulerView
from ._models import AspectRatio, ImageRequest, Quality, RateLimit, Result, RunStatus, as_request
from ._providers import Provider, ProviderName
from ._registry import RunRegistry
from ._run import Run
from ._scheduler import PollScheduler
from ._stats import SessionStats
from ._transport import Transport

if TYPE_CHECKING:
    from redis.asyncio import Redis
else:  # get_type_hints() must work without the optional redis package
    Redis = Any

__all__ = ["LimiterView", "OnExit", "ProviderName", "SchedulerView", "Session", "SessionConfig"]

logger = logging.getLogger("gptimage_async")

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


class Session:
    """An open line to one provider: submits runs and resolves them.

    >>> async with Session("runbase") as session:            # doctest: +SKIP
    ...     result = await session.generate("a ceramic lamp", quality="high")
    ...     print(result.urls)

    The options (all keyword-only but ``provider``) are ``SessionConfig``'s,
    documented there: ``provider``, ``api_key``, ``base_url``,
    ``rate_limit``, ``request_timeout``, ``run_timeout``, ``on_exit``,
    ``resend_uncertain_creates``, ``max_create_attempts``,
    ``max_connections``, ``user_agent``, ``proxy``, ``redis``,
    ``state_file``, ``remember``. ``Session.from_config(config)`` opens one
    from a ``SessionConfig`` built beforehand.

    Raises ``ConfigurationError`` (a ``ValueError``) for any bad argument or a
    missing API key, before anything is opened.

    Open one session per process and share it: its limiter and poller then
    see all the traffic for the key. Its background work is owned by the
    session itself, so a framework may open and close it from different tasks,
    but not from another event loop (``WrongEventLoopError``). A session
    opens once: ``open()`` after ``aclose()`` raises ``SessionClosedError``.
    Leaving it through any exception (Ctrl-C included) cancels the runs in
    flight, names them in one WARNING of the ``gptimage_async`` logger, and
    keeps them in ``session.runs.abandoned`` (each with its ``run_id``).
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
        transport: Transport | None = None,
    ) -> None:
        # Every parameter is a SessionConfig field, in the same order with the
        # same default (tests/test_argument_errors.py holds the two together).
        options = {name: value for name, value in locals().items() if name != "self"}
        self._setup(SessionConfig(**options))

    @classmethod
    def from_config(cls, config: SessionConfig) -> Self:
        """A session with ``config``'s options; its API key is read now if not in it.

        Raises ``ConfigurationError`` when there is no API key.
        """
        if not isinstance(config, SessionConfig):
            raise ConfigurationError("from_config() needs a gptimage_async.SessionConfig")
        session = cls.__new__(cls)
        session._setup(config)
        return session

    def _setup(self, config: SessionConfig) -> None:
        key = config.resolved_key()
        self._config = config
        self._provider: Provider = config.adapter
        self._resend = config.resend_uncertain_creates  # read by Batch
        # Replaced by the running loop's clock in open(): the limiter and the
        # scheduler read and wake on it, and run times must compare with theirs.
        self._clock: Callable[[], float] = time.monotonic
        self.runs = RunRegistry()
        self.stats = SessionStats()
        self._life = Lifecycle(self.runs, owner=self)
        # Today one lane; a pool of keys gives the session several (``_route``).
        self._lanes = [
            Lane(config, api_key=key, everyone=self.runs, stats=self.stats, life=self._life)
        ]
        # The bulk verbs' feeder tasks; each lane owns its own tasks.
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------

    @property
    def config(self) -> SessionConfig:
        """The session's options (read-only; ``dataclasses.replace`` for a changed copy)."""
        return self._config

    @property
    def provider(self) -> str:
        """The provider's name: ``"runbase"`` or ``"apiinone"``."""
        return self._provider.name

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self._config.api_root

    @property
    def transport(self) -> Transport:
        """The ``Transport`` every request of this session goes through.

        Pass it to ``download(..., transport=session.transport)`` so image
        downloads share the session's proxy, user agent and connections (the
        key is sent to the API's origin only). Raises ``SessionClosedError``
        before ``open()``.
        """
        transport = self._lanes[0].transport
        if transport is None:
            raise SessionClosedError("the session is not open")
        return transport

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
        return self._life.state in ("closing", "closed")

    # The first lane's parts, for the bulk verbs below.
    @property
    def _limiter(self) -> Limiter | None:
        return self._lanes[0].limiter

    @property
    def _scheduler(self) -> PollScheduler | None:
        return self._lanes[0].scheduler

    @property
    def _creator(self) -> Creator | None:
        return self._lanes[0].creator

    @property
    def _transport(self) -> Transport | None:
        return self._lanes[0].transport

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose(cancel=exc_type is not None or self._config.on_exit == "cancel")

    async def open(self) -> None:
        """Open the session (``async with`` does this)."""
        if self._life.state != "new":
            raise SessionClosedError(
                "this session was already opened; a closed session cannot be reused, "
                "create a new Session"
            )
        self._life.open()
        self._clock = asyncio.get_running_loop().time
        try:
            for lane in self._lanes:
                await lane.open()
        except BaseException:
            # Half open (say Redis refused its URL): release what was opened, then say why.
            await self._shutdown()
            raise
        logger.debug("session opened: %s at %s", self.provider, self.base_url)

    async def aclose(self, *, cancel: bool = False) -> None:
        """Close the session: wait for runs in flight (or cancel them), then release everything.

        Cancelled runs end with ``SessionClosedError`` carrying their run id,
        so a later session can ``attach`` to them; they stay in
        ``session.runs.abandoned``, and one WARNING names them. Closing twice
        is harmless. Raises ``WrongEventLoopError`` from another event loop.
        """
        life = self._life
        if life.state in ("closing", "closed"):
            return
        if life.state == "new":
            life.state = "closed"
            return
        life.check_loop()
        life.state = "closing"
        try:
            if not cancel:
                assert life.idle is not None
                await life.idle.wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        # Creates already sent are let finish, so their runs get an id to report.
        try:
            for lane in self._lanes:
                await lane.finish_creates()
        finally:
            self._life.abandon()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            try:
                for lane in self._lanes:
                    await lane.aclose()
            finally:
                self._life.state = "closed"
        logger.debug("session closed: %s", self.stats)

    def _check_open(self) -> None:
        self._life.check_open()

    def _busy(self) -> None:
        self._life.busy()

    def _creator_now(self) -> Creator:
        assert self._creator is not None  # set by open(); callers checked the session is open
        return self._creator

    def _route(self) -> Lane:
        """The lane a new run goes to (the only one, today)."""
        return self._lanes[0]

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
        return await self._route().create(
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
        run is polled at once, then as usual; nothing is created. Raises
        ``ConfigurationError`` for an empty id, ``SessionClosedError`` /
        ``WrongEventLoopError`` as ``submit`` does.
        """
        self._check_open()
        if not isinstance(run_id, str) or not run_id.strip():
            raise ConfigurationError("attach() needs a non-empty run id")
        existing = self.runs.get(run_id)
        if existing is not None:
            return existing
        return self._route().attach(run_id, request, self._clock())

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
        todo = [(i, e) for i, e in enumerate(prepared) if not isinstance(e, GPTImageError)]
        runs = self._stream(self.tail_rule().countdown(todo), concurrency=concurrency)
        return await in_input_order(runs, prepared, return_exceptions=return_exceptions)

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
        source = self.tail_rule().countdown(enumerate(requests), sized=requests)
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

    def tail_rule(self) -> TailRule:
        """The rule that marks a bulk job's last creates (see ``_bulk.TailRule``).

        Its tail is ``tail_size()`` less the creates already waiting for a
        rate-limit slot (the first marked create promotes them too). A bulk
        job run outside the session (``Batch``, the CLI) marks its creates by
        it and passes the mark as ``submit(ahead_of_polls=...)``.
        """
        return TailRule(self.tail_size, self._creates_waiting)

    def _creates_waiting(self) -> int:
        return self._creator.waiting if self._creator is not None else 0

    @property
    def resends_uncertain_creates(self) -> bool:
        """Whether a create of unknown fate is sent again (``resend_uncertain_creates``)."""
        return self._resend

    def _stream(
        self, source: Countdown[tuple[int, ImageRequest | str]], *, concurrency: int | None
    ) -> AsyncGenerator[Run, None]:
        self._check_open()
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError("concurrency must be a positive int or None")

        def full(ahead: int) -> bool:
            if concurrency is not None:
                return ahead >= concurrency
            return ahead >= FEEDERS and ahead >= self._default_window()

        return stream(
            source,
            self._create_or_failed,
            full=full,
            feeders=min(FEEDERS, concurrency or FEEDERS),
            tasks=self._tasks,
        )

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
        self.runs._track(run)
        self._busy()

    def __repr__(self) -> str:
        # Safe on a half-built session too (its __init__ raised): tracebacks render locals.
        config = getattr(self, "_config", None)
        life = getattr(self, "_life", None)
        runs = getattr(self, "runs", None)
        return (
            f"<Session {getattr(config, 'provider', '?')} "
            f"{config.api_root if config is not None else '?'} "
            f"{life.state if life is not None else 'new'} "
            f"in_flight={len(runs) if runs is not None else 0}>"
        )


def _check_many(requests: object) -> None:
    # A str is an iterable of characters: one paid run per letter is never what was meant.
    if isinstance(requests, str | bytes | bytearray | ImageRequest):
        raise InvalidRequestError(
            "requests must be an iterable of prompts or ImageRequests, not a single "
            f"{type(requests).__name__}; wrap it in a list, or use generate()/submit()"
        )
