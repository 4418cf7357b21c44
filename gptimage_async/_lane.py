"""A lane: one provider adapter, API key and base URL, with everything that sends on it.

``LaneRuntime`` is the running lane; ``gptimage_async.Lane`` (``_pool``) is
the user's description of one (provider, key, base URL, prices, label).
A lane owns its transport, rate limiter, poll scheduler, create pipeline and
learned state (loaded when it opens, saved when it closes), and the tasks
they run; it opens and closes them as a unit. ``Session`` holds its lanes
(one today; a pool of keys adds more) and routes each run to one. A run keeps
its lane for life: the lane's own ``runs`` map holds it by id until it is
resolved, and only that lane's scheduler polls it.

What the layers below need of the session above is one small object passed
down, ``Lifecycle`` (``_lifecycle``: open or not, on which event loop, idle
or busy), so the path of a run goes down the layers only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._budget import AdaptiveRate, Limiter, make_limiter
from ._budget.shared_durations import share_durations
from ._config import SessionConfig
from ._create import Creator
from ._exceptions import (
    APIStatusError,
    ConfigurationError,
    GPTImageError,
    RunFailedError,
)
from ._fleet_closure import FleetClosure
from ._images import bind as bind_result
from ._lifecycle import Lifecycle
from ._models import ImageRequest
from ._pool import lane_state_file
from ._registry import RunRegistry
from ._run import Run
from ._scheduler import PollScheduler
from ._state import FileStateStore, RedisStateStore, StateStore, apply_state, capture_state
from ._stats import SessionStats
from ._transport import HTTPTransport, Transport
from ._transport._proxy import check_env_proxy
from ._version import USER_AGENT

if TYPE_CHECKING:
    from ._pool import Lane as PoolLane

__all__ = ["LaneRuns", "LaneRuntime", "seconds_since"]

logger = logging.getLogger("gptimage_async")


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


class LaneRuntime:
    """One (provider adapter, API key, base URL) and what sends on it. Private.

    Built by ``Session`` from its ``SessionConfig`` and one lane of its pool
    (``spec``, a ``gptimage_async.Lane``: provider, key, base URL, starting
    rate); ``open()`` makes the
    transport, limiter, scheduler and creator and loads what was learned,
    ``finish_creates()`` waits for creates on the wire, ``aclose()`` stops the
    lane's tasks, saves what it learned and releases everything.
    """

    def __init__(
        self,
        config: SessionConfig,
        spec: PoolLane,
        *,
        everyone: RunRegistry,
        stats: SessionStats,
        life: Lifecycle,
        several: bool = False,
    ) -> None:
        # The session's options with this lane's provider, key, URL and rate.
        config = dataclasses.replace(
            config,
            provider=spec.provider,
            api_key=spec.api_key,
            base_url=spec.base_url,
            rate_limit=spec.rate_limit,
            lanes=None,
            routing="earliest",
            spend_cap=None,
            state_file=_lane_state_file(config.state_file, spec, several),
        )
        api_key = spec.api_key
        self.spec = spec
        self.config = config
        self.adapter = config.adapter
        self.base_url = config.api_root
        if config.transport is None and config.proxy is None:
            check_env_proxy(self.base_url)  # a bad HTTPS_PROXY: refused now, never bypassed
        # Run.lane names the key by the spec's fingerprint (one length: FINGERPRINT_DIGITS).
        self.fingerprint = spec.fingerprint
        self.runs = LaneRuns(everyone, spec.name)
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
        #: The key's closed state shared through Redis (``redis=`` only).
        self.fleet: FleetClosure | None = None
        #: Told the quality of each run this lane created that ends ``RunFailedError``
        #: (the router refunds its spend); attached runs were paid elsewhere.
        self.on_failed: Callable[[str | None], object] | None = None
        # Ids of the runs attached here and in flight (not created by this session).
        self._attached: set[str] = set()

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
            name=self.spec.label,
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
            await self._join_fleet(self.limiter)
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
            model, remember = self.scheduler.model, config.remember
            self._spawn(share_durations, self.limiter, model, remember, self.scheduler)
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
                lane=self.runs.label,
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

    async def _join_fleet(self, limiter: Limiter) -> None:
        # With Redis, a key closed by another process is closed here too (_fleet_closure).
        shared = limiter.shared
        if shared is not None:
            self.fleet = FleetClosure(shared.client, shared.budget, timeout=shared.timeout)
            await self.fleet.refresh()
            self.fleet.start()

    def publish_closed(self, cause: GPTImageError) -> None:
        """Tell the fleet (with ``redis=``) that this lane's key is closed by ``cause``."""
        if self.fleet is not None and isinstance(cause, APIStatusError):
            self.fleet.share(cause)

    async def _load(self, now: float) -> None:
        if self._store is None or self.scheduler is None:
            return
        learned = await self._store.load(self.adapter.name, self.base_url, key=self._key_id)
        if learned is not None:
            apply_state(
                learned,
                belief=self._belief,
                adaptive=_adaptive(self.limiter),
                model=self.scheduler.model,
                clock_now=now,
                run_timeout=self.config.run_timeout,
            )
            logger.debug(
                "lane %s starts from what was learned: %r", self.spec.label, self.scheduler.model
            )

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

    def attach(
        self,
        run_id: str,
        request: ImageRequest | None,
        now: float,
        created_ago: float | None = None,
    ) -> Run:
        """Track ``run_id`` here and poll it at once (``created_ago``: ``PollScheduler.add``)."""
        assert self.scheduler is not None
        run = Run(
            run_id,
            self.adapter.name,
            request,
            created_at=now,
            deadline=now + self.config.run_timeout,
        )
        self.runs._track(run)
        self._attached.add(run_id)
        self._life.busy()
        self.scheduler.add(run, poll_now=True, created_ago=created_ago)
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
            if self.fleet is not None:
                await self.fleet.aclose()
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
            key=self._key_id,
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
        if run.run_id in self._attached:
            self._attached.discard(run.run_id)
        elif self.on_failed is not None and isinstance(run.error, RunFailedError):
            self.on_failed(run.request.quality if run.request is not None else None)
        if self._life.owner is not None:
            bind_result(run.outcome, self._life.owner)  # Result.save/read fetch through the session
        self.runs._untrack(run)
        if self.scheduler is not None:
            self.scheduler.release(run)
        self._life.settled()

    @property
    def _key_id(self) -> str:
        # Learned state is the key's own: a slow rate learned on one key must not slow another.
        return self.spec.fingerprint

    def __repr__(self) -> str:
        return f"<LaneRuntime {self.spec.label} {self.base_url}>"


def _lane_state_file(
    path: str | os.PathLike[str] | None, spec: PoolLane, several: bool
) -> str | os.PathLike[str] | None:
    """The state file of one lane: ``path`` alone, one file per key in a pool of several.

    ``states.json`` becomes ``states.<fingerprint>-<url tag>.json`` for each
    lane (``_pool.lane_state_file``), so lanes never overwrite each other's file.
    """
    if path is None or not several:
        return path
    return lane_state_file(path, spec)  # keyed by provider, key and base URL


def _adaptive(limiter: Limiter | None) -> AdaptiveRate | None:
    """The local limiter's belief; ``None`` for a shared one (its belief lives in Redis)."""
    return None if limiter is None else limiter.belief


def seconds_since(created_at: float | None) -> float | None:
    """Seconds since the wall-clock ``created_at`` (never negative: clocks differ), or ``None``."""
    if created_at is None:
        return None
    if isinstance(created_at, bool) or not isinstance(created_at, (int, float)):
        raise ConfigurationError(
            f"attach(created_at=...) is a UNIX time in seconds, not {type(created_at).__name__}"
        )
    if not math.isfinite(created_at):
        raise ConfigurationError("attach(created_at=...) must be a finite UNIX time")
    return max(0.0, time.time() - created_at)
