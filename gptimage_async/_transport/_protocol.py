"""The ``Transport`` protocol and what crosses it (answers, send errors, URL helpers).

Re-exported by the package (``gptimage_async._transport``); the implementations
(``_http.py``, ``_memory.py``) import from here, below the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

import msgspec

from .._exceptions import APIConnectionError, TLSCertificateError

__all__ = [
    "ACCEPT_JSON",
    "MAX_BODY_BYTES",
    "MAX_REDIRECTS",
    "Answer",
    "Secret",
    "SendError",
    "Transport",
    "display_url",
    "host_of",
    "origin",
]

#: The largest API answer body read; a run object is a few hundred bytes.
MAX_BODY_BYTES = 1 << 20
#: Redirects followed before giving up.
MAX_REDIRECTS = 5
#: What an API request accepts.
ACCEPT_JSON = "application/json"

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Answer(msgspec.Struct, frozen=True):
    """An HTTP answer: status, headers (lower-cased names), the whole body, seconds it took."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float


class SendError(APIConnectionError):
    """No answer came. ``maybe_received`` is False only when the request certainly never left.

    ``certificate_host`` is set when the server's TLS certificate failed
    verification (the request never left): fatal, never retried.

    Strictly private: the session turns it into ``public()`` (an
    ``APIConnectionError``, or ``TLSCertificateError``) or an
    ``UncertainCreateError`` before a user sees it.
    """

    def __init__(
        self,
        message: str,
        *,
        maybe_received: bool,
        certificate_host: str | None = None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(message)
        self.maybe_received = maybe_received
        self.certificate_host = certificate_host
        #: No connection could be made at all (refused, no route, no such host), as
        #: opposed to one that was slow or cut: what marks a lane unreachable.
        self.unreachable = unreachable

    def public(self) -> APIConnectionError:
        """The same failure as its public class."""
        if self.certificate_host is not None:
            return TLSCertificateError(self.message, host=self.certificate_host)
        error = APIConnectionError(self.message)
        error.__dict__[_UNREACHABLE] = self.unreachable
        return error


_UNREACHABLE = "_gptimage_unreachable"


def could_not_connect(error: BaseException | None) -> bool:
    """Whether ``error`` says no connection could be made at all (``SendError.unreachable``).

    A timeout or a reset is not: the server may be alive and slow, and a lane
    is not called unreachable for it.
    """
    if isinstance(error, SendError):
        return error.unreachable
    return bool(getattr(error, _UNREACHABLE, False))


class Transport(Protocol):
    """Sends one request and returns its whole answer.

    ``send`` raises:

    * ``SendError`` when no complete answer came (refused, reset, cut,
      timed out, TLS refused), with ``maybe_received``;
    * ``ProtocolError`` when an answer came but cannot be read (a header
      over the limit, a ``Content-Encoding`` that cannot be decoded, a body
      over ``max_bytes``): the server did act on the request;
    * ``APIStatusError`` for a redirect it will not follow (a POST, or a
      request carrying the key sent off the API origin);
    * ``SessionClosedError`` once ``aclose`` was called (nothing is sent).

    A body that echoes the API key comes back with the key masked.
    """

    @property
    def base_url(self) -> str:
        """The API root; a target path is appended to it."""
        ...

    @property
    def closed(self) -> bool: ...

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
        """Send ``method`` to ``target`` (a path under ``base_url`` or an absolute URL).

        ``time_limit`` (seconds) overrides the transport's own for this request:
        connect, then write and read the whole answer, each get that long.
        """
        ...

    async def aclose(self) -> None: ...


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


def display_url(url: str) -> str:
    """``url`` without user info or query string: safe for a message or a log line."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<an unreadable URL>"
    if ":" in host:
        host = f"[{host}]"
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, lower-cased, the port defaulted by scheme."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return "", "", None


def host_of(url: str) -> str:
    """The host of ``url`` for a message (``"?"`` if unreadable)."""
    return origin(url)[1] or "?"
