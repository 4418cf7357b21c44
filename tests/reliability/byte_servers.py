"""Servers that write exactly the bytes a test gives them, on 127.0.0.1 (plain or TLS).

For the answers an HTTP library would refuse to produce: a header of 60 KB,
a ``Content-Encoding`` nobody asked for, a body cut short with no
``Content-Length``, a ``Content-Length`` the body does not reach. Each
connection reads one request, writes the bytes the script returns, and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from gptimage_async.simulator._listening import close_server

from .wire_servers import Request, read_request

__all__ = ["ByteServer", "byte_server", "http_answer", "self_signed_context"]

#: Given a request, the raw bytes to answer with (status line onwards).
Script = Callable[[Request], bytes]


def http_answer(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    length: int | None = -1,
) -> bytes:
    """An HTTP/1.1 answer; ``length`` -1: the body's, ``None``: none (the close ends it)."""
    lines = [f"HTTP/1.1 {status} X", "Connection: close"]
    if length == -1:
        length = len(body)
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def encoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "gzip, xz":
        return gzip.compress(body)  # the xz layer is a lie: it is never decoded
    return b"\x1b\x2f\x00\x00garbage-that-no-brotli-decoder-accepts"


@dataclass
class ByteServer:
    script: Script
    ssl_context: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "") -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        # TLS is started by hand in _serve, so a failed handshake is still counted.
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            await close_server(self._server)  # not while an accept waits for its transport
        for _ in range(3):  # a connection accepted just before starts its handler a turn later
            await asyncio.sleep(0)
        # A connection still being read (its client gave up) is ended here: left
        # pending, its transport outlived the test's loop and the garbage collector's
        # ResourceWarning failed whichever test ran then.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            if self.ssl_context is not None:
                await writer.start_tls(self.ssl_context)
            request = await read_request(reader)
            self.requests.append(request)
            writer.write(self.script(request))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # closed by close(): the writer is closed below
        finally:
            writer.close()
            self._tasks.discard(task)


@contextlib.asynccontextmanager
async def byte_server(
    script: Script, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[ByteServer]:
    server = ByteServer(script, ssl_context)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (``openssl`` CLI)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def run_json(run_id: str, status: str, urls: list[str] | None = None) -> bytes:
    """A Runbase run object."""
    body: dict[str, object] = {"id": run_id, "status": status}
    if urls is not None:
        body["output"] = {"urls": urls}
    return json.dumps(body).encode()
