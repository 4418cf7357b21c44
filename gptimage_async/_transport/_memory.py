"""``MemoryTransport``: each request handed to a simulator's pipeline in this process.

No socket and no thread: ``send`` awaits the simulator's ``respond`` (the
very pipeline its HTTP server runs), so a test on the fake loop clock
(``tests/_clock.py``) sees every timeout, slow answer and ``Retry-After`` in
fake time, with no sleep. What is about sockets maps to what the aiohttp
transport would report: a connection the simulator resets
(``Faults.reset``, ``Faults.reset_after_create``) is a ``SendError`` with
``maybe_received=True`` (the request was written; the client cannot tell
whether it had effect), a slow answer past the timeout likewise, and a URL
outside the simulator's origin cannot be connected to (``maybe_received``
False). Keep-alive faults have no socket to close and do nothing here.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urljoin

from .._exceptions import APIStatusError, ProtocolError, SessionClosedError
from .._version import USER_AGENT
from ..simulator import Simulator
from ..simulator._app import ConnectionDropped
from ._protocol import (
    ACCEPT_JSON,
    MAX_BODY_BYTES,
    MAX_REDIRECTS,
    Answer,
    Secret,
    SendError,
    display_url,
    origin,
)

__all__ = ["MEMORY_ORIGIN", "MemoryTransport"]

logger = logging.getLogger("gptimage_async")

#: Where the in-memory simulator lives: a loopback name; no request leaves this process.
MEMORY_ORIGIN = "http://localhost"

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class MemoryTransport:
    """A ``Transport`` onto ``simulator`` (started or not) in memory.

    ``base_url`` is the API root, on ``MEMORY_ORIGIN`` by default (the
    simulator's image URLs are then on it too); ``timeout`` the seconds a
    request may take, read on the loop's clock.
    """

    __slots__ = ("_base_url", "_closed", "_headers", "_key", "_origin", "_sim", "_timeout")

    def __init__(
        self,
        simulator: Simulator,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        user_agent: str = USER_AGENT,
    ) -> None:
        self._sim = simulator
        self._base_url = base_url.rstrip("/")
        self._origin = origin(self._base_url)
        self._key = Secret(api_key or "\x00no key\x00")
        self._timeout = timeout
        self._headers = {"User-Agent": user_agent}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._closed = False

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        *,
        accept: str = ACCEPT_JSON,
        time_limit: float | None = None,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> Answer:
        """Send one request; see ``Transport.send``."""
        url = target if "://" in target[:10] else self._base_url + target
        shown = target if url != target else display_url(url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, payload = await self._once(
                method, url, shown, body, accept, time_limit
            )
            location = headers.get("location")
            if status not in _REDIRECTS or location is None:
                break
            redirect = urljoin(url, location)
            if method != "GET" or origin(redirect) != self._origin:
                raise APIStatusError(
                    f"{method} {shown} was redirected ({status}) to {display_url(redirect)}; "
                    "not followed",
                    status_code=status,
                )
            url = redirect
        else:
            raise APIStatusError(
                f"{method} {shown} was redirected more than {MAX_REDIRECTS} times",
                status_code=status,
            )
        if len(payload) > max_bytes:
            raise ProtocolError(
                f"answer of {len(payload)} bytes is over the {max_bytes}-byte cap",
                status_code=status,
            )
        secret = self._key.reveal().encode()
        if secret in payload:
            payload = payload.replace(secret, b"[redacted]")
        elapsed = loop.time() - started
        logger.debug("%s %s -> %d (%.3fs, in memory)", method, shown, status, elapsed)
        return Answer(status, headers, payload, elapsed)

    async def _once(
        self,
        method: str,
        url: str,
        shown: str,
        body: bytes | None,
        accept: str,
        time_limit: float | None,
    ) -> tuple[int, dict[str, str], bytes]:
        if self._closed:
            raise SessionClosedError("the transport is closed (its session was closed)")
        if origin(url) != self._origin:
            raise SendError(
                f"could not connect to {display_url(url)}: only the simulator is reachable "
                "in memory",
                maybe_received=False,
                unreachable=True,
            )
        headers = {**self._headers, "Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        limit = time_limit or self._timeout
        failure: SendError | None = None
        try:
            async with asyncio.timeout(limit):
                reply = await self._sim.respond(method, url, headers, body or b"")
        except TimeoutError:
            failure = SendError(
                f"{method} {shown} timed out: no answer within {limit:g}s", maybe_received=True
            )
        except ConnectionDropped:
            failure = SendError(
                f"{method} {shown} failed: the connection was reset", maybe_received=True
            )
        if failure is not None:
            raise failure
        answer_headers = {k.lower(): v for k, v in reply.headers.items()}
        if reply.content_type is not None:
            answer_headers["content-type"] = reply.content_type
        return reply.status, answer_headers, reply.body

    async def aclose(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        return f"<MemoryTransport {self._base_url}>"
