"""A lane closed for the whole fleet: one key's closing error shared through Redis.

With ``redis=``, every process on a key shares its budget (``_shared_limiter``).
When one of them meets a closing answer on the key (401, 402, 403, 429
``USAGE_EXCEEDED``: ``_pool._failover``), the others would each pay a
request to learn the same thing. So the closing process writes the error
(status, code, message: what the server said, never the key) under the key's
budget name; the others read it when their lane opens and every
``CHECK_EVERY`` seconds after, and close their lane for new creates with it.

The word lasts ``CLOSED_TTL`` seconds (``_pool._failover``, the same time a
lane closed without Redis stays closed): credits can be topped up and a key
unblocked, and a job started after that must try the key again. Each
process keeps reading while its lane is closed, so ``cause`` turns back to
``None`` when the word expires (and ``until`` says when it will), and a lane
closed from it is closed until then, not longer. Redis not answering is
never an error here: the lane then learns from its own answers, as without
Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from ._exceptions import APIStatusError, status_error
from ._pool import CLOSED_TTL

__all__ = ["CHECK_EVERY", "CLOSED_TTL", "FleetClosure"]

logger = logging.getLogger("gptimage_async")

#: Seconds between two reads of the fleet's word by an open lane.
CHECK_EVERY = 2.0


class _Word(msgspec.Struct, frozen=True):
    status: int
    code: str | None
    message: str


class FleetClosure:
    """One key's closed state in Redis. Strictly private.

    ``client`` is the shared limiter's Redis client, ``budget`` the key's
    budget name (``budget_id``: an HMAC, never the key), ``timeout`` the
    longest a Redis call may take (seconds), ``clock`` the event loop's
    (default: the running loop's ``time``). ``cause`` is the error another
    process closed the key with, once read, until its word expires
    (``until``, on ``clock``); ``None`` otherwise.
    """

    __slots__ = ("_cause", "_clock", "_stopping", "_tasks", "client", "key", "timeout", "until")

    def __init__(
        self,
        client: Any,
        budget: str,
        *,
        timeout: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.key = f"gptimage:{{{budget}}}:closed"
        self.timeout = timeout
        self._clock = clock or asyncio.get_running_loop().time
        self._cause: APIStatusError | None = None
        #: When (``clock``) the fleet's word read last expires; ``-inf`` when none was read.
        self.until = -math.inf
        self._stopping = asyncio.Event()
        # Never cancelled mid-call: a Redis command cancelled in flight can leave
        # the client's connection pool stuck when it is closed. ``aclose`` stops
        # them and waits (each call is bounded by ``timeout``).
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def cause(self) -> APIStatusError | None:
        """The fleet's closing error for the key until its word expires (``until``); else None."""
        if self._cause is not None and self._clock() >= self.until:
            self._cause = None
        return self._cause

    async def refresh(self) -> None:
        """Read the fleet's word now: ``cause`` and ``until`` follow it (Redis away: kept)."""
        answered, word = await self._read_word()
        if not answered:
            return
        if word is None:
            self._cause, self.until = None, -math.inf
        else:
            self._cause, self.until = word

    def start(self) -> None:
        """Watch the fleet's word in the background until ``aclose``."""
        self._run(self.watch())

    def share(self, cause: APIStatusError) -> None:
        """``publish(cause)`` in the background."""
        self._run(self.publish(cause))

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="gptimage-fleet-closure")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop watching; wait for the calls in flight (at most ``timeout`` each)."""
        self._stopping.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def publish(self, cause: APIStatusError) -> None:
        """Tell the fleet the key is closed by ``cause`` (never raises)."""
        word = _Word(cause.status_code, cause.code, cause.message)
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.set(
                    self.key, msgspec.json.encode(word), px=int(CLOSED_TTL * 1000)
                )
        except Exception as exc:
            logger.debug("could not share the closed lane through Redis: %s", type(exc).__name__)

    async def read(self) -> APIStatusError | None:
        """The fleet's closing error for the key, or ``None`` (none, or Redis away)."""
        _, word = await self._read_word()
        return None if word is None else word[0]

    async def _read_word(self) -> tuple[bool, tuple[APIStatusError, float] | None]:
        # (Redis answered, (error, expiry on the clock) or None when there is no word).
        try:
            async with asyncio.timeout(self.timeout):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.get(self.key)
                    pipe.pttl(self.key)
                    data, ttl_ms = await pipe.execute()
        except Exception as exc:
            logger.debug("could not read the fleet's closed lanes: %s", type(exc).__name__)
            return False, None
        if data is None or ttl_ms == -2:  # -2: gone since the GET
            return True, None
        if isinstance(data, str):  # a client made with decode_responses=True
            data = data.encode()
        try:
            word = msgspec.json.decode(data, type=_Word)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return True, None
        message = f"{word.message} (another process on this key was told so; shared by Redis)"
        # PTTL -1 (no expiry: not written by us) lasts the fleet's TTL from now.
        left = ttl_ms / 1000 if isinstance(ttl_ms, int) and ttl_ms >= 0 else CLOSED_TTL
        return True, (status_error(word.status, message, code=word.code), self._clock() + left)

    async def watch(self) -> None:
        """Read the fleet's word every ``CHECK_EVERY`` seconds until ``aclose``.

        The read at open is the lane's own; this one keeps it current, the
        word's expiry included (a key topped up is tried again after it).
        """
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_EVERY):
                    await self._stopping.wait()
            if not self._stopping.is_set():
                await self.refresh()

    def __repr__(self) -> str:
        return f"<FleetClosure closed={self._cause is not None}>"
