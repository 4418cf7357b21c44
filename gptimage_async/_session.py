"""The session: one provider, one key, one limiter, one poll scheduler.

How a run travels: the request is validated (``_models``, then the
provider's own limits), encoded by its provider adapter (``_providers``), sent
through the rate limiter (``_limiter``, ``_transport``), recorded in the
registry (``_registry``), polled by the scheduler (``_scheduler``), decoded by
the adapter again, and resolved (``_run``).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Literal, Self, overload
from urllib.parse import urlsplit

import anyio

from ._exceptions import (
    APIStatusError,
    ConfigurationError,
    GPTImageError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RunTimeoutError,
    SessionClosedError,
    UncertainCreateError,
)
from ._limiter import PRIORITY_CREATE, RateLimiter
from ._models import AspectRatio, ImageRequest, Quality, RateLimit, Result, RunStatus, as_request
from ._providers import Provider, get_provider
from ._registry import RunRegistry
from ._retry import parse_retry_after
from ._run import Run
from ._scheduler import PollScheduler
from ._state import FileStateStore, StateStore, apply_state, capture_state
from ._stats import SessionStats
from ._transport import Secret, SendError, Transport, check_proxy
from ._version import __version__

__all__ = ["OnExit", "ProviderName", "Session"]

logger = logging.getLogger("gptimage_async")

ProviderName = Literal["runbase", "apiinone"]
OnExit = Literal["wait", "cancel"]

#: Defaults, in seconds unless named otherwise.
DEFAULT_REQUEST_TIMEOUT = 60.0
DEFAULT_RUN_TIMEOUT = 900.0
DEFAULT_MAX_CREATE_ATTEMPTS = 6
DEFAULT_MAX_CONNECTIONS = 100
#: Workers that feed creates for ``as_completed`` / ``generate_many``: enough to
#: keep the limiter busy when each create takes a round trip.
FEEDERS = 32

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


_MISSING: Any = object()


class _Retry:
    """A create that certainly did not happen and may be sent again."""

    __slots__ = ("error", "rate_limited")

    def __init__(self, error: GPTImageError, *, rate_limited: bool = False) -> None:
        self.error = error
        self.rate_limited = rate_limited


class Session:
    """An open line to one provider: submits runs and resolves them.

    >>> async with Session("runbase") as session:            # doctest: +SKIP
    ...     result = await session.generate("a ceramic lamp", quality="high")
    ...     print(result.urls)

    ``api_key=None`` reads ``RUNBASE_API_KEY`` / ``APIINONE_API_KEY``.
    ``base_url`` is the API root including ``/api/v1``; plain ``http://`` is
    accepted only for loopback hosts (the simulator). ``rate_limit`` is the
    starting belief about the provider's limit (``None``: the documented one);
    the limiter learns from there. ``run_timeout`` bounds each run from its
    create to its resolution. ``on_exit`` says what leaving the ``async with``
    block normally does with runs in flight: ``"wait"`` for them, or
    ``"cancel"`` them (they end with ``SessionClosedError``; leaving through
    an exception always cancels). ``resend_uncertain_creates=True`` resends a
    create whose fate is unknown, accepting the risk of paying twice.
    ``state_file`` is a path where the session keeps what it learned (the
    rate belief and recent run durations): loaded when it opens, saved when it
    closes, so the next batch starts warm. A missing, stale (over 7 days) or
    corrupt file is ignored; ``None`` (the default) keeps nothing.
    ``proxy`` sends every request through that http(s) proxy URL; without
    it, ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY`` are
    honoured as requests and httpx do, read when the session opens.

    Open one session per process and share it: its limiter and poller then
    see all the traffic for the key. Its background work is owned by the
    session itself, so a framework may open and close it from different tasks.
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
        state_file: str | os.PathLike[str] | None = None,
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
        if not isinstance(max_create_attempts, int) or max_create_attempts < 1:
            raise ConfigurationError("max_create_attempts must be a positive int")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigurationError("max_connections must be a positive int")
        self._request_timeout = float(request_timeout)
        self._run_timeout = float(run_timeout)
        self._on_exit: OnExit = on_exit
        self._resend = bool(resend_uncertain_creates)
        self._max_attempts = max_create_attempts
        self._max_connections = max_connections
        self._user_agent = user_agent or f"gptimage-async/{__version__}"
        # Where learned state lives between sessions: a file, or (later) a shared store.
        self._memory: StateStore | None = None if state_file is None else FileStateStore(state_file)
        self._proxy = None if proxy is None else check_proxy(proxy)
        # Replaced by the running loop's clock in open(): the limiter and the
        # scheduler read and wake on it, and run times must compare with theirs.
        self._clock: Callable[[], float] = time.monotonic
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self.runs = RunRegistry()
        self.stats = SessionStats()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._creates: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None
        self._transport: Transport | None = None
        self._limiter: RateLimiter | None = None
        self._scheduler: PollScheduler | None = None

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
    def limiter(self) -> RateLimiter:
        """The session's rate limiter (for introspection)."""
        if self._limiter is None:
            raise SessionClosedError("the session is not open")
        return self._limiter

    @property
    def scheduler(self) -> PollScheduler:
        """The session's poll scheduler (for introspection)."""
        if self._scheduler is None:
            raise SessionClosedError("the session is not open")
        return self._scheduler

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
        self._limiter = RateLimiter(self._belief)
        await self._limiter.start()
        self._scheduler = PollScheduler(
            provider=self._provider,
            transport=self._transport,
            limiter=self._limiter,
            stats=self.stats,
            spawn=self._spawn,
            on_resolved=self._resolved,
            max_polls_in_flight=self._max_connections,
        )
        if self._memory is not None:
            learned = await self._memory.load(self._provider.name, self._base_url)
            if learned is not None:
                apply_state(
                    learned,
                    belief=self._belief,
                    adaptive=self._limiter.adaptive,
                    model=self._scheduler.model,
                    clock_now=self._clock(),
                )
                logger.debug("session starts from what was learned: %r", self._scheduler.model)
        self._spawn(self._scheduler.run_forever)
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
        if self._creates:
            await asyncio.gather(*self._creates, return_exceptions=True)
        now = self._clock()
        for run in self.runs:
            run._fail(
                SessionClosedError(
                    f"the session was closed before run {run.run_id} was resolved; "
                    "it may still finish: attach() it from another session",
                    run_id=run.run_id,
                ),
                RunStatus.ERRORED,
                now,
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
            adaptive=self._limiter.adaptive,
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
        if not self.runs and not self._creates and self._idle is not None:
            self._idle.set()

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
        """
        req = self.prepare(
            request, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
        )
        self._check_open()
        return await self._create(req, index=None, on_send=on_send)

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
        caps how many runs are in flight at once (default: no cap, the rate
        limiter paces creates).
        """
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
        runs = self._stream(todo, concurrency=concurrency)
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

    async def as_completed(
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
        Requests are read lazily, so a generator of millions is fine.

        >>> async for run in session.as_completed(prompts):  # doctest: +SKIP
        ...     print(run.index, run.error or run.outcome.urls)
        """
        self._check_open()
        runs = self._stream(enumerate(requests), concurrency=concurrency)
        try:
            async for run in runs:
                yield run
        finally:
            await runs.aclose()

    async def _stream(
        self, items: Iterable[tuple[int, ImageRequest | str]], *, concurrency: int | None
    ) -> AsyncGenerator[Run, None]:
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError("concurrency must be a positive int or None")
        # Feeders put resolved runs here; None when a feeder ends, or the error
        # the requests iterable raised (the caller must see it, not a short stream).
        done: asyncio.Queue[Run | BaseException | None] = asyncio.Queue()
        slots = asyncio.Semaphore(concurrency) if concurrency else None
        source = iter(items)
        feeders_left = min(FEEDERS, concurrency or FEEDERS)
        outstanding = 0

        def finished(run: Run) -> None:
            if slots is not None:
                slots.release()
            done.put_nowait(run)

        async def feed() -> None:
            nonlocal outstanding
            try:
                while True:
                    if slots is not None:
                        await slots.acquire()
                    try:
                        index, item = next(source)
                    except Exception as exc:
                        if slots is not None:
                            slots.release()  # the next feeder must not wait forever
                        if not isinstance(exc, StopIteration):
                            done.put_nowait(exc)  # the caller's iterable failed
                        return
                    try:
                        run = await self._create_or_failed(item, index)
                    except Exception as exc:  # a bug, not a run's error: never a hang
                        done.put_nowait(exc)
                        return
                    outstanding += 1
                    run._future.add_done_callback(functools.partial(_call_with, finished, run))
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
                    yield item
        finally:
            for task in feeders:
                task.cancel()
            await asyncio.gather(*feeders, return_exceptions=True)

    async def _create_or_failed(self, item: ImageRequest | str, index: int) -> Run:
        try:
            req = self.prepare(item)
            return await self._create(req, index=index)
        except GPTImageError as exc:
            now = self._clock()
            request = item if isinstance(item, ImageRequest) else None
            run = Run(None, self._provider.name, request, created_at=now, deadline=now, index=index)
            run._fail(exc, RunStatus.ERRORED, now)
            return run

    async def _create(
        self,
        request: ImageRequest,
        *,
        index: int | None,
        on_send: Callable[[], None] | None = None,
    ) -> Run:
        assert self._limiter is not None
        body = self._provider.encode_create(request)
        deadline = self._clock() + self._run_timeout
        attempts = 0
        last_error: GPTImageError | None = None
        while True:
            self._check_open()
            with anyio.move_on_at(deadline) as waiting:
                sent_at = await self._limiter.acquire(PRIORITY_CREATE)
            if waiting.cancelled_caught:
                if last_error is not None:
                    raise last_error  # the 429 (or 503) that kept it waiting says why
                raise RunTimeoutError(
                    f"the create could not be sent within run_timeout ({self._run_timeout:g}s)"
                )
            if on_send is not None:
                on_send()
            task = asyncio.get_running_loop().create_task(
                self._send_create(request, body, sent_at, index), name="gptimage-create"
            )
            self._creates.add(task)
            if self._idle is not None:
                self._idle.clear()
            task.add_done_callback(self._create_done)
            # Shielded: a caller cancelled now must not orphan a run being paid for.
            outcome = await asyncio.shield(task)
            if isinstance(outcome, Run):
                return outcome
            last_error = outcome.error
            if not outcome.rate_limited:
                attempts += 1
                self.stats.create_retries += 1
                if attempts >= self._max_attempts:
                    raise outcome.error
            elif self._clock() > deadline:
                raise outcome.error
            logger.debug("create not accepted (%s); sending it again", outcome.error)

    def _create_done(self, task: asyncio.Task[Any]) -> None:
        self._creates.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: the caller may be gone
        self._maybe_idle()

    async def _send_create(
        self, request: ImageRequest, body: bytes, sent_at: float, index: int | None
    ) -> Run | _Retry:
        assert self._transport is not None
        assert self._limiter is not None
        provider = self._provider
        self.stats.requests += 1
        try:
            answer = await self._transport.send("POST", provider.create_path, body)
        except SendError as exc:
            self.stats.connection_errors += 1
            self._limiter.on_server_trouble()
            if not exc.maybe_received or self._resend:
                return _Retry(exc.public())  # SendError is private: users see its public class
            raise self._uncertain(request, str(exc)) from None
        except APIStatusError as exc:  # a redirect the transport would not follow
            return self._create_refused(request, exc, sent_at)
        except ProtocolError as exc:
            raise self._uncertain(request, str(exc)) from None
        status = answer.status
        if 200 <= status < 300:
            self._limiter.on_answer()
            try:
                snapshot = provider.decode_run(answer.body, run_id=None)
            except APIStatusError as exc:
                return self._create_refused(request, exc, sent_at)
            except ProtocolError as exc:
                # A 2xx means the run exists; without its id it cannot be tracked.
                raise self._uncertain(request, f"the answer could not be read: {exc}") from None
            self.stats.creates += 1
            run = Run(
                snapshot.id,
                provider.name,
                request,
                created_at=sent_at,
                deadline=sent_at + self._run_timeout,
                index=index,
            )
            self._track(run)
            assert self._scheduler is not None
            self._scheduler.add(run, rtt=answer.elapsed)
            return run
        error = provider.decode_error(
            status, answer.body, run_id=None, retry_after=parse_retry_after(answer.headers)
        )
        return self._create_refused(request, error, sent_at)

    def _create_refused(
        self, request: ImageRequest, error: APIStatusError, sent_at: float
    ) -> _Retry:
        assert self._limiter is not None
        if isinstance(error, RateLimitError) and not isinstance(error, QuotaExceededError):
            self.stats.rate_limited += 1
            self._limiter.on_rate_limited(sent_at, error.retry_after)
            return _Retry(error, rate_limited=True)
        if error.status_code == 503:
            # Unavailable: refused before any processing, so sending again is safe.
            self.stats.server_errors += 1
            self._limiter.on_server_trouble()
            return _Retry(error)
        if error.status_code >= 500:
            self.stats.server_errors += 1
            self._limiter.on_server_trouble()
            if self._resend:
                return _Retry(error)
            raise self._uncertain(request, f"the provider answered {error}")
        self._limiter.on_answer()
        raise error

    def _uncertain(self, request: ImageRequest, why: str) -> UncertainCreateError:
        self.stats.uncertain_creates += 1
        prompt = request.prompt if len(request.prompt) <= 60 else request.prompt[:57] + "..."
        return UncertainCreateError(
            f"the create for {prompt!r} may have reached {self._provider.name} ({why}); "
            "it was not sent again, to avoid paying twice. Check the provider's dashboard, "
            "or use resend_uncertain_creates=True to resend such creates.",
            prompt=request.prompt,
        )

    def _track(self, run: Run) -> None:
        self.runs.add(run)
        if self._idle is not None:
            self._idle.clear()

    def __repr__(self) -> str:
        # Safe on a half-built session too (its __init__ raised): tracebacks render locals.
        provider = getattr(getattr(self, "_provider", None), "name", "?")
        runs = getattr(self, "runs", None)
        return (
            f"<Session {provider} {getattr(self, '_base_url', '?')} "
            f"{getattr(self, '_state', 'new')} in_flight={len(runs) if runs is not None else 0}>"
        )


def _resolve_key(provider: Provider, api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get(provider.env_var)
    if key is None or not key.strip():
        raise ConfigurationError(
            f"no API key for {provider.name}: pass api_key=... or set {provider.env_var}"
        )
    if not isinstance(key, str) or any(c.isspace() or ord(c) < 32 for c in key.strip()):
        raise ConfigurationError("the API key contains whitespace or control characters")
    return key.strip()


def _check_base_url(url: str) -> str:
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


def _call_with(fn: Callable[[Run], None], run: Run, _future: object) -> None:
    fn(run)


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds")
