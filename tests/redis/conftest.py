"""A real redis-server per test, on a free loopback port, with no persistence.

``RedisServer`` can also be killed (SIGKILL), frozen (SIGSTOP), thawed and
restarted on the same port, which is how the failover tests take Redis away
mid-batch. Tests are skipped when redis-server or redis-py is missing (CI
installs both: see ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

pytest.importorskip("redis")

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; ``url`` stays the same across restarts."""

    def __init__(self, workdir: Path) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._workdir),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                # Ours, not another worker's server that took the port first.
                sock.sendall(b"INFO server\r\n")
                answer = b""
                while b"process_id:" not in answer or not answer.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                if f"process_id:{self._proc.pid}\r\n".encode() in answer:
                    return
                if b"process_id:" in answer:
                    raise RuntimeError("another redis-server holds the port")
            if self._proc.poll() is not None:
                raise RuntimeError("redis-server exited at start")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: every key is lost (no persistence), connections drop."""
        if self._proc is not None:
            if self.frozen:
                self.thaw()
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        if self._proc is None:
            return
        if self.frozen:
            self.thaw()
        self._proc.terminate()
        try:
            self._proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server on a free 127.0.0.1 port, stopped after the test."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    # A free port can be taken between the probe and redis-server's bind (other
    # xdist workers start servers too): then it exits at once, and another port is tried.
    for attempt in range(3):
        server = RedisServer(tmp_path)
        try:
            server.start()
            break
        except RuntimeError:
            server.stop()
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def client_of(url: str) -> AsyncIterator[redis_asyncio.Redis]:
    """A ``redis.asyncio`` client for ``url``, closed on exit (tests read Redis's state)."""
    client = redis_asyncio.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()
