"""A lane: one provider adapter, API key and base URL, with everything that sends on it.

A lane owns its transport, rate limiter, poll scheduler, create pipeline and
learned state (loaded when it opens, saved when it closes), and the tasks
they run; it opens and closes them as a unit. ``Session`` holds its lanes
(one today; a pool of keys adds more) and routes each run to one. A run keeps
its lane for life: the lane's own ``runs`` map holds it by id until it is
resolved, and only that lane's scheduler polls it.

What the layers below need of the session above is one small object passed
down, ``Lifecycle`` (open or not, on which event loop, idle or busy), so the
path of a run goes down the layers only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any, Literal

from ._budget import AdaptiveRate, Limiter, make_limiter
from ._config import SessionConfig
from ._create import Creator
from ._exceptions import SessionClosedError, WrongEventLoopError
from ._images import bind as bind_result
from ._manifest import key_fingerprint
from ._models import ImageRequest, RunStatus
from ._registry import RunRegistry
from ._run import Run
from ._scheduler import PollScheduler
from ._state import FileStateStore, RedisStateStore, StateStore, apply_state, capture_state
from ._stats import SessionStats
from ._transport import HTTPTransport, Secret, Transport
from ._version import USER_AGENT

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["Lane", "LaneRuns", "Lifecycle", "LimiterView", "SchedulerView"]

logger = logging.getLogger("gptimage_async")

State = Literal["new", "open", "closing", "closed"]


class Lifecycle:
    """A session's state as its lanes see it: open or not, its loop, idle or busy.

    ``check_open`` raises ``SessionClosedError`` unless the session is open,
    and ``WrongEventLoopError`` when called from a loop other than the one
    that opened it (asyncio objects cannot cross loops). ``busy`` / ``settled``
    are told when work starts and may have ended; ``idle`` is set while no
    run is tracked and no create is on the wire.
    """

    __slots__ = ("_creating", "_runs", "idle", "loop", "owner", "state")

    def __init__(self, runs: RunRegistry, owner: Session | None = None) -> None:
        self.state: State = "new"
        # The session results are fetched through (``Result.save`` / ``read``).
        self.owner = owner
        self.loop: asyncio.AbstractEventLoop | None = None
        self.idle: asyncio.Event | None = None
        self._runs = runs
        self._creating: list[Collection[object]] = []

    def open(self) -> None:
        """Mark the session open on the running loop."""
        self.loop = asyncio.get_running_loop()
        self.state = "open"
        self.idle = asyncio.Event()
        self.idle.set()

    def watch(self, creates: Collection[object]) -> None:
        """Count ``creates`` (a lane's attempts on the wire) as work in flight."""
        self._creating.append(creates)

    def check_loop(self) -> None:
        """Raise ``WrongEventLoopError`` unless called from the loop that opened the session."""
        if self.loop is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            where = "another event loop" if running is not None else "outside any event loop"
            raise WrongEventLoopError(
                f"this Session was opened in one event loop and used from {where}; "
                "its connections and timers belong to the first loop. Open one Session "
                "per event loop (per thread, per asyncio.run)"
            )

    def check_open(self) -> None:
        """Raise unless the session is open and this is its loop."""
        if self.state != "open":
            state = "not open yet" if self.state == "new" else "closed"
            raise SessionClosedError(f"the session is {state}; use 'async with Session(...)'")
        self.check_loop()

    def busy(self) -> None:
        if self.idle is not None:
            self.idle.clear()

    def abandon(self) -> None:
        """End every run still in flight with ``SessionClosedError``; keep and name them.

        They stay in ``runs.abandoned``, each with its run id, and one WARNING
        names them all: after a Ctrl-C it may be the only record of runs paid for.
        """
        left = list(self._runs)
        for run in left:
            run._fail(
                SessionClosedError(
                    f"the session was closed before run {run.run_id} was resolved "
                    f"(last seen {run.status.value}); it may still finish: attach() it "
                    "from another session",
                    run_id=run.run_id,
                ),
                RunStatus.ERRORED,
            )
            self._runs._abandon(run)
        if left:
            logger.warning(
                "closing with %d run(s) still in flight; they may still finish, attach() "
                "them from the next process (session.runs.abandoned holds them): %s",
                len(left),
                ", ".join(str(run.run_id) for run in left),
            )

    def settled(self) -> None:
        if self.idle is not None and not self._runs and not any(self._creating):
            self.idle.set()


class LaneRuns(RunRegistry):
    """A lane's runs in flight, by id; each is also in the session's registry."""

    __slots__ = ("_all", "label")

    def __init__(self, everyone: RunRegistry, label: str) -> None:
        super().__init__()
        self._all = everyone
        #: ``provider:fingerprint``, stamped on every run the lane tracks.
        self.label = label

    def _track(self, run: Run) -> None:
        if run._lane is None:
            run._lane = self.label
        super()._track(run)
        self._all._track(run)

    def _untrack(self, run: Run) -> None:
        super()._untrack(run)
        self._all._untrack(run)


class Lane:
    """One (provider adapter, API key, base URL) and what sends on it. Private.

    Built by ``Session`` from its ``SessionConfig``; ``open()`` makes the
    transport, limiter, scheduler and creator and loads what was learned,
    ``finish_creates()`` waits for creates on the wire, ``aclose()`` stops the
    lane's tasks, saves what it learned and releases everything.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        api_key: Secret,
        everyone: RunRegistry,
        stats: SessionStats,
        life: Lifecycle,
    ) -> None:
        self.config = config
        self.adapter = config.adapter
        self.base_url = config.api_root
        self.fingerprint = key_fingerprint(self.adapter.name, api_key.reveal())
        self.runs = LaneRuns(everyone, f"{self.adapter.name}:{self.fingerprint}")
        self._key = api_key
        self._stats = stats
        self._life = life
        self._belief = config.starting_rate
        # Where learned state lives between sessions: a file here; with redis,
        # open() puts the shared store in front of it (the file is its fallback).
        self._store: StateStore | None = (
            FileStateStore(config.state_file)
            if config.state_file is not None and config.remember
            else None
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.transport: Transport | None = None
        self.limiter: Limiter | None = None
        self.scheduler: PollScheduler | None = None
        self.creator: Creator | None = None

    async def open(self) -> None:
        """Open the lane; on any failure, release what was opened and raise."""
        config = self.config
        clock = asyncio.get_running_loop().time
        self.transport = config.transport or HTTPTransport(
            self.base_url,
            self._key.reveal(),
            timeout=config.request_timeout,
            max_connections=config.max_connections,
            user_agent=config.user_agent or USER_AGENT,
            proxy=config.proxy,
        )
        try:
            self.limiter = make_limiter(
                self._belief,
                provider=self.adapter.name,
                api_key=self._key.reveal(),
                redis=config.redis,
            )
            await self.limiter.start()
            self._share_store(self.limiter)
            self.scheduler = PollScheduler(
                provider=self.adapter,
                transport=self.transport,
                limiter=self.limiter,
                stats=self._stats,
                spawn=self._spawn,
                on_resolved=self._resolved,
                lookup=self.runs.get,
                max_polls_in_flight=config.max_connections,
            )
            await self._load(clock())
            self.creator = Creator(
                provider=self.adapter,
                transport=self.transport,
                limiter=self.limiter,
                scheduler=self.scheduler,
                registry=self.runs,
                stats=self._stats,
                clock=clock,
                run_timeout=config.run_timeout,
                max_attempts=config.max_create_attempts,
                resend_uncertain=config.resend_uncertain_creates,
                check_open=self._life.check_open,
                on_busy=self._life.busy,
                on_settled=self._life.settled,
            )
            self._life.watch(self.creator.in_flight)
            self._spawn(self.scheduler.run_forever)
        except BaseException:
            await self.aclose()
            raise

    def _share_store(self, limiter: Limiter) -> None:
        # A budget shared through Redis keeps the learned state next to it.
        shared = limiter.shared
        if self.config.remember and shared is not None:
            self._store = RedisStateStore(
                shared.client,
                budget=shared.budget,
                timeout=shared.timeout,
                fallback=self._store,
            )

    async def _load(self, now: float) -> None:
        if self._store is None or self.scheduler is None:
            return
        learned = await self._store.load(self.adapter.name, self.base_url)
        if learned is not None:
            apply_state(
                learned,
                belief=self._belief,
                adaptive=_adaptive(self.limiter),
                model=self.scheduler.model,
                clock_now=now,
                run_timeout=self.config.run_timeout,
            )
            logger.debug("lane starts from what was learned: %r", self.scheduler.model)

    async def create(
        self,
        request: ImageRequest,
        *,
        index: int | None,
        on_send: Callable[[], None] | None = None,
        ahead_of_polls: bool = False,
    ) -> Run:
        """Create a run for ``request`` (validated) on this lane; see ``Session.submit``."""
        assert self.creator is not None  # open() made it; the session checked it is open
        return await self.creator.create(
            request, index=index, on_send=on_send, ahead_of_polls=ahead_of_polls
        )

    def attach(self, run_id: str, request: ImageRequest | None, now: float) -> Run:
        """Track ``run_id`` on this lane and poll it at once."""
        assert self.scheduler is not None
        run = Run(
            run_id,
            self.adapter.name,
            request,
            created_at=now,
            deadline=now + self.config.run_timeout,
        )
        self.runs._track(run)
        self._life.busy()
        self.scheduler.add(run, poll_now=True)
        return run

    async def finish_creates(self) -> None:
        """Wait for creates already on the wire, so their runs get an id to report."""
        if self.creator is not None and self.creator.in_flight:
            await asyncio.gather(*self.creator.in_flight, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the lane's tasks, save what it learned, close its limiter and transport.

        Closing twice is harmless (a lane that failed to open closed itself).
        """
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._save()
        finally:
            if self.limiter is not None:
                await self.limiter.aclose()
            if self.transport is not None:
                await self.transport.aclose()

    async def _save(self) -> None:
        """Save what this lane learned, if it has somewhere to and sent anything."""
        if self._store is None or self.scheduler is None or self.limiter is None:
            return
        if not self._stats.requests:
            return  # nothing learned: keep the state as it was
        state = capture_state(
            provider=self.adapter.name,
            base_url=self.base_url,
            belief=self._belief,
            adaptive=_adaptive(self.limiter),
            model=self.scheduler.model,
            clock_now=asyncio.get_running_loop().time(),
        )
        try:
            await self._store.save(state)
        except OSError as exc:  # a full disk or a read-only cache must not fail a close
            logger.warning("could not save the learned state to %r: %s", self._store, exc)

    def _spawn(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
    ) -> None:
        task = asyncio.get_running_loop().create_task(fn(*args), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resolved(self, run: Run) -> None:
        if self._life.owner is not None:
            bind_result(run.outcome, self._life.owner)  # Result.save/read fetch through the session
        self.runs._untrack(run)
        if self.scheduler is not None:
            self.scheduler.release(run)
        self._life.settled()

    def __repr__(self) -> str:
        return f"<Lane {self.adapter.name} {self.base_url}>"


def _adaptive(limiter: Limiter | None) -> AdaptiveRate | None:
    """The local limiter's belief; ``None`` for a shared one (its belief lives in Redis)."""
    return None if limiter is None else limiter.belief


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
