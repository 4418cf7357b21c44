"""The request pipeline: every API request passes the same steps in order.

1. **Faults that strike first** (outage, 5xx, reset): nothing happens on the
   server, not even rate-limit accounting.
2. **Auth** (revoked keys answer 401), then the key's block list, then the
   **rate limit** (per key, so it needs a key; an unauthenticated request
   costs nothing).
3. **The work**: validate and create (the key's quota, credits and spend
   limit, at the key's price), or look the run up (only the key that created
   a run may see it, and not before ``read_lag``).
4. **Faults that strike after**: the run exists, but the answer is lost,
   replaced by a bare 500, or truncated.
5. **Slowness**, then the answer is sent and, if it told the client its run
   was done, ``first_seen_done_at`` is stamped.

``SimulatorService.respond`` is the pipeline without a socket: method, path,
headers and body in, a ``Reply`` out (or ``ConnectionDropped`` for the
faults that are about sockets). The aiohttp handlers wrap it, and so does
``gptimage_async._transport.MemoryTransport``, which lets a client run on it
in the same process, on a fake clock.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gptimage_async.simulator._apiinone import ApiInOne
from gptimage_async.simulator._config import SimulatorConfig
from gptimage_async.simulator._faults import (
    other_run_reply,
    reset_connection,
    roll,
    server_error,
    truncate,
    with_bom,
)
from gptimage_async.simulator._png import IMAGE_SIZES, render_png
from gptimage_async.simulator._protocol import ApiError, Dialect, Reply
from gptimage_async.simulator._ratelimit import SlidingWindowLimiter, format_retry_after
from gptimage_async.simulator._runbase import Runbase
from gptimage_async.simulator._runs import SimulatedRuns
from gptimage_async.simulator._stats import SimulatorStats
from gptimage_async.simulator._watch import Watch

__all__ = ["BASE_PATHS", "ConnectionDropped", "Incoming", "SimulatorService"]

BASE_PATHS = {"runbase": "/runbase/api/v1", "apiinone": "/apiinone/api/v1"}

_Action = Literal["create", "poll"]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionDropped(Exception):
    """The connection was reset on purpose, after the request was read: nothing is answered.

    Over a socket the handler resets it (a real TCP RST); in memory it stands
    for the same: the client cannot tell whether the request had effect.
    """


_Reset = ConnectionDropped


@dataclass
class Incoming:
    """A request as the pipeline reads it: the few ``web.Request`` attributes it uses."""

    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    match_info: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "http"
    host: str = "simulator.invalid"

    async def read(self) -> bytes:
        return self.body

    @classmethod
    def of(cls, request: web.Request, body: bytes) -> Incoming:
        # From the URL, not `request.host`: a request through a forward proxy comes
        # in absolute form, and aiohttp's `host` then drops its port.
        url = request.url
        host = url.raw_host or request.host
        if ":" in host:
            host = f"[{host}]"
        if url.explicit_port is not None:
            host = f"{host}:{url.explicit_port}"
        return cls(
            request.method,
            request.path,
            body,
            request.headers,
            request.query,
            request.match_info,
            request.scheme,
            host,
        )


class SimulatorService:
    """Server-side state and the aiohttp handlers that act on it.

    ``config`` may be replaced at any moment; every request reads it afresh.
    """

    def __init__(
        self, config: SimulatorConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = random.Random(config.seed)
        self.stats = SimulatorStats()
        self.registry = SimulatedRuns(self.rng, clock)
        self.limiter = SlidingWindowLimiter(clock)
        self.started_at = clock()
        self.manual_outage = False
        self.revoked: set[str] = set()
        """Keys answered 401 from now on (``Simulator.revoke``)."""
        self.watch = Watch()
        """Told after each step that changes the counters (``Simulator.until``)."""

    def __repr__(self) -> str:
        return f"<SimulatorService {self.registry!r} {self.limiter!r}>"

    # -- wiring -----------------------------------------------------------

    def build_app(self) -> web.Application:
        """The aiohttp application serving both providers and the image files."""
        app = web.Application()
        runbase, apiinone = Runbase(), ApiInOne()
        rb, aio = BASE_PATHS["runbase"], BASE_PATHS["apiinone"]
        app.router.add_post(f"{rb}/runs", self._endpoint(runbase, "create"))
        app.router.add_get(f"{rb}/runs/{{run_id}}", self._endpoint(runbase, "poll"))
        app.router.add_post(f"{aio}/images/generations", self._endpoint(apiinone, "create"))
        app.router.add_get(f"{aio}/tasks/{{run_id}}", self._endpoint(apiinone, "poll"))
        app.router.add_get(r"/files/{run_id}/{index:\d+}.png", self._file)
        return app

    def _endpoint(self, dialect: Dialect, action: _Action) -> _Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            incoming = Incoming.of(request, await request.read())
            try:
                reply = await self._handle(incoming, dialect, action)
            except ConnectionDropped:
                reset_connection(request)
                return web.Response()  # never written: the transport is gone
            response = _response(reply)
            faults = self.config.faults
            if dialect.name in faults.applies_to and roll(self.rng, faults.keepalive_close):
                delay = self.config.scaled(faults.keepalive_close_after)
                return await self._close_soon(request, response, delay)
            return response

        return handler

    async def respond(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        """Answer one request without a socket: the pipeline the HTTP server runs.

        ``target``: an absolute URL (its scheme and host become the image
        URLs' base) or a path with its query. Raises ``ConnectionDropped``
        where the server would reset the connection. Unknown paths answer
        404 and known paths with another method 405, as the HTTP server does.
        """
        parts = urlsplit(target)
        incoming = Incoming(
            method.upper(),
            parts.path,
            body,
            CIMultiDictProxy(CIMultiDict(headers or {})),
            dict(parse_qsl(parts.query)),
            scheme=parts.scheme or "http",
            host=parts.netloc or "simulator.invalid",
        )
        for pattern, route_method, route in self._routes:
            found = pattern.fullmatch(incoming.path)
            if found is None:
                continue
            if route_method != incoming.method:
                return Reply(405, b"405: Method Not Allowed", "text/plain")
            incoming.match_info = found.groupdict()
            if route is None:
                return self._file_reply(incoming)
            return await self._handle(incoming, *route)
        return Reply(404, b"404: Not Found", "text/plain")

    @functools.cached_property
    def _routes(
        self,
    ) -> list[tuple[re.Pattern[str], str, tuple[Dialect, _Action] | None]]:
        rb, aio = BASE_PATHS["runbase"], BASE_PATHS["apiinone"]
        runbase, apiinone = Runbase(), ApiInOne()
        return [
            (re.compile(f"{rb}/runs"), "POST", (runbase, "create")),
            (re.compile(f"{rb}/runs/(?P<run_id>[^/]+)"), "GET", (runbase, "poll")),
            (re.compile(f"{aio}/images/generations"), "POST", (apiinone, "create")),
            (re.compile(f"{aio}/tasks/(?P<run_id>[^/]+)"), "GET", (apiinone, "poll")),
            (re.compile(r"/files/(?P<run_id>[^/]+)/(?P<index>\d+)\.png"), "GET", None),
        ]

    # -- the pipeline -----------------------------------------------------

    def in_outage(self) -> bool:
        """Whether requests are answered 503 right now."""
        if self.manual_outage:
            return True
        outage = self.config.faults.outage
        if outage is None:
            return False
        elapsed = self.clock() - self.started_at
        return self.config.scaled(outage[0]) <= elapsed < self.config.scaled(outage[1])

    def _fault(self, name: str) -> None:
        self.stats.faults[name] += 1

    async def _handle(self, request: Incoming, dialect: Dialect, action: _Action) -> Reply:
        stats = self.stats
        stats.requests += 1
        if action == "create":
            stats.create_requests += 1
        else:
            stats.polls += 1
        self.watch.notify()
        config = self.config
        faults = config.faults
        faulty = dialect.name in faults.applies_to
        reply = self._strike_first(request, action) if faulty else None
        if reply is None:
            reply = await self._work(request, dialect, action, config)
            self.watch.notify()
            if faulty:
                reply = self._strike_after(request, action, reply)
        if faulty and roll(self.rng, faults.slow):
            self._fault("slow")
            await asyncio.sleep(config.scaled(faults.slow_seconds))
        if faulty and reply.content_type == "application/json" and roll(self.rng, faults.bom):
            self._fault("bom")
            reply = with_bom(reply)
        self._sent(reply, request)
        self.watch.notify()
        return reply

    async def _close_soon(
        self, request: web.Request, response: web.Response, delay: float
    ) -> web.StreamResponse:
        # The answer goes out first, saying keep-alive; the connection dies `delay` later.
        transport = request.transport
        response.headers["Connection"] = "keep-alive"
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionResetError:
            return response  # the client came back on a connection already closing
        if transport is not None:
            self._fault("keepalive_close")
            asyncio.get_running_loop().call_later(delay, transport.close)
        return response

    def _strike_first(self, request: Incoming, action: _Action) -> Reply | None:
        faults = self.config.faults
        if self.in_outage():
            self._fault("outage")
            return server_error(503, self.rng)
        if action == "create" and roll(self.rng, faults.create_5xx):
            self._fault("create_5xx")
            return server_error(503, self.rng)
        if (
            action == "poll"
            and "redirected" not in request.query
            and roll(self.rng, faults.poll_redirect)
        ):
            self._fault("poll_redirect")
            return Reply(307, headers={"Location": f"{request.path}?redirected=1"})
        if action == "poll" and roll(self.rng, faults.poll_5xx):
            self._fault("poll_5xx")
            return server_error(self.rng.choice((500, 502, 503)), self.rng)
        if roll(self.rng, faults.reset):
            self._fault("reset")
            raise _Reset
        return None

    def _strike_after(self, request: Incoming, action: _Action, reply: Reply) -> Reply:
        if not reply.ok:
            return reply
        faults = self.config.faults
        if action == "create":
            if roll(self.rng, faults.reset_after_create):
                self._fault("reset_after_create")
                raise _Reset
            if roll(self.rng, faults.create_500_after_effect):
                self._fault("create_500_after_effect")
                return Reply(500)
        if roll(self.rng, faults.truncated_json):
            self._fault("truncated_json")
            return truncate(reply)
        return reply

    def _sent(self, reply: Reply, request: Incoming) -> None:
        self.stats.status_counts[reply.status] += 1
        if reply.terminal:
            run = self.registry.runs[request.match_info["run_id"]]
            if run.first_seen_done_at is None:
                run.first_seen_done_at = self.clock()

    async def _work(
        self, request: Incoming, dialect: Dialect, action: _Action, config: SimulatorConfig
    ) -> Reply:
        key_stats = None
        try:
            key = self._authenticate(request, dialect, config)
            key_stats = self.stats.key(key)
            if action == "create":
                key_stats.create_requests += 1
            else:
                key_stats.polls += 1
            if key in self.revoked:
                raise ApiError("invalid_api_key", "This API key has been revoked.")
            self._rate_limit(key, config)
            if action == "create":
                reply = await self._create(request, dialect, key, config)
            else:
                reply = self._poll(request, dialect, key, config)
        except ApiError as err:
            reply = dialect.error(err, config, self.rng)
            if err.retry_after is not None:
                value = format_retry_after(config.retry_after, err.retry_after, time.time())
                if value is not None:
                    reply.headers["Retry-After"] = value
        if key_stats is not None:
            key_stats.status_counts[reply.status] += 1
        return reply

    def _poll(
        self, request: Incoming, dialect: Dialect, key: str, config: SimulatorConfig
    ) -> Reply:
        # Another key's run is "not found", as on the real providers; so is a
        # run younger than the read side's lag.
        run = self.registry.lookup(request.match_info["run_id"], dialect.name, key)
        if (
            run is None
            or self.clock() - run.created_at < config.scaled(config.read_lag)
            or self._lagging(run.created_at, dialect, config)
        ):
            raise ApiError("not_found", "Run not found.")
        run.polls += 1
        if dialect.name in config.faults.applies_to and roll(self.rng, config.faults.other_run):
            self._fault("other_run")
            return other_run_reply(run, self.registry, dialect, self.clock(), config, self.rng)
        return dialect.status(run, self.clock(), config, self.rng)

    def _lagging(self, created_at: float, dialect: Dialect, config: SimulatorConfig) -> bool:
        lag = config.faults.read_lag
        if not lag or dialect.name not in config.faults.applies_to:
            return False
        if self.clock() - created_at >= config.scaled(lag):
            return False
        self._fault("read_lag")
        return True

    def _authenticate(self, request: Incoming, dialect: Dialect, config: SimulatorConfig) -> str:
        header = request.headers.get("Authorization", "").strip()
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if not header or (scheme.lower() == "bearer" and not key):
            raise ApiError("missing_api_key", "Missing API key.")
        if scheme.lower() != "bearer":
            raise ApiError("invalid_api_key", "Authorization must use the Bearer scheme.")
        if config.api_keys is not None:
            valid = key in config.api_keys
        else:
            valid = key.startswith(dialect.key_prefix) and len(key) > len(dialect.key_prefix)
        if not valid:
            raise ApiError("invalid_api_key", "Invalid API key.")
        if key in config.blocked_keys:
            raise ApiError("ip_not_allowed", "Requests from this IP are not allowed.")
        return key

    def _rate_limit(self, key: str, config: SimulatorConfig) -> None:
        limits = config.limits(key)
        if limits.rate_limit is None:
            return
        wait = self.limiter.acquire(
            key, limits.rate_limit, config.scaled(limits.rate_window), config.count_rejected
        )
        if wait is not None:
            self.stats.rate_limited += 1
            self.stats.key(key).rate_limited += 1
            raise ApiError("rate_limited", "Rate limit exceeded.", retry_after=wait)

    async def _create(
        self, request: Incoming, dialect: Dialect, key: str, config: SimulatorConfig
    ) -> Reply:
        wanted = dialect.parse_create(await request.read())
        registry = self.registry
        limits = config.limits(key)
        if limits.quota is not None and registry.creates(key) >= limits.quota:
            raise ApiError("usage_exceeded", "Usage quota for this API key is exhausted.")
        cost = limits.prices[wanted.quality]
        spent = registry.spent(key)
        if limits.credits is not None and limits.credits - spent < cost:
            raise ApiError("insufficient_balance", f"Insufficient credits: {cost} needed.")
        if limits.spend_limit is not None and spent + cost > limits.spend_limit:
            raise ApiError("spend_limit_exceeded", "This API key's spend limit is reached.")
        run = registry.create(
            run_id=registry.new_id(dialect.id_prefix),
            protocol=dialect.name,
            key=key,
            prompt=wanted.prompt,
            aspect_ratio=wanted.aspect_ratio,
            quality=wanted.quality,
            input_urls=wanted.input_urls,
            cost=cost,
            file_base=f"{request.scheme}://{request.host}",
            config=config,
        )
        self.stats.creates += 1
        self.stats.runs_per_prompt[run.prompt] += 1
        key_stats = self.stats.key(key)
        key_stats.creates += 1
        key_stats.runs_per_prompt[run.prompt] += 1
        return dialect.created(run, self.clock(), config, self.rng)

    # -- files ------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.StreamResponse:
        reply = self._file_reply(Incoming.of(request, b""))
        if reply.status == 404:
            raise web.HTTPNotFound(text="image not found")
        return _response(reply)

    def _file_reply(self, request: Incoming) -> Reply:
        self.stats.file_requests += 1
        self.watch.notify()
        run = self.registry.runs.get(request.match_info["run_id"])
        index = int(request.match_info["index"])
        if run is None or index >= len(run.urls) or run.state(self.clock()) != "succeeded":
            return Reply(404, b"image not found", "text/plain")
        png = run.images.get(index)
        if png is None:
            width, height = IMAGE_SIZES[run.aspect_ratio]
            png = run.images[index] = render_png(run.prompt, width, height, index)
        return Reply(200, png, "image/png")


def _response(reply: Reply) -> web.Response:
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=reply.headers,
    )
