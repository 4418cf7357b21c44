"""Telling whether a request was written: the moment aiohttp starts sending it.

A request is *possibly received* once aiohttp calls the request's ``send``
with a ready connection (just before the first byte goes out); before that
(waiting for a connection, resolving, connecting, a TLS or proxy handshake)
nothing of it has left. ``_Exchange`` records that moment and runs the
request's two clocks (connect, then exchange); ``_TrackedRequest`` tells it.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref

import aiohttp
from aiohttp.connector import Connection

__all__ = ["CURRENT", "Exchange", "TrackedRequest"]


class Exchange:
    """How far one request got (told by ``TrackedRequest`` when it is written), and its clock.

    ``pooled`` holds the connections (their protocols) of a keep-alive pool
    that carried a request before; ``None`` for a connector that never reuses.
    The connect phase and then the exchange each get ``timeout`` seconds: one
    timer, armed for the first due time, which on firing hands the current due
    time to the request's deadline (so a request that is quick costs one
    timer, not one per phase).
    """

    __slots__ = ("_deadline", "_due", "_loop", "_timer", "pooled", "reused", "timeout", "written")

    def __init__(self, timeout: float, pooled: weakref.WeakSet[object] | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.Timeout | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.timeout = timeout
        self.pooled = pooled
        self.reused = False
        self.written = False

    def start(self, deadline: asyncio.Timeout) -> None:
        """The connect phase begins: ``deadline`` (entered, unarmed) fires when time is up."""
        self._deadline = deadline
        self._due = self._loop.time() + self.timeout
        self._timer = self._loop.call_at(self._due, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._deadline is not None:
            # Past: cancels the request now. Moved on (the exchange began since):
            # the deadline waits for the exchange's own due time.
            self._deadline.reschedule(self._due)

    def sending(self, conn: Connection) -> None:
        """The request is about to be written on ``conn``."""
        pooled, protocol = self.pooled, conn.protocol
        if pooled is not None and protocol is not None:
            if protocol in pooled:
                self.reused = True
            pooled.add(protocol)
        self.written = True  # from here on, bytes of it may reach the server
        self._due = self._loop.time() + self.timeout  # connecting is over: the exchange's own


#: The exchange the current task is sending, read by ``TrackedRequest.send``.
CURRENT: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "gptimage_async_exchange", default=None
)


class TrackedRequest(aiohttp.ClientRequest):
    """aiohttp's request, telling the exchange in progress when it is written.

    aiohttp calls ``send`` once a connection is ready (connected, through any
    proxy tunnel and TLS handshake, or taken from the pool), and ``send``
    writes the request: nothing before it puts a byte of it on the wire.
    aiohttp's tracing signals told the same at several times the CPU.
    """

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        exchange = CURRENT.get()
        if exchange is not None and self.method != "CONNECT":
            exchange.sending(conn)
        return await super().send(conn)


_Exchange = Exchange  # the name the wire tests know
