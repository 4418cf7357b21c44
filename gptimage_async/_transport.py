"""Sending one HTTP request and reading its answer, with aiohttp.

The transport knows nothing of providers or retries. Its one judgement is
whether a request that failed without an answer may have reached the server,
because a create that did may have been paid for. The rule:

* A request is *possibly received* once aiohttp starts writing it (it calls
  the request's ``send`` with a ready connection, just before the first
  byte goes out). Waiting for a free connection, resolving the host,
  connecting, and a TLS or proxy handshake send nothing of it: a failure or
  a timeout there is a certain "not received", so the create may be sent
  again.
* ``timeout`` bounds the connect phase and, separately, the exchange (write
  the request, read the whole answer). The wait for a free connection (at
  most ``max_connections`` requests at once per pool, a semaphore ahead of
  aiohttp's) is not timed: every request ahead in the queue is itself
  bounded, and a create that timed out while queued would be reported as
  uncertain.
* Creates (POST) are always written on a fresh connection that is closed
  after its answer. A pooled keep-alive connection can be closed by the
  server at any moment; a create written onto one that just died fails
  after being written, and so is uncertain although the server never read
  it. A fresh connection does not have that race, so a failure after the
  request was written on it is a genuine "may have been received".
* Polls (GET) reuse pooled connections: resending them is harmless. A poll
  that fails on a reused connection before any answer is sent once more on a
  fresh one, as the stale connection, not the server, is the likely cause.
* Redirects: a GET redirected within the base URL's origin (scheme, host and
  port) is followed, at most ``MAX_REDIRECTS`` hops, and the key stays on its
  host. Any other redirect is not followed: it becomes an ``APIStatusError``
  naming where it pointed (without credentials or query string).
* Proxies: an explicit ``proxy`` URL, else ``HTTPS_PROXY`` / ``HTTP_PROXY``
  (by the base URL's scheme) or ``ALL_PROXY``, unless ``NO_PROXY`` names the
  host, read once when the transport is made (as httpx does). aiohttp's
  ``trust_env`` is not used: it would also read ``~/.netrc`` on every request
  and send those credentials beside the key.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import urllib.request
import weakref
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

import aiohttp
import msgspec
from aiohttp.connector import Connection
from yarl import URL

from ._exceptions import APIConnectionError, APIStatusError, ConfigurationError, ProtocolError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_REDIRECTS",
    "Answer",
    "Secret",
    "SendError",
    "Transport",
    "check_proxy",
    "display_url",
]

logger = logging.getLogger("gptimage_async")

#: The largest answer body read; a run object is a few hundred bytes.
MAX_BODY_BYTES = 1 << 20
#: Same-origin redirects a poll follows before giving up.
MAX_REDIRECTS = 5
#: How long an idle pooled connection (used by polls only) is kept open.
KEEPALIVE_SECONDS = 15.0

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Answer(msgspec.Struct, frozen=True):
    """An HTTP answer: status, headers (lower-cased names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float


class SendError(APIConnectionError):
    """No answer came. ``maybe_received`` is False only when the request certainly never left.

    Strictly private: the session turns it into ``public()`` (an
    ``APIConnectionError``) or an ``UncertainCreateError`` before a user sees it.
    """

    def __init__(self, message: str, *, maybe_received: bool) -> None:
        super().__init__(message)
        self.maybe_received = maybe_received

    def public(self) -> APIConnectionError:
        """The same failure as the public ``APIConnectionError``."""
        return APIConnectionError(self.message)


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


class _Exchange:
    """How far one request got (told by ``_TrackedRequest`` when it is written), and its clock.

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


#: The exchange the current task is sending, read by ``_TrackedRequest.send``.
_CURRENT: contextvars.ContextVar[_Exchange | None] = contextvars.ContextVar(
    "gptimage_async_exchange", default=None
)


class _TrackedRequest(aiohttp.ClientRequest):
    """aiohttp's request, telling the exchange in progress when it is written.

    aiohttp calls ``send`` once a connection is ready (connected, through any
    proxy tunnel and TLS handshake, or taken from the pool), and ``send``
    writes the request: nothing before it puts a byte of it on the wire.
    aiohttp's tracing signals told the same at several times the CPU.
    """

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        exchange = _CURRENT.get()
        if exchange is not None and self.method != "CONNECT":
            exchange.sending(conn)
        return await super().send(conn)


class Transport:
    """Two aiohttp sessions towards one provider base URL with one key.

    Creates go through a connector that never reuses a connection, polls
    through a pooled one; ``max_connections`` caps each.
    """

    __slots__ = (
        "_base",
        "_base_url",
        "_fresh",
        "_headers",
        "_http",
        "_key",
        "_origin",
        "_pooled",
        "_proxy",
        "_slots",
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
        proxy: str | None = None,
        trust_env: bool = True,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._origin = _origin(self._base_url)
        # Parsed once: a request's URL is then this one with a longer path,
        # not a new string for yarl to parse and quote again (a poll's is new each time).
        base = URL(self._base_url)
        self._base = base if not (base.query_string or base.fragment) else None
        self._key = Secret(api_key)
        self._timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {self._key.reveal()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        self._proxy = _choose_proxy(self._base_url, proxy, trust_env)
        # Our own deadline (see _Exchange) replaces aiohttp's, whose total
        # would also count the wait for a pooled connection.
        no_timeout = aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None)

        def session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
            # Headers live on the ClientSession: merged once, not on every request.
            return aiohttp.ClientSession(
                connector=connector,
                timeout=no_timeout,
                raise_for_status=False,
                headers=self._headers,
                request_class=_TrackedRequest,
            )

        self._http = session(
            aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=KEEPALIVE_SECONDS)
        )
        self._fresh = session(aiohttp.TCPConnector(limit=max_connections, force_close=True))
        # The wait for a free connection is ours, before the clock starts: with
        # at most `max_connections` requests past it, aiohttp's pool never queues.
        self._slots = {
            self._http: asyncio.Semaphore(max_connections),
            self._fresh: asyncio.Semaphore(max_connections),
        }
        self._pooled: weakref.WeakSet[object] = weakref.WeakSet()

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def proxy(self) -> str | None:
        """The proxy requests go through, without its credentials (``None``: direct)."""
        return None if self._proxy is None else display_url(str(self._proxy))

    async def send(self, method: str, path: str, body: bytes | None = None) -> Answer:
        """Send one request; raise ``SendError`` if no complete answer came back.

        A GET follows same-origin redirects; any other redirect raises
        ``APIStatusError``. A body that echoes the API key comes back with the
        key masked, so no error message built from it can carry the key.
        """
        url = self._base_url + path
        target = self._url(path) or url
        started = time.monotonic()
        hops = 0
        while True:
            answer = await self._send_retrying_stale(method, target, path, body)
            if answer.status not in _REDIRECTS:
                break
            location = answer.headers.get("location")
            if location is None:
                break  # no target: the caller reads it as an error status
            try:
                redirect = urljoin(url, location.strip())
            except ValueError:
                redirect = location  # unreadable: shown as such, never followed
            shown = self._redact(display_url(redirect))
            if method != "GET" or _origin(redirect) != self._origin:
                why = "only polls are redirected" if method != "GET" else "it leaves the API host"
                raise APIStatusError(
                    f"{method} {path} was redirected ({answer.status}) to {shown}; "
                    f"not followed: {why}",
                    status_code=answer.status,
                )
            hops += 1
            if hops > MAX_REDIRECTS:
                raise APIStatusError(
                    f"{method} {path} was redirected more than {MAX_REDIRECTS} times "
                    f"(last to {shown})",
                    status_code=answer.status,
                )
            logger.debug("%s %s redirected (%d) to %s", method, path, answer.status, shown)
            url = target = redirect
        elapsed = time.monotonic() - started
        logger.debug("%s %s -> %d (%.3fs)", method, path, answer.status, elapsed)
        return Answer(answer.status, answer.headers, answer.body, elapsed)

    def _url(self, path: str) -> URL | None:
        """The base URL with ``path`` (already quoted) appended; ``None`` if it has a query."""
        base = self._base
        if base is None:
            return None
        return base.with_path(base.raw_path.rstrip("/") + path, encoded=True)

    async def _send_retrying_stale(
        self, method: str, url: URL | str, path: str, body: bytes | None
    ) -> Answer:
        if method != "GET":
            return await self._send_once(self._fresh, method, url, path, body)
        try:
            return await self._send_once(self._http, method, url, path, body)
        except _StaleConnection:
            # The pooled connection had died; a GET is safe to send again, once.
            return await self._send_once(self._fresh, method, url, path, body)

    async def _send_once(
        self,
        http: aiohttp.ClientSession,
        method: str,
        url: URL | str,
        path: str,
        body: bytes | None,
    ) -> Answer:
        failure: SendError | None = None
        exchange = _Exchange(self._timeout, self._pooled if http is self._http else None)
        async with self._slots[http]:  # a free connection: not timed
            token = _CURRENT.set(exchange)
            try:
                # The connect phase has `timeout`; the exchange gets its own once written.
                async with asyncio.timeout(None) as deadline:
                    exchange.start(deadline)
                    try:
                        async with http.request(
                            method, url, data=body, allow_redirects=False, proxy=self._proxy
                        ) as response:
                            payload = await _read_capped(response)
                            headers = {k.lower(): v for k, v in response.headers.items()}
                            status = response.status
                    except aiohttp.ClientError as exc:
                        if exchange.reused and isinstance(
                            exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError
                        ):
                            raise _StaleConnection from None
                        failure = self._failure(method, path, exc, exchange)
                    finally:
                        exchange.stop()
            except TimeoutError:
                failure = SendError(
                    f"{method} {path} timed out: no answer within {self._timeout:g}s",
                    maybe_received=exchange.written,
                )
            finally:
                _CURRENT.reset(token)
        if failure is not None:
            # Raised here, outside the except block, so aiohttp's exception (whose
            # request_info holds the Authorization header) is not kept as context.
            raise failure
        secret = self._key.reveal().encode()
        if secret in payload:
            payload = payload.replace(secret, b"[redacted]")
        return Answer(status, headers, payload, 0.0)

    def _failure(
        self, method: str, path: str, exc: aiohttp.ClientError, exchange: _Exchange
    ) -> SendError:
        if isinstance(exc, aiohttp.ClientConnectorError) and not exchange.written:
            where = "the proxy" if isinstance(exc, aiohttp.ClientProxyConnectionError) else ""
            target = where or self._base_url
            return SendError(f"could not connect to {target}: {exc.os_error}", maybe_received=False)
        text = self._redact(f"{type(exc).__name__}: {exc}")
        # Written or not, say which: a reset before writing is a certain "not received".
        return SendError(f"{method} {path} failed: {text}", maybe_received=exchange.written)

    def _redact(self, text: str) -> str:
        text = text.replace(self._key.reveal(), "[redacted]")
        if self._proxy is not None:
            # An error about the proxy may quote its URL, credentials and all.
            for secret in (
                self._proxy.raw_user,
                self._proxy.user,
                self._proxy.raw_password,
                self._proxy.password,
            ):
                if secret:
                    text = text.replace(secret, "[redacted]")
        return text

    @property
    def closed(self) -> bool:
        return self._http.closed and self._fresh.closed

    async def aclose(self) -> None:
        await self._http.close()
        await self._fresh.close()

    def __repr__(self) -> str:
        via = "" if self._proxy is None else f" via {self.proxy}"
        return f"<Transport {self._base_url}{via}>"


class _StaleConnection(Exception):
    """A GET failed on a reused pooled connection before any answer."""


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


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return "", "", None


def check_proxy(proxy: str) -> str:
    """``proxy`` if it is an http(s) URL with a host; else ``ConfigurationError``."""
    try:
        parts = urlsplit(proxy)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        shown = display_url(proxy) if isinstance(proxy, str) else type(proxy).__name__
        raise ConfigurationError(f"proxy must be an http(s) URL with a host, not {shown!r}")
    return proxy


def _choose_proxy(base_url: str, proxy: str | None, trust_env: bool) -> URL | None:
    if proxy is not None:
        return URL(check_proxy(proxy))  # credentials in the URL are used by aiohttp
    if not trust_env:
        return None
    # As requests and httpx: the scheme's own variable, else ALL_PROXY; NO_PROXY wins.
    parts = urlsplit(base_url)
    found = urllib.request.getproxies()
    chosen = found.get(parts.scheme) or found.get("all")
    if not chosen or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    if "://" not in chosen:
        chosen = "http://" + chosen  # "HTTPS_PROXY=proxy:3128" means an http proxy
    try:
        return URL(check_proxy(chosen))
    except ConfigurationError:
        logger.warning("ignoring the proxy set in the environment: %s", display_url(chosen))
        return None


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
