"""Real servers on loopback for the web integration tests.

The example apps are loaded from ``examples/`` as they are shipped, served by
uvicorn or aiohttp on 127.0.0.1, and pointed at an in-process simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web

from gptimage_async.simulator import Simulator
from gptimage_async.simulator._listening import close_runner, close_server
from gptimage_async.testing import TEST_KEYS, scaled_rate_limit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: 3-10 s runs take 30-100 ms; Runbase's 20-per-10-s window lasts 100 ms.
TIME_SCALE = 0.01


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as it ships (examples are not a package)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"gptimage_example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def session_options(sim: Simulator, provider: str = "runbase") -> dict[str, Any]:
    """What an app needs to talk to ``sim``: its URL, a test key, its scaled limit."""
    return {
        "base_url": sim.base_url(provider),  # type: ignore[arg-type]
        "api_key": TEST_KEYS[provider],
        "rate_limit": scaled_rate_limit(sim.config),
    }


class _Server(uvicorn.Server):
    """uvicorn's server, telling an event once it started (it has only a flag to poll)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.up.set()  # started, or gave up (then ``started`` stays False)


@contextlib.asynccontextmanager
async def serve_uvicorn(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yields its URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_config=None, log_level="warning"
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        up = asyncio.ensure_future(server.up.wait())
        await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        assert server.started, "uvicorn stopped during startup"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        # uvicorn closes its listening sockets on its next tick, whatever the loop is
        # doing: closed here once no accepted connection waits for its transport.
        for listening in server.servers:
            await close_server(listening)
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve_aiohttp(
    app: web.Application, *, handler_cancellation: bool = False
) -> AsyncIterator[str]:
    """Serve an aiohttp app with AppRunner + TCPSite on a free loopback port; yields its URL."""
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await close_runner(runner)  # connections accepted as it stopped are closed too


def client(base_url: str) -> aiohttp.ClientSession:
    """An HTTP client with no cap on parallel connections."""
    return aiohttp.ClientSession(base_url, connector=aiohttp.TCPConnector(limit=0))


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - state owned by other code, no event to wait on
            await asyncio.sleep(0.005)
