"""One key's request budget shared by every process through Redis.

``SharedLimiter`` implements ``Limiter`` with the key's schedule kept in Redis,
so that four ``uvicorn`` workers, or two bulk scripts, on one API key pace
themselves as one client would:

* **One GCRA timeline per key** (``timeline.py``, ``lua/``): Redis keeps the
  time of the key's next free slot and advances it one interval per grant, on
  its own clock; one ``EVALSHA`` round trip decides one request. No burst.
* **Priorities across processes** (``queue.py``): polls before creates,
  fleet-wide, each process booking one slot at a time.
* **What one process learns, all know.** A 429's ``Retry-After`` or an outage
  backoff pauses the shared timeline and is pushed to every process. Each
  process learns the belief with ``AdaptiveRate`` from the fleet's logs of
  grants and refusals, and writes it back with a compare-and-set (``fleet.py``).
* **Redis down or slow is not an outage** (``fallback.py``). Every call has
  ``timeout``; on a failure the process paces itself at its share of the last
  known belief, logs one warning, keeps probing, and rejoins, its fallback's
  pace kept as a floor for a window (the *handover*). Once started, it never raises
  to its callers because of Redis: no run is lost, no create is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigurationError
from .._models import RateLimit
from .._retry import backoff_delays
from .belief import FLEET_MIN_MARGIN, FLEET_SLOW_START_SPAN, AdaptiveRate
from .evidence import STORM_WINDOWS
from .fallback import LocalFallback
from .fleet import FleetBelief
from .heartbeat import heartbeat, listen, primary_of
from .keys import BudgetKeys, budget_id
from .local import GRANT_AHEAD, RateLimiter
from .options import (
    DEFAULT_REDIS_TIMEOUT,
    check_redis_option,
    connect,
    misconfigured,
    redact_url,
    with_host,
)
from .protocol import PRIORITY_CREATE, SharedBudget
from .queue import Redirect, SlotQueue
from .timeline import Timeline

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SharedLimiter"]

logger = logging.getLogger("gptimage_async")

#: While Redis is away, probe it this often (seconds, and at most this share of a window).
PROBE_EVERY = 0.25
PROBE_WINDOW_SHARE = 0.05
#: A 429 is judged at least this long (seconds) after it came back.
SETTLE = 0.05


class SharedLimiter:
    """Paces one key's requests across every process that names the same Redis. Strictly private.

    ``redis`` is a URL (``redis://``, ``rediss://`` for TLS, ``unix://``) or a
    ``redis.asyncio.Redis`` client (used as given and not closed here).
    ``timeout`` bounds every Redis call, in seconds. ``belief`` is the
    starting belief when Redis holds none yet; the fleet's learned belief wins
    otherwise. Times taken and returned are on the event loop's clock.
    """

    def __init__(
        self,
        belief: RateLimit,
        *,
        provider: str,
        api_key: str,
        redis: str | Redis,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        check_redis_option(redis)
        if not timeout > 0:
            raise ConfigurationError("the Redis timeout must be a positive number of seconds")
        self._start_belief = belief
        self._url = redact_url(redis) if isinstance(redis, str) else None
        self._client: Any = redis
        self._target = redis  # the URL as given (with its password): never shown
        self._owns_client = isinstance(redis, str)
        self._closers: list[Any] = []  # a Sentinel's clients, closed with ours
        self._timeout = float(timeout)
        self._keys = BudgetKeys(budget_id(provider, api_key))
        self.channel = self._keys.events
        self.me = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._state = "new"
        self._syncing = False
        self._warned = False
        self._fallback: LocalFallback | None = None
        self._fallback_since = 0.0
        self._backoff: Iterator[float] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.rate_limited = 0
        self.redis_errors = 0

    # -- the Limiter protocol ----------------------------------------------------

    @property
    def _pacer(self) -> SlotQueue | LocalFallback:
        # Before start() nothing paces: the fleet's belief is read at start.
        return self._fallback or self._queue

    @property
    def rate(self) -> float:
        """The fleet's believed limit (our share of it while Redis is away), requests/s."""
        if self._state == "new":
            return self._start_belief.rate
        return self._pacer.rate

    @property
    def interval(self) -> float:
        """Seconds between two of the key's requests at the current pace, margin included."""
        if self._state == "new":
            return 1.0 / self._start_belief.rate
        return self._pacer.interval

    @property
    def window(self) -> float:
        """The length of the server's counting window the belief is about, in seconds."""
        return float(self._start_belief.per)

    @property
    def waiting(self) -> int:
        """Requests of this process waiting for a slot (speculative polls not counted)."""
        if self._state == "new":
            return 0
        local = self._last_local.waiting if self._last_local is not None else 0
        return self._queue.waiting + local

    @property
    def belief(self) -> AdaptiveRate | None:
        """``None``: the belief is the fleet's and lives in Redis."""
        return None

    @property
    def fleet_belief(self) -> AdaptiveRate:
        """This process's copy of the fleet's belief (after ``start()``; read it, never feed it)."""
        return self._belief

    @property
    def shared(self) -> SharedBudget:
        """The Redis the budget lives in (its client after ``start()``)."""
        return SharedBudget(self._client, self._timeout, self._keys.budget)

    @property
    def client(self) -> Any:
        """The ``redis.asyncio.Redis`` client (after ``start()``); ``aclose()`` closes ours."""
        return self._client

    @property
    def timeout(self) -> float:
        """Seconds every Redis call may take."""
        return self._timeout

    @property
    def fallback(self) -> bool:
        """True while Redis is unreachable and this process paces itself locally."""
        return self._fallback is not None

    @property
    def live_processes(self) -> int:
        """Processes on this budget seen alive at the last Redis answer (at least 1)."""
        return max(1, self._timeline.live) if self._state != "new" else 1

    @property
    def granted(self) -> int:
        """Slots of the shared timeline this process took (not those paced locally)."""
        return self._queue.granted if self._state != "new" else 0

    def next_free(self) -> float:
        """Loop time of the key's next free slot as last seen, ignoring waiters."""
        floor = self._handover()
        return max(self._pacer.next_free(), floor.next_free() if floor else -math.inf)

    def next_spare(self) -> float:
        """Loop time a ``try_acquire(speculative=True)`` may next succeed."""
        floor = self._handover()
        return max(self._pacer.next_spare(), floor.next_free() if floor else -math.inf)

    def try_acquire(self, *, speculative: bool = False) -> bool:
        """Take a slot only if one is free now and nobody in the fleet waits; never blocks.

        Redis cannot be asked synchronously: the first call asks it in the
        background for a slot free now (a *lease*) and returns False; a later
        call takes it.
        """
        if self._state != "open":
            return False
        now = self._loop.time()
        floor = self._handover()
        if floor is not None and (floor.waiting or floor.next_free() > now + GRANT_AHEAD):
            return False
        took = self._pacer.try_acquire(now, speculative=speculative)
        if took and floor is not None:
            floor.try_acquire(speculative=speculative)  # its slot is free: spend it
        return took

    def promote_creates(self) -> int:
        """Creates waiting now go ahead of this process's polls; return how many."""
        moved = self._queue.promote_creates()
        if self._last_local is not None:
            moved += self._last_local.limiter.promote_creates()
        return moved

    async def acquire(self, priority: int = PRIORITY_CREATE) -> float:
        """Wait for a slot (polls before creates, across processes); return its loop time."""
        held = False  # one slot of the handover's floor per request
        while True:
            fallback = self._fallback
            if fallback is None:
                floor = None if held else self._handover()
                if floor is not None:
                    held = True
                    await floor.acquire(priority)  # the fallback's pace, then the fleet's
                    continue  # Redis may be away again meanwhile
                try:
                    return await self._queue.acquire(priority)
                except Redirect:
                    continue
            granted = await fallback.acquire(priority, self._loop.time())
            if granted is not None:
                return granted

    def on_rate_limited(self, sent_at: float, retry_after: float | None) -> None:
        """A 429: pause every process on the key (``retry_after`` seconds, else backoff).

        The fleet's belief then learns from the fleet's logs: a cut, jitter,
        or (a 429 the fleet's pace cannot explain) nothing but the pause.
        """
        self.rate_limited += 1
        now = self._loop.time()
        if self._state == "open":
            self._belief.note_refusal()  # no probing on this window while it is judged
        if self._last_local is not None:
            self._last_local.limiter.on_rate_limited(sent_at, retry_after)
        if retry_after is not None:
            pause = max(retry_after, self.interval)
        else:
            pause = self.interval + next(self._backoff_seq())
        self._queue.pause_until(now + pause)
        self._report(lambda: self._learn_429(sent_at, now, pause))

    async def _learn_429(self, sent_at: float, now: float, pause: float) -> None:
        back = (STORM_WINDOWS + 1) * self.window
        await self._timeline.pause(pause, refused_at=sent_at)
        # The fleet's other refusals of this moment reach Redis a little after
        # ours: read the logs once they are in (a storm is a streak of them).
        await asyncio.sleep(max(SETTLE, min(0.1 * self.window, 4 * self.interval)))
        evidence = await self._timeline.evidence(sent_at, back)
        if evidence.since <= self._started_at + self._timeout:
            # The log began as this process joined: it holds all it knows of.
            evidence = dataclasses.replace(evidence, since=-math.inf)
        await self._fleet.publish(lambda b: b.record_429(sent_at, now, evidence=evidence))

    def on_server_trouble(self) -> None:
        """A 5xx or failed connection: every process on the key backs off (capped at a window)."""
        now = self._loop.time()
        if self._last_local is not None:
            self._last_local.limiter.on_server_trouble()
        pause = next(self._backoff_seq())
        self._queue.pause_until(now + pause)
        self._report(lambda: self._timeline.pause(pause, refused_at=None))

    def on_answer(self) -> None:
        """A good answer: this process's backoff sequence restarts."""
        self._backoff = None
        if self._last_local is not None:
            self._last_local.limiter.on_answer()

    async def start(self) -> None:
        """Connect to Redis, read the fleet's belief, subscribe to its events, start the heartbeat.

        Redis unreachable: it starts in fallback (local pacing), joining when Redis
        answers; a wrong password, user or database number: ``ConfigurationError``.
        """
        if self._state != "new":
            raise RuntimeError("a SharedLimiter starts once")
        loop = self._loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        if self._owns_client:
            self._client, self._closers = connect(self._client, self._timeout)
        self._rejoined = asyncio.Event()
        self._last_local: LocalFallback | None = None
        self._belief = AdaptiveRate(
            self._start_belief, now=loop.time(), min_margin=FLEET_MIN_MARGIN,
            slow_start_span=FLEET_SLOW_START_SPAN,
        )  # fmt: skip
        self._timeline = Timeline(
            self._client, self._keys, me=self.me, window=self.window,
            timeout=self._timeout, clock=loop.time,
        )  # fmt: skip
        self._fleet = FleetBelief(self._belief, self._timeline, loop.time)
        self._queue = SlotQueue(
            self._timeline, self._belief, clock=loop.time,
            on_grant=self._on_grant, on_failure=self._enter_fallback,
        )  # fmt: skip
        self._state = "open"
        for job, name in (
            (self._queue.run(), "gptimage-shared-limiter"),
            (listen(lambda: self._client, self.channel, self._on_event, call_timeout=self._timeout,
                    retry_every=self._probe_every(), on_error=self._count_error),
             "gptimage-shared-events"),
            (heartbeat(self._beat), "gptimage-shared-heartbeat"),
        ):  # fmt: skip
            self._spawn(job, name)
        # Learn the fleet's belief (and whether Redis is there) before the first request.
        try:
            await self._timeline.beat()
            await self._fleet.refresh()
        except Exception as exc:
            if (refused := misconfigured(exc, self._url)) is not None:
                await self.aclose()
                raise ConfigurationError(refused) from None
            self._enter_fallback(exc)

    def close(self) -> None:
        """Cancel every waiter and background task (the session is closing)."""
        if self._state == "open":
            self._queue.close()
            if self._last_local is not None:
                self._last_local.limiter.close()
        self._state = "closed"
        for task in self._bg:
            task.cancel()

    async def aclose(self) -> None:
        """``close()``, then leave the fleet (best effort) and release connections."""
        opened = self._state == "open"
        tasks = list(self._bg)
        self.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if opened and self._fallback is None:
            with contextlib.suppress(Exception):
                await self._timeline.leave()
        if self._owns_client and not isinstance(self._client, str):
            for client in (self._client, *self._closers):
                with contextlib.suppress(Exception):
                    await client.aclose()

    # -- internals -----------------------------------------------------------------

    def _on_grant(self, now: float, saturated: bool, version: int | None) -> None:
        rolled = self._belief.record_send(now, saturated=saturated)
        # One sync in flight at a time: what changes meanwhile goes with the next.
        stale = version is not None and version != self._fleet.version
        if not self._syncing and (stale or (rolled and self._fleet.dirty)):
            self._syncing = self._report(lambda: self._sync(version))

    async def _sync(self, version: int | None) -> None:
        try:
            if version is not None:
                await self._fleet.refresh(seen=version)
            await self._fleet.publish()
            if self._fleet.dirty:  # learned more while that was on its way
                await self._fleet.publish()
        finally:
            self._syncing = False

    def _handover(self) -> RateLimiter | None:
        local = self._last_local if self._state == "open" else None
        return local.floor(self._loop.time()) if local is not None else None

    def _backoff_seq(self) -> Iterator[float]:
        if self._backoff is None:
            self._backoff = backoff_delays(self.interval, cap=self.window)
        return self._backoff

    def _spawn(self, job: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        self._bg.add(task := self._loop.create_task(job, name=name))
        task.add_done_callback(self._bg.discard)

    def _report(self, job: Callable[[], Awaitable[Any]]) -> bool:
        """Tell the fleet in the background (True); Redis away: local only (False)."""
        if self._state != "open" or self._fallback is not None:
            return False
        self._spawn(self._guarded(job))
        return True

    async def _guarded(self, job: Callable[[], Awaitable[Any]]) -> None:
        try:
            await job()
        except Exception as exc:
            self._enter_fallback(exc)

    async def _beat(self) -> None:
        if self._fallback is not None:
            return
        try:
            version = await self._timeline.beat()
            await self._fleet.refresh(seen=version)
        except Exception as exc:  # not CancelledError: a BaseException
            self._enter_fallback(exc)
            return
        if self._timeline.pause_left > 0:
            self._queue.pause_until(self._loop.time() + self._timeline.pause_left)

    def _on_event(self, kind: str, number: float) -> None:
        if kind == "p" and number > 0:
            self._queue.pause_until(self._loop.time() + number)
        elif kind == "r":  # another process's 429, judged a settle later
            self._belief.note_refusal()
        elif kind == "v" and number != self._fleet.version:
            self._report(lambda: self._fleet.refresh(seen=int(number)))

    def _count_error(self) -> None:
        self.redis_errors += 1

    def _probe_every(self) -> float:
        return min(PROBE_EVERY, max(0.01, PROBE_WINDOW_SHARE * self.window))

    # -- fallback ------------------------------------------------------------------

    def _enter_fallback(self, exc: BaseException) -> None:
        self.redis_errors += 1
        if self._fallback is not None or self._state != "open":
            return
        now = self._loop.time()
        self._rejoined.clear()
        self._fallback_since = now
        share = self._timeline.live or None  # never heard from Redis: the fleet is unknown
        # The last fallback's limiter stays open: closing it would cancel its floor's waiters.
        fallback = LocalFallback(
            rate=self._belief.rate, window=self.window, share=share, now=now,
            rejoined=self._rejoined, sent=self._queue.sends,
        )  # fmt: skip
        self._fallback = self._last_local = fallback
        self._queue.serving = False
        fallback.log_start(exc, self._url, self._keys.budget, first=not self._warned)
        self._warned = True
        self._queue.redirect_all()
        self._spawn(self._probe(), "gptimage-shared-probe")

    async def _probe(self) -> None:
        while self._state == "open" and self._fallback is not None:
            await asyncio.sleep(self._probe_every())
            try:
                await self._timeline.beat()
                await self._fleet.refresh()
            except Exception as exc:  # not CancelledError: a BaseException
                self.redis_errors += 1
                if type(exc).__name__ == "ReadOnlyError":
                    await self._follow_primary()
                continue
            self._rejoin()

    async def _follow_primary(self) -> None:
        """A plain URL's Redis is a replica now (a failover): reconnect to the primary its
        ``ROLE`` names, where the fleet meets. Only for a client made here from a URL."""
        target = self._target
        if not self._owns_client or not isinstance(target, str) or target.startswith("redis+"):
            return  # a client given (not ours to replace), or Sentinels (they follow it)
        with contextlib.suppress(Exception):
            primary = await primary_of(self._client, self._timeout)
            if primary is None:
                return
            url = with_host(target, *primary)
            old, self._client, self._closers = self._client, *connect(url, self._timeout)
            self._timeline.rebind(self._client)
            logger.warning(
                "Redis at %s is a replica now (a failover): following its primary %s:%s",
                self._url, *primary,
            )  # fmt: skip
            await old.aclose()

    def _rejoin(self) -> None:
        # Local waiters move to the shared queue, held to the fallback's pace a window.
        if self._fallback is not None:
            self._fallback.hand_over(self._loop.time(), self.window)
        self._fallback = None
        self._rejoined.set()
        self._queue.serving = True
        self._queue.wake()
        back = self._loop.time() - self._fallback_since
        logger.info("Redis is back after %.1fs: sharing the key's budget again", back)

    def __repr__(self) -> str:
        mode = "fallback" if self._fallback is not None else "shared"
        return (
            f"<SharedLimiter {self.rate:.3g}/s {mode} redis={self._url or '<client>'} "
            f"live={self.live_processes} waiting={self.waiting} granted={self.granted} "
            f"rate_limited={self.rate_limited}>"
        )
