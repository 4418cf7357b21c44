"""Small real servers on 127.0.0.1 for the wire tests: no HTTP object is mocked.

``RawServer`` speaks HTTP/1.1 by hand over asyncio streams, so a test can do
what aiohttp's server would not: promise ``Connection: keep-alive`` and close
the socket a moment later. ``ForwardProxy`` is an HTTP forward proxy for
``http://`` targets: it records each request line and relays the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gptimage_async.simulator._listening import close_server

__all__ = ["ForwardProxy", "RawServer", "Request", "forward_proxy", "raw_server", "read_request"]


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request:
    """One HTTP/1.1 request read off ``reader``: its head, then a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body)


#: What a handler returns: status, extra headers, body.
Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[Request], Awaitable[Reply]]


@dataclass(kw_only=True)
class _LoopbackServer:
    """A TCP server on a free 127.0.0.1 port, serving each connection with ``_serve``."""

    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            await close_server(self._server)  # not while an accept waits for its transport
            # A connection accepted just before starts its handler a loop turn later.
            for _ in range(3):
                await asyncio.sleep(0)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class RawServer(_LoopbackServer):
    """Answers with ``handler``; then closes each connection ``close_after`` s later."""

    handler: Handler
    close_after: float | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        closer: asyncio.TimerHandle | None = None
        try:
            while True:
                request = await read_request(reader)
                if closer is not None:
                    closer.cancel()
                self.requests.append(request)
                status, extra, payload = await self.handler(request)
                out = [f"HTTP/1.1 {status} X", f"Content-Length: {len(payload)}"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                if not any(k.lower() == "connection" for k in extra):
                    out.append("Connection: keep-alive")
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
                if self.close_after is not None:
                    closer = asyncio.get_running_loop().call_later(self.close_after, writer.close)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@contextlib.asynccontextmanager
async def raw_server(
    handler: Handler, *, close_after: float | None = None
) -> AsyncIterator[RawServer]:
    server = RawServer(handler, close_after)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def runbase_handler(
    *, create_delay: Callable[[Request], float] = lambda r: 0.0
) -> tuple[Handler, list[str]]:
    """A minimal Runbase: creates (after ``create_delay``), polls answer succeeded.

    Returns the handler and the list of prompts it created runs for.
    """
    created: list[str] = []
    ids = itertools.count()

    async def handle(request: Request) -> Reply:
        json_type = {"Content-Type": "application/json"}
        if request.method == "POST":
            prompt = json.loads(request.body)["input"]["prompt"]
            created.append(prompt)
            delay = create_delay(request)
            if delay:
                await asyncio.sleep(delay)
            body = {"id": f"run_{next(ids)}", "status": "pending"}
            return 200, json_type, json.dumps(body).encode()
        run_id = request.target.rsplit("/", 1)[-1]
        body = {"id": run_id, "status": "succeeded", "output": {"urls": [f"https://i.x/{run_id}"]}}
        return 200, json_type, json.dumps(body).encode()

    return handle, created


@dataclass
class ForwardProxy(_LoopbackServer):
    """An HTTP forward proxy for ``http://`` targets (absolute-form request lines)."""

    request_lines: list[str] = field(default_factory=list)
    proxy_authorizations: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            first, _, rest = head.decode("latin-1").partition("\r\n")
            self.request_lines.append(first)
            for line in rest.split("\r\n"):
                if line.lower().startswith("proxy-authorization:"):
                    self.proxy_authorizations.append(line.partition(":")[2].strip())
            target = urlsplit(first.split(" ")[1])
            up_reader, upstream = await asyncio.open_connection(target.hostname, target.port)
            upstream.write(head)
            # Relay both ways until either side closes; the upstream keeps the
            # absolute-form request line, which HTTP/1.1 servers must accept.
            # Each later request on a kept-alive connection is recorded too.
            await asyncio.gather(self._requests(reader, upstream, head), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            if upstream is not None:
                upstream.close()
            self._tasks.discard(task)

    async def _requests(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, head: bytes
    ) -> None:
        """Relay requests (heads and Content-Length bodies), recording each request line."""
        try:
            while True:
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.partition(":")[2])
                upstream.write(await reader.readexactly(length))
                await upstream.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                self.request_lines.append(head.decode("latin-1").partition("\r\n")[0])
                upstream.write(head)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            upstream.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def forward_proxy() -> AsyncIterator[ForwardProxy]:
    proxy = ForwardProxy()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
