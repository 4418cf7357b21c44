"""``HTTPTransport``: one HTTP request and its whole answer, with aiohttp.

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
* GETs (polls, images) reuse pooled connections: resending them is harmless.
  A GET that fails on a reused connection before any answer is sent once
  more on a fresh one, as the stale connection, not the server, is the
  likely cause.
* The key goes only to the base URL's origin. A GET that carries it follows
  redirects within that origin (at most ``MAX_REDIRECTS`` hops); one that
  does not (an image on a CDN) follows any http(s) redirect, and gets the
  key at no hop off the API origin. Any other redirect is not followed: it
  becomes an ``APIStatusError`` naming where it pointed (without
  credentials or query string).
* Reading what curl and browsers read: headers up to ``MAX_HEADER_BYTES``
  (aiohttp's default is 8 KiB), and every ``Content-Encoding`` this process
  can decode, which is exactly what ``Accept-Encoding`` advertises (gzip and
  deflate; br and zstd when their decoder is installed). An answer that
  still cannot be read is a ``ProtocolError`` naming why: the server did
  answer, so a create's run may exist.
* A TLS certificate that fails verification is a ``SendError`` with
  ``certificate_host`` set: fatal for everyone above, never retried.
* Proxies: an explicit ``proxy`` URL, else ``HTTPS_PROXY`` / ``HTTP_PROXY``
  (by the target's scheme) or ``ALL_PROXY``, unless ``NO_PROXY`` names the
  host; the environment is read once when the transport is made (as httpx
  does), and applied per target host (an image host may be in ``NO_PROXY``
  while the API is not). aiohttp's ``trust_env`` is not used: it would also
  read ``~/.netrc`` on every request and send those credentials beside the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
import weakref
from urllib.parse import urljoin

import aiohttp
from aiohttp import compression_utils
from yarl import URL

from .._exceptions import APIStatusError, ProtocolError, SessionClosedError
from ._protocol import (
    ACCEPT_JSON,
    MAX_BODY_BYTES,
    MAX_REDIRECTS,
    Answer,
    Secret,
    SendError,
    display_url,
    host_of,
    origin,
)
from ._proxy import check_proxy, env_proxy
from ._written import CURRENT, Exchange, TrackedRequest

__all__ = ["ACCEPT_ENCODING", "MAX_HEADER_BYTES", "HTTPTransport", "check_proxy"]

logger = logging.getLogger("gptimage_async")

#: How long an idle pooled connection (used by GETs only) is kept open.
KEEPALIVE_SECONDS = 15.0
#: The longest status line or header field read, in bytes: curl's limit for
#: a whole header block (``CURL_MAX_HTTP_HEADER``), where aiohttp's is 8 KiB.
MAX_HEADER_BYTES = 100 * 1024
#: Header fields read per answer (aiohttp's default is 128).
MAX_HEADERS = 512
#: The encodings this process can decode, and so advertises.
ACCEPT_ENCODING = ", ".join(
    ["gzip", "deflate"]
    + (["br"] if getattr(compression_utils, "HAS_BROTLI", False) else [])
    + (["zstd"] if getattr(compression_utils, "HAS_ZSTD", False) else [])
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class HTTPTransport:
    """Two aiohttp sessions, towards one provider base URL (with its key) and any image host.

    Creates go through a connector that never reuses a connection, GETs
    through a pooled one; ``max_connections`` caps each. ``timeout`` is the
    default per request (seconds). ``api_key`` ``None``: no key is ever sent
    (``base_url`` may then be ``""``, and every target absolute). ``name``
    (a lane's label, never the key) begins its debug log lines. Implements
    ``Transport``.
    """

    __slots__ = (
        "_api_headers",
        "_base",
        "_base_url",
        "_env_proxies",
        "_fresh",
        "_header_sets",
        "_http",
        "_key",
        "_name",
        "_origin",
        "_pooled",
        "_proxies",
        "_proxy",
        "_slots",
        "_timeout",
    )

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float,
        max_connections: int,
        user_agent: str,
        proxy: str | None = None,
        trust_env: bool = True,
        name: str | None = None,
    ) -> None:
        self._name = f"{name}: " if name else ""
        self._base_url = base_url.rstrip("/")
        self._origin = origin(self._base_url)
        # Parsed once: a request's URL is then this one with a longer path,
        # not a new string for yarl to parse and quote again (a poll's is new each time).
        base = URL(self._base_url)
        self._base = base if not (base.query_string or base.fragment) else None
        # No key (a download() of its own): no Authorization to any host.
        self._key = Secret(api_key or "\x00no key\x00")
        self._timeout = timeout
        self._api_headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self._header_sets: dict[tuple[bool, str, bool], dict[str, str]] = {}
        self._proxy = None if proxy is None else URL(check_proxy(proxy))
        self._env_proxies: dict[str, str] = urllib.request.getproxies() if trust_env else {}
        self._proxies: dict[tuple[str, str, int | None], URL | None] = {}
        # A bad proxy in the environment is refused now, before any request (or connection).
        self._proxy_for(self._origin)
        # Our own deadline (see _Exchange) replaces aiohttp's, whose total
        # would also count the wait for a pooled connection.
        no_timeout = aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None)
        common = {"User-Agent": user_agent, "Accept-Encoding": ACCEPT_ENCODING}

        def session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=connector,
                timeout=no_timeout,
                raise_for_status=False,
                headers=common,
                request_class=TrackedRequest,
                max_line_size=MAX_HEADER_BYTES,
                max_field_size=MAX_HEADER_BYTES,
                max_headers=MAX_HEADERS,
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
        """The proxy API requests go through, without its credentials (``None``: direct)."""
        chosen = self._proxy_for(self._origin)
        return None if chosen is None else display_url(str(chosen))

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
        if self.closed:  # aiohttp would raise a bare RuntimeError
            raise SessionClosedError("the transport is closed (its session was closed)")
        absolute = "://" in target[:10]
        url = target if absolute else self._base_url + target
        shown = display_url(url) if absolute else target
        # A path is under the base URL: its origin is known without parsing (polls).
        where = origin(url) if absolute else self._origin
        keyed = where == self._origin
        address: URL | str = url if absolute else (self._url(target) or url)
        started = time.monotonic()
        hops = 0
        while True:
            answer = await self._send_retrying_stale(
                method,
                address,
                shown,
                body,
                self._headers(where, accept, body is not None),
                self._proxy_for(where),
                time_limit or self._timeout,
                max_bytes,
            )
            if answer.status not in _REDIRECTS:
                break
            location = answer.headers.get("location")
            if location is None:
                break  # no target: the caller reads it as an error status
            try:
                redirect = urljoin(url, location.strip())
            except ValueError:
                redirect = location  # unreadable: shown as such, never followed
            named = self._redact(display_url(redirect))
            why = _refuse_redirect(method, redirect, keyed=keyed, api=self._origin)
            if why is not None:
                raise APIStatusError(
                    f"{method} {shown} was redirected ({answer.status}) to {named}; "
                    f"not followed: {why}",
                    status_code=answer.status,
                )
            hops += 1
            if hops > MAX_REDIRECTS:
                raise APIStatusError(
                    f"{method} {shown} was redirected more than {MAX_REDIRECTS} times "
                    f"(last to {named})",
                    status_code=answer.status,
                )
            logger.debug(
                "%s%s %s redirected (%d) to %s", self._name, method, shown, answer.status, named
            )
            url = address = redirect
            where = origin(redirect)  # each hop gets the key only if it is on the API origin
        elapsed = time.monotonic() - started
        logger.debug("%s%s %s -> %d (%.3fs)", self._name, method, shown, answer.status, elapsed)
        return Answer(answer.status, answer.headers, answer.body, elapsed)

    def _url(self, path: str) -> URL | None:
        """The base URL with ``path`` (already quoted) appended; ``None`` if it has a query."""
        base = self._base
        if base is None:
            return None
        return base.with_path(base.raw_path.rstrip("/") + path, encoded=True)

    def _headers(
        self, where: tuple[str, str, int | None], accept: str, has_body: bool
    ) -> dict[str, str]:
        """The request's own headers (made once per kind, then reused)."""
        keyed = where == self._origin
        kind = (keyed, accept, has_body)
        headers = self._header_sets.get(kind)
        if headers is None:
            headers = {"Accept": accept}
            if has_body:
                headers["Content-Type"] = "application/json"
            if keyed:
                headers.update(self._api_headers)  # the key: to the API's origin only
            self._header_sets[kind] = headers
        return headers

    async def _send_retrying_stale(
        self,
        method: str,
        url: URL | str,
        shown: str,
        body: bytes | None,
        headers: dict[str, str],
        proxy: URL | None,
        time_limit: float,
        max_bytes: int,
    ) -> Answer:
        args = (method, url, shown, body, headers, proxy, time_limit, max_bytes)
        if method != "GET":
            return await self._send_once(self._fresh, *args)
        try:
            return await self._send_once(self._http, *args)
        except _StaleConnection:
            # The pooled connection had died; a GET is safe to send again, once.
            return await self._send_once(self._fresh, *args)

    async def _send_once(
        self,
        http: aiohttp.ClientSession,
        method: str,
        url: URL | str,
        shown: str,
        body: bytes | None,
        headers: dict[str, str],
        proxy: URL | None,
        time_limit: float,
        max_bytes: int,
    ) -> Answer:
        failure: SendError | ProtocolError | None = None
        exchange = Exchange(time_limit, self._pooled if http is self._http else None)
        async with self._slots[http]:  # a free connection: not timed
            token = CURRENT.set(exchange)
            try:
                # The connect phase has `timeout`; the exchange gets its own once written.
                async with asyncio.timeout(None) as deadline:
                    exchange.start(deadline)
                    try:
                        async with http.request(
                            method,
                            url,
                            data=body,
                            headers=headers,
                            allow_redirects=False,
                            proxy=proxy,
                        ) as response:
                            payload = await _read_capped(response, max_bytes)
                            answer_headers = {k.lower(): v for k, v in response.headers.items()}
                            status = response.status
                    except aiohttp.ClientError as exc:
                        if exchange.reused and isinstance(
                            exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError
                        ):
                            raise _StaleConnection from None
                        failure = self._failure(method, shown, str(url), exc, exchange, proxy)
                    except ProtocolError as exc:
                        failure = exc
                    finally:
                        exchange.stop()
            except TimeoutError:
                failure = SendError(
                    f"{method} {shown} timed out: no answer within {time_limit:g}s",
                    maybe_received=exchange.written,
                )
            finally:
                CURRENT.reset(token)
        if failure is not None:
            # Raised here, outside the except block, so aiohttp's exception (whose
            # request_info holds the Authorization header) is not kept as context.
            raise failure
        secret = self._key.reveal().encode()
        if secret in payload:
            payload = payload.replace(secret, b"[redacted]")
        return Answer(status, answer_headers, payload, 0.0)

    def _failure(
        self,
        method: str,
        shown: str,
        url: str,
        exc: aiohttp.ClientError,
        exchange: Exchange,
        proxy: URL | None,
    ) -> SendError | ProtocolError:
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            host = host_of(url)
            return SendError(
                f"the TLS certificate of {host} failed verification "
                f"({exc.certificate_error}); not retried: check the base URL, "
                "the system's trusted certificates (SSL_CERT_FILE) or a proxy that intercepts TLS",
                maybe_received=False,
                certificate_host=host,
            )
        if isinstance(exc, aiohttp.ClientConnectorError) and not exchange.written:
            # Through a proxy, the only connection made is to the proxy: its name not
            # resolving, or nothing listening, is the proxy's failure, not the API's.
            where = f"the proxy at {proxy.host}:{proxy.port}" if proxy is not None else ""
            if not where and isinstance(exc, aiohttp.ClientProxyConnectionError):
                where = "the proxy"
            target = where or display_url(url if "://" in shown else self._base_url)
            return SendError(
                f"could not connect to {target}: {exc.os_error}",
                maybe_received=False,
                unreachable=True,
            )
        unreadable = _unreadable(exc)
        if unreadable is not None:
            # An answer came: the server acted on the request; we cannot read what it said.
            return ProtocolError(f"the answer to {method} {shown} could not be read: {unreadable}")
        text = self._redact(f"{type(exc).__name__}: {exc}", proxy)
        # Written or not, say which: a reset before writing is a certain "not received".
        return SendError(f"{method} {shown} failed: {text}", maybe_received=exchange.written)

    def _proxy_for(self, key: tuple[str, str, int | None]) -> URL | None:
        """The proxy for an origin: the explicit one, else the environment's (cached)."""
        if self._proxy is not None:
            return self._proxy
        if key not in self._proxies:
            self._proxies[key] = env_proxy(self._env_proxies, key[0], key[1])
        return self._proxies[key]

    def _redact(self, text: str, proxy: URL | None = None) -> str:
        text = text.replace(self._key.reveal(), "[redacted]")
        for used in (self._proxy, proxy):
            if used is None:
                continue
            # An error about the proxy may quote its URL, credentials and all.
            for secret in (used.raw_user, used.user, used.raw_password, used.password):
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
        via = "" if self.proxy is None else f" via {self.proxy}"
        return f"<HTTPTransport {self._base_url}{via}>"


class _StaleConnection(Exception):
    """A GET failed on a reused pooled connection before any answer."""


def _refuse_redirect(
    method: str, redirect: str, *, keyed: bool, api: tuple[str, str, int | None]
) -> str | None:
    """Why a redirect to ``redirect`` is not followed, or ``None`` to follow it."""
    if method != "GET":
        return "only GET requests are redirected"
    where = origin(redirect)
    if keyed and where != api:
        return "it leaves the API host"
    if where[0] not in ("http", "https") or not where[1]:
        return "it is not an http(s) URL"
    return None


def _unreadable(exc: aiohttp.ClientError) -> str | None:
    """Why an answer that arrived could not be read, or ``None`` if ``exc`` is not that."""
    cause = exc.__cause__
    if isinstance(exc, aiohttp.ClientPayloadError) and type(cause).__name__ == (
        "ContentEncodingError"
    ):
        return f"its Content-Encoding cannot be decoded ({cause})"
    if isinstance(exc, aiohttp.ClientResponseError) and exc.status == 400:
        # aiohttp's parser refused the status line or headers (too long, malformed).
        return exc.message or "a malformed status line or header"
    return None


#: ``Content-Encoding`` values aiohttp decodes here (``identity``: none at all).
_DECODABLE = frozenset(
    ["identity", "gzip", "x-gzip", "deflate"] + [e.strip() for e in ACCEPT_ENCODING.split(",")]
)


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    coding = response.headers.get("Content-Encoding", "").strip().lower()
    if coding and any(c.strip() not in _DECODABLE for c in coding.split(",")):
        # aiohttp would hand over the encoded bytes as if they were the body.
        raise ProtocolError(
            f"the answer could not be read: its Content-Encoding {coding!r} cannot be "
            f"decoded here (we asked for {ACCEPT_ENCODING!r})",
            status_code=response.status,
        )
    length = response.content_length
    if length is not None and length > max_bytes and not response.headers.get("Content-Encoding"):
        raise ProtocolError(
            f"answer of {length} bytes is over the {max_bytes}-byte cap",
            status_code=response.status,
        )
    if length is not None and not response.headers.get("Content-Encoding"):
        return await response.read()  # the usual case: one read, size known
    # Read in pieces, so a huge (or decompressed) body cannot fill memory.
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise ProtocolError(
                f"answer is over the {max_bytes}-byte cap", status_code=response.status
            )
        chunks.append(chunk)
    return b"".join(chunks)
