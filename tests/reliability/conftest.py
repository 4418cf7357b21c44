"""Shared pieces of the reliability suite: fast simulator settings, a hostile server, leak checks.

The hostile server is a tiny aiohttp application on 127.0.0.1 that speaks
just enough of both providers to create a run, then answers each request
with whatever a test queued: any status, body, content type, header, delay,
a connection reset, a body cut short, or bytes that are not HTTP at all. It
is how the fuzz tests serve what hypothesis draws without mocking HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import itertools
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

import gptimage_async as gi
from gptimage_async._transport._memory import MEMORY_ORIGIN, MemoryTransport
from gptimage_async.simulator import VARIANTS, Simulator, SimulatorConfig
from gptimage_async.simulator._app import ConnectionDropped
from gptimage_async.simulator._listening import close_runner
from gptimage_async.simulator._protocol import Reply
from gptimage_async.testing import TEST_KEYS, memory_session

from .._clock import fake_loop_clock

T = TypeVar("T")
P = ParamSpec("P")

#: Runs of 3-10 provider seconds last 15-50 ms; a 10 s window lasts 50 ms.
TIME_SCALE = 0.005
WINDOW = 10.0 * TIME_SCALE
PROVIDERS = ("runbase", "apiinone")

#: Lines printed under "reliability" at the end of the pytest run (row timings, figures).
REPORT: list[str] = []


def report(line: str) -> None:
    """Keep ``line`` for the end-of-run summary (and print it for ``-s`` runs)."""
    REPORT.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("reliability")
        for line in REPORT:
            terminalreporter.write_line(line)


def sim_config(**overrides: Any) -> SimulatorConfig:
    """Fast, seeded, no rate limit unless asked; every answer variant on (both shapes...)."""
    settings: dict[str, Any] = {
        "time_scale": TIME_SCALE,
        "seed": 20240601,
        "rate_limit": None,
        **VARIANTS,
    }
    settings.update(overrides)
    return SimulatorConfig(**settings)


def session_for(sim: Simulator, provider: str, **options: Any) -> gi.Session:
    """An unopened session against ``sim``; by default it believes in a limit nobody reaches."""
    options.setdefault("api_key", TEST_KEYS[provider])
    options.setdefault("rate_limit", gi.RateLimit(10_000, WINDOW))
    options.setdefault("run_timeout", 60.0)
    return gi.Session(provider, base_url=sim.base_url(provider), **options)  # type: ignore[arg-type]


Wire = Literal["memory", "socket"]


@contextlib.asynccontextmanager
async def simulated(
    provider: str, config: SimulatorConfig, wire: Wire, **options: Any
) -> AsyncIterator[tuple[Simulator, gi.Session]]:
    """A simulator and an open session on it, over ``wire``.

    ``"socket"``: the simulator's HTTP server on 127.0.0.1 and the aiohttp
    transport (real time). ``"memory"``: the same simulator pipeline through
    ``MemoryTransport`` on the loop's clock, so a test on the fake clock runs
    it with no socket and no sleep. Session options as ``session_for``.
    """
    options.setdefault("api_key", TEST_KEYS[provider])
    options.setdefault("rate_limit", gi.RateLimit(10_000, WINDOW))
    options.setdefault("run_timeout", 60.0)
    if wire == "memory":
        async with memory_session(provider, config=config, **options) as pair:  # type: ignore[arg-type]
            yield pair
        return
    async with Simulator(config) as sim, session_for(sim, provider, **options) as session:
        yield sim, session


async def on_wire(wire: Wire, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` (not yet started): on the fake clock, auto-advanced, in
    memory; in real time on a socket. Open the session inside it."""
    if wire == "memory":
        with fake_loop_clock() as clock:
            return await clock.run(awaitable)
    return await awaitable


# -- the hostile server ---------------------------------------------------------------

Action = Literal["send", "reset", "short", "garbage"]


@dataclass(frozen=True)
class Answer:
    """One answer the hostile server gives.

    ``send`` answers normally (after ``delay`` seconds); ``reset`` drops the
    connection with a TCP RST; ``short`` promises more body than it sends,
    then closes; ``garbage`` writes bytes that are not HTTP, then closes.
    """

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    action: Action = "send"


