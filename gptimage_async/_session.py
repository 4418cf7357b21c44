"""The session: the public verbs over its lanes (one provider, key and base URL each).

``Session`` holds the configuration (a ``SessionConfig``, whose docstrings
document every option), the lifecycle (open, close, cancel) and the public
verbs; its bulk verbs are in ``_bulk_verbs``, its read-only views (``lanes``,
``transport``, ``limiter``, ``scheduler``) in ``_session_views``, its lanes
(``_lane``) hold the limiter, the poll scheduler and the create pipeline. The
README's "Where each step of a run lives" names the module of each step a run
goes through.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from . import _pool
from ._bulk_verbs import BulkVerbs
from ._config import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CREATE_ATTEMPTS,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RUN_TIMEOUT,
    OnExit,
    Routing,
    SessionConfig,
)
from ._exceptions import ConfigurationError
from ._lane import LaneRuntime, seconds_since
from ._lifecycle import Lifecycle
from ._models import AspectRatio, ImageRequest, Quality, RateLimit, Result, as_request, check_run_id
from ._pool import Lane, Pool, check_request
from ._providers import Provider, ProviderName
from ._registry import RunRegistry
from ._router import PoolStats, Router
from ._run import Run
from ._session_views import SessionViews
from ._transport import Transport
from ._views import LimiterView, SchedulerView

if TYPE_CHECKING:
    from redis.asyncio import Redis
else:  # get_type_hints() must work without the optional redis package
    Redis = Any

__all__ = ["LimiterView", "OnExit", "ProviderName", "SchedulerView", "Session", "SessionConfig"]

logger = logging.getLogger("gptimage_async")


class Session(SessionViews, BulkVerbs):
    """An open line to one provider: submits runs and resolves them.

    >>> async with Session("runbase") as session:            # doctest: +SKIP
    ...     result = await session.generate("a ceramic lamp", quality="high")
    ...     print(result.urls)

    The options (all keyword-only but ``provider``) are the fields of
    ``SessionConfig``, documented there once; ``Session.from_config(config)``
    opens one from a ``SessionConfig`` built beforehand.

    Several keys and sellers in one session (README, "Several keys and
    sellers"): ``Session(lanes=[Lane("runbase", key_a), Lane("apiinone")],
    routing="cheapest", spend_cap=5000)``; each create goes to the lane the
    routing picks when a slot is free there, and its run stays on that lane.

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
        lanes: Sequence[Lane] | None = None,
        routing: Routing = "earliest",
        spend_cap: float | None = None,
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
        pool = config.pool()  # reads the key, checks the pool: before anything opens
        self._config = config
        self._provider: Provider = config.adapter
        self._resend = config.resend_uncertain_creates  # read by Batch
        # Replaced by the running loop's clock in open(): the limiter and the
        # scheduler read and wake on it, and run times must compare with theirs.
        self._clock: Callable[[], float] = time.monotonic
        self.runs = RunRegistry()
        self.stats = PoolStats()
        self._life = Lifecycle(self.runs, owner=self)
        several = len(pool.lanes) > 1
        self._lanes = [
            LaneRuntime(
                config, spec, everyone=self.runs, stats=self.stats, life=self._life, several=several
            )
            for spec in pool.lanes
        ]
        self._router = Router(
            pool,
            self._lanes,
            stats=self.stats,
            clock=lambda: self._clock(),
            run_timeout=config.run_timeout,
            resend_uncertain=config.resend_uncertain_creates,
        )
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
        """The API root requests go to (the first lane's, in a pool)."""
        return self._lanes[0].base_url

    @property
    def pool(self) -> Pool:
        """The session's lanes, routing and spend cap (one lane unless ``lanes=`` was given)."""
        return self._router.pool

    def cannot_connect(self) -> bool:
        """Whether no lane can take a create now: each is closed, or unreachable (``bool``).

        Internal to the package (``Batch`` stops on it), not public API: the
        rule is ``_pool.cannot_connect`` over the router's lane health.
        """
        return _pool.cannot_connect(self._router.health, self._clock())

    @property
    def lifecycle(self) -> Lifecycle:
        """The session's ``Lifecycle``: its state, held runs and creates on the wire.

        Internal to the package (the sync layer holds a bulk call's runs with
        ``holding`` / ``release`` and quits at once with ``drop_creates``),
        not public API.
        """
        return self._life

    @property
    def closed(self) -> bool:
        """True once the session has been closed; it cannot be reopened."""
        return self._life.state in ("closing", "closed")

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
        if not life.begin_close():
            return
        try:
            if not cancel:
                assert life.idle is not None
                await life.idle.wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        await self._life.shut_down(self._lanes, self._tasks)
        logger.debug("session closed: %s", self.stats)

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
        # Valid on some lane: the router sends it only to lanes that accept it.
        check_request([lane.spec for lane in self._lanes], req)
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
        of a bulk job and waits for its rate-limit slot ahead of polls, so
        the job ends sooner (the tail rule, ``_bulk``: ``as_completed``,
        ``generate_many`` and the CLI's ``batch`` mark their last
        ``tail_size()`` creates so). A marked create also moves every create
        already waiting ahead of polls, so none is overtaken; runs created
        from one long run before it until the last marked create is sent are
        not fed to the duration model. Marking every create would hold
        results back: under overload, runs would time out unpolled.
        """
        req = self.prepare(
            request, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
        )
        self._life.check_open()
        return await self._router.create(
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

    def attach(
        self,
        run_id: str,
        *,
        request: ImageRequest | None = None,
        created_at: float | None = None,
        lane: str | Lane | None = None,
    ) -> Run:
        """Track a run created earlier (by another session, before a restart ...).

        Returns the run already tracked under this id if there is one. The
        run is polled at once, then as usual, through ``lane``; nothing is
        created. ``lane`` names the lane that created the run (a run id is
        known only to its own key): its ``run.lane`` (``"provider:fingerprint"``),
        a ``Lane`` of the pool, its label or its fingerprint; optional in a
        session of one lane. ``created_at`` is when the run was created, as a
        wall-clock UNIX time in seconds (``time.time()``; default ``None``:
        unknown). Given, a 404 within ``NOT_FOUND_GRACE`` (30 s) of it means
        "not visible yet", as for a run this session created (the provider's
        read side may lag its write side: PROVIDERS.md); not given, a 404 is
        "not found" at once, since the id may be made up. Raises
        ``ConfigurationError`` for an empty id, a ``created_at`` that is not a
        finite number, a lane not in the pool, or no lane in a pool of several;
        ``SessionClosedError`` / ``WrongEventLoopError`` as ``submit`` does.
        """
        self._life.check_open()
        check_run_id(run_id, "attach() run id")
        created_ago = seconds_since(created_at)
        existing = self.runs.get(run_id)
        if existing is not None:
            return existing
        return self._router.lane_for(lane).attach(run_id, request, self._clock(), created_ago)

    @property
    def resends_uncertain_creates(self) -> bool:
        """Whether a create of unknown fate is sent again (``resend_uncertain_creates``)."""
        return self._resend

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
