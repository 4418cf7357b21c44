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
import logging
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

    __slots__ = ("cause", "client", "key", "timeout")

    def __init__(self, client: Any, budget: str, *, timeout: float) -> None:
        self.client = client
        self.key = f"gptimage:{{{budget}}}:closed"
        self.timeout = timeout
        self.cause: APIStatusError | None = None

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
        """Read the fleet's word now and every ``CHECK_EVERY`` seconds until the key closes."""
        while self.cause is None:
            self.cause = await self.read()
            if self.cause is None:
                await asyncio.sleep(CHECK_EVERY)

    def __repr__(self) -> str:
        return f"<FleetClosure closed={self.cause is not None}>"