_LINGER_ZERO = struct.pack("ii", 1, 0)
_PATHS = {
    "runbase": ("/runbase/api/v1", "/runs", "/runs/{run_id}"),
    "apiinone": ("/apiinone/api/v1", "/images/generations", "/tasks/{run_id}"),
}


def created_body(provider: str, run_id: str) -> bytes:
    """A well-formed answer to a create."""
    if provider == "runbase":
        payload: dict[str, Any] = {
            "id": run_id,
            "model": "openai/gpt-image-1.5",
            "status": "pending",
        }
    else:
        payload = {
            "code": 200,
            "message": "success",
            "data": {"task_id": run_id, "status": "IN_PROGRESS"},
        }
    return msgspec.json.encode(payload)


def succeeded_body(provider: str, run_id: str) -> bytes:
    """A well-formed answer to a poll of a finished run."""
    url = f"https://images.example/{run_id}.png"
    if provider == "runbase":
        payload: dict[str, Any] = {"id": run_id, "status": "succeeded", "output": {"urls": [url]}}
    else:
        payload = {
            "code": 200,
            "message": "success",
            "data": {"task_id": run_id, "status": "completed", "output": {"urls": [url]}},
        }
    return msgspec.json.encode(payload)


@dataclass
class HostileServer:
    """Creates runs, then answers every request from the queues a test fills.

    An empty create queue means a well-formed create; an empty poll queue
    means "succeeded". ``auth_headers`` records every Authorization header seen.
    """

    creates: collections.deque[Answer] = field(default_factory=collections.deque)
    polls: collections.deque[Answer] = field(default_factory=collections.deque)
    requests: int = 0
    auth_headers: list[str] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        app = web.Application()
        for provider, (root, create, poll) in _PATHS.items():
            app.router.add_post(root + create, self._handler(provider, "create"))
            app.router.add_get(root + poll, self._handler(provider, "poll"))
        # handler_cancellation: a handler still sleeping when the client gave up is
        # cancelled rather than left to write to a dead socket.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.1, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await close_runner(self._runner)
            self._runner = None

    def base_url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.port}{_PATHS[provider][0]}"

    def clear(self) -> None:
        self.creates.clear()
        self.polls.clear()

    async def respond(
        self, method: str, target: str, headers: Any = None, body: bytes = b""
    ) -> Reply:
        """Answer one request in memory, as the HTTP handlers do (``MemoryTransport`` calls it).

        A ``reset`` raises ``ConnectionDropped``, as the simulator's pipeline
        does; ``short`` and ``garbage`` are about bytes on a socket and have
        no in-memory form (``ValueError``).
        """
        path = urlsplit(target).path
        for provider, (root, create, poll) in _PATHS.items():
            poll_root = root + poll.split("{")[0]
            if method == "POST" and path == root + create:
                action, run_id = "create", ""
            elif method == "GET" and path.startswith(poll_root):
                action, run_id = "poll", path[len(poll_root) :]
            else:
                continue
            self.requests += 1
            self.auth_headers.append(dict(headers or {}).get("Authorization", ""))
            answer = self._next(provider, action, run_id)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.action == "reset":
                raise ConnectionDropped
            if answer.action != "send":
                raise ValueError(f"{answer.action!r} answers exist only on a socket")
            reply_body = b"" if answer.status in (204, 304) else answer.body
            return Reply(answer.status, reply_body, answer.content_type, dict(answer.headers))
        return Reply(404, b"404: Not Found", "text/plain")

    def _next(self, provider: str, action: str, run_id: str) -> Answer:
        if action == "create":
            queue, run_id = self.creates, f"run_{next(self._ids)}"
            default = Answer(body=created_body(provider, run_id))
        else:
            queue = self.polls
            default = Answer(body=succeeded_body(provider, run_id))
        return queue.popleft() if queue else default

    def _handler(self, provider: str, action: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.auth_headers.append(request.headers.get("Authorization", ""))
            if action == "create":
                await request.read()
                queue, run_id = self.creates, f"run_{next(self._ids)}"
                default = Answer(body=created_body(provider, run_id))
            else:
                queue, run_id = self.polls, request.match_info["run_id"]
                default = Answer(body=succeeded_body(provider, run_id))
            answer = queue.popleft() if queue else default
            return await self._answer(request, answer)

        return handle

    async def _answer(self, request: web.Request, answer: Answer) -> web.StreamResponse:
        if answer.delay:
            await asyncio.sleep(answer.delay)
        transport = request.transport
        if answer.action != "send" and transport is not None:
            if answer.action == "reset":
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
                transport.abort()
            elif answer.action == "garbage":
                transport.write(answer.body or b"\x00\xffnot http at all\r\n\r\n")
                transport.close()
            else:  # short: a 200 whose Content-Length promises more than comes
                head = (
                    f"HTTP/1.1 {answer.status} OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(answer.body) + 64}\r\n\r\n"
                ).encode()
                transport.write(head + answer.body)
                transport.close()
            # Nothing more can be written; aiohttp drops a response for a closed transport.
            return web.Response()
        headers = dict(answer.headers)
        if answer.status in (204, 304):
            return web.Response(status=answer.status, headers=headers)
        response = web.Response(status=answer.status, body=answer.body, headers=headers)
        if answer.content_type is None:
            response.headers.popall("Content-Type", None)
        else:
            response.headers["Content-Type"] = answer.content_type
        return response


@contextlib.asynccontextmanager
async def hostile_server() -> AsyncIterator[HostileServer]:
    server = HostileServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def memory_hostile_session(server: HostileServer, provider: str, **options: Any) -> gi.Session:
    """An unopened session whose requests ``server`` answers in memory (``MemoryTransport``)."""
    base_url = MEMORY_ORIGIN + _PATHS[provider][0]
    transport = MemoryTransport(
        server,  # type: ignore[arg-type]  # answers as the simulator does: ``respond``
        base_url,
        options["api_key"],
        timeout=options.get("request_timeout", 30.0),
    )
    return gi.Session(provider, base_url=base_url, transport=transport, **options)  # type: ignore[arg-type]


def in_fake_time(test: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run an async test on the fake loop clock, auto-advanced (``FakeClock.run``)."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with fake_loop_clock() as clock:
            return await clock.run(test(*args, **kwargs))

    return run


# -- leak checks ---------------------------------------------------------------------


@dataclass
class LeakWatch:
    """What leaked between ``__aenter__`` and ``__aexit__``.

    ``tasks`` are tasks alive after the block that were not before it;
    ``unraisable`` are exceptions raised where nobody could catch them (a
    ``ResourceWarning`` from ``__del__`` under ``-W error`` lands here);
    ``loop_errors`` are contexts passed to the loop's exception handler
    ("Unclosed client session", "Task exception was never retrieved").
    """

    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    unraisable: list[str] = field(default_factory=list)
    loop_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.tasks, f"tasks left behind: {self.tasks}"
        assert not self.unraisable, f"unraisable exceptions: {self.unraisable}"
        assert not self.loop_errors, f"loop exception handler called: {self.loop_errors}"


@contextlib.asynccontextmanager
async def leak_watch() -> AsyncIterator[LeakWatch]:
    """Record tasks, unraisable exceptions and loop errors that outlive the block."""
    watch = LeakWatch()
    loop = asyncio.get_running_loop()
    before = set(asyncio.all_tasks())
    old_hook = sys.unraisablehook
    old_handler = loop.get_exception_handler()

    def on_unraisable(info: Any) -> None:
        watch.unraisable.append(f"{info.exc_type.__name__}: {info.exc_value} ({info.object!r})")

    def on_loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        watch.loop_errors.append(str(context.get("message")) + " " + repr(context.get("exception")))

    sys.unraisablehook = on_unraisable
    loop.set_exception_handler(on_loop_error)
    try:
        yield watch
        # Let callbacks scheduled by the closing code run, then collect garbage so
        # anything unclosed warns now, inside the watch, not in a later test.
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        current = asyncio.current_task()
        watch.tasks = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
    finally:
        sys.unraisablehook = old_hook
        loop.set_exception_handler(old_handler)
