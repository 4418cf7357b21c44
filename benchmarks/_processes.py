"""Real processes for the fleet scenarios: a throwaway ``redis-server`` and worker processes.

A worker is ``python -m MODULE --worker JSON`` run from the repository root; it
prints one JSON line last, which :func:`collect` reads. Workers and this
process compare times on ``time.monotonic()``, which on Linux is one
system-wide clock (``CLOCK_MONOTONIC``), so a worker's "resolved at" and the
in-process simulator's ``finishes_at`` can be subtracted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "collect", "redis_server", "spawn", "start", "wait_for_port"]

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes], list[str]]]:
    """A ``redis-server`` on a free loopback port, no persistence: (URL, process, argv).

    Raises ``SystemExit`` when ``redis-server`` is not on the PATH. The process
    is killed on exit; its argv lets a scenario restart it on the same port.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="fleet-redis-")
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
    ]
    holder = [start(argv)]
    wait_for_port(port)
    try:
        yield f"redis://127.0.0.1:{port}/0", holder[0], argv
    finally:
        for proc in holder:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_port(port: int) -> None:
    """Block until something accepts on ``127.0.0.1:port`` (about 5 s at most)."""
    for _ in range(500):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.01)
    raise RuntimeError("redis-server did not start")


async def spawn(module: str, opts: dict[str, Any]) -> asyncio.subprocess.Process:
    """Start ``python -m module --worker JSON(opts)`` from the repository root."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--worker",
        json.dumps(opts),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def collect(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """The worker's last stdout line, as JSON; ``RuntimeError`` with its stderr if it failed."""
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"a worker failed:\n{err.decode()[-2000:]}")
    if os.environ.get("FLEET_DEBUG"):
        print(err.decode()[-3000:], file=sys.stderr)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result
