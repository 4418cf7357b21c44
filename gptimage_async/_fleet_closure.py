"""A lane closed for the whole fleet: one key's closing error shared through Redis.

With ``redis=``, every process on a key shares its budget (``_shared_limiter``).
When one of them meets a closing answer on the key (401, 402, 403, 429
``USAGE_EXCEEDED``: ``_pool._failover``), the others would each pay a
request to learn the same thing. So the closing process writes the error
(status, code, message: what the server said, never the key) under the key's
budget name; the others read it when their lane opens and every
``CHECK_EVERY`` seconds after, and close their lane for new creates with it.

The word lasts ``CLOSED_TTL`` seconds: credits can be topped up and a key
unblocked, and a job started after that must try the key again. Redis not
answering is never an error here: the lane then learns from its own answers,
as without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import msgspec

from ._exceptions import APIStatusError, status_error

__all__ = ["CHECK_EVERY", "CLOSED_TTL", "FleetClosure"]

logger = logging.getLogger("gptimage_async")

#: Seconds a closing error stays shared: long enough for a fleet's job to
#: stop asking, short enough that a key topped up is tried again soon.
CLOSED_TTL = 300.0
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
    longest a Redis call may take (seconds). ``cause`` is the error another
    process closed the key with, once read; ``None`` until then.
    """

    __slots__ = ("_stopping", "_tasks", "cause", "client", "key", "timeout")

    def __init__(self, client: Any, budget: str, *, timeout: float) -> None:
        self.client = client
        self.key = f"gptimage:{{{budget}}}:closed"
        self.timeout = timeout
        self.cause: APIStatusError | None = None
        self._stopping = asyncio.Event()
        # Never cancelled mid-call: a Redis command cancelled in flight can leave
        # the client's connection pool stuck when it is closed. ``aclose`` stops
        # them and waits (each call is bounded by ``timeout``).
        self._tasks: set[asyncio.Task[None]] = set()

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
        try:
            async with asyncio.timeout(self.timeout):
                data = await self.client.get(self.key)
        except Exception as exc:
            logger.debug("could not read the fleet's closed lanes: %s", type(exc).__name__)
            return None
        if data is None:
            return None
        if isinstance(data, str):  # a client made with decode_responses=True
            data = data.encode()
        try:
            word = msgspec.json.decode(data, type=_Word)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        message = f"{word.message} (another process on this key was told so; shared by Redis)"
        return status_error(word.status, message, code=word.code)

    async def watch(self) -> None:
        """Read the fleet's word every ``CHECK_EVERY`` seconds, until the key closes or ``aclose``.

        The read at open is the lane's own; this one keeps it current.
        """
        while self.cause is None and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_EVERY):
                    await self._stopping.wait()
            if not self._stopping.is_set():
                self.cause = await self.read()

    def __repr__(self) -> str:
        return f"<FleetClosure closed={self.cause is not None}>"
