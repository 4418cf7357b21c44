"""Sending one HTTP request and reading its answer, with aiohttp.

The transport knows nothing of providers or retries. Its one judgement is
whether a request that failed without an answer may have reached the server,
because a create that did may have been paid for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import aiohttp
import msgspec

from ._exceptions import APIConnectionError, ProtocolError

__all__ = ["MAX_BODY_BYTES", "Answer", "Secret", "SendError", "Transport"]

logger = logging.getLogger("gptimage_async")

#: The largest answer body read; a run object is a few hundred bytes.
MAX_BODY_BYTES = 1 << 20


class Answer(msgspec.Struct, frozen=True):
    """An HTTP answer: status, headers (lower-cased names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float


class SendError(APIConnectionError):
    """No answer came. ``maybe_received`` is False only when the request certainly never left."""

    def __init__(self, message: str, *, maybe_received: bool) -> None:
        super().__init__(message)
        self.maybe_received = maybe_received


class Secret:
    """Holds the API key so that no repr, log or traceback can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class Transport:
    """One aiohttp session towards one provider base URL with one key."""

    __slots__ = (
        "_base_url",
        "_headers",
        "_http",
        "_key",
        "_timeout",
    )

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float,
        max_connections: int,
        user_agent: str,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._key = Secret(api_key)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {
            "Authorization": f"Bearer {self._key.reveal()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=15.0)
        # Headers live on the ClientSession: merged once, not on every request.
        self._http = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            raise_for_status=False,
            headers=self._headers,
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    async def send(self, method: str, path: str, body: bytes | None = None) -> Answer:
        """Send one request; raise ``SendError`` if no complete answer came back.

        A body that echoes the API key comes back with the key masked, so no
        error message built from it can carry the key.
        """
        url = self._base_url + path
        started = time.monotonic()
        failure: SendError | None = None
        try:
            async with self._http.request(
                method, url, data=body, allow_redirects=False
            ) as response:
                payload = await _read_capped(response)
                headers = {k.lower(): v for k, v in response.headers.items()}
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            # The connection was never made: the request certainly did not arrive.
            failure = SendError(
                f"could not connect to {self._base_url}: {exc.os_error}", maybe_received=False
            )
        except TimeoutError:
            failure = SendError(
                f"{method} {path} timed out after {self._timeout.total:g}s",
                maybe_received=True,
            )
        except aiohttp.ClientError as exc:
            # Reset, disconnect, bad payload: the server may have acted on it.
            failure = SendError(
                f"{method} {path} failed: {type(exc).__name__}: {exc}", maybe_received=True
            )
        if failure is not None:
            # Raised here, outside the except block, so aiohttp's exception (whose
            # request_info holds the Authorization header) is not kept as context.
            raise failure
        secret = self._key.reveal().encode()
        if secret in payload:
            payload = payload.replace(secret, b"[redacted]")
        elapsed = time.monotonic() - started
        logger.debug("%s %s -> %d (%.3fs)", method, path, status, elapsed)
        return Answer(status, headers, payload, elapsed)

    async def aclose(self) -> None:
        await self._http.close()

    def __repr__(self) -> str:
        return f"<Transport {self._base_url}>"


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    length = response.content_length
    if length is not None:
        if length > MAX_BODY_BYTES:
            raise ProtocolError(
                f"answer of {length} bytes is over the {MAX_BODY_BYTES}-byte cap",
                status_code=response.status,
            )
        return await response.read()  # the usual case: one read, size known
    # No Content-Length (chunked): read in pieces, so a huge body cannot fill memory.
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProtocolError(
                f"answer is over the {MAX_BODY_BYTES}-byte cap", status_code=response.status
            )
        chunks.append(chunk)
    return b"".join(chunks)
