"""Figure 4: client CPU per HTTP exchange, ours against a bare aiohttp loop.

The simulator runs in a child process (``_server``), so the server's work
stays out of the client's CPU time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp

import gptimage_async as gi
from gptimage_async.simulator import SimulatorConfig

from ._common import KEY, SEED, prompts
from ._server import ServerProcess

__all__ = ["CPU_CONCURRENCY", "Cpu", "cpu_bare", "cpu_ours", "cpu_pair"]

#: Runs in flight, and warm-up runs, in the CPU scenario.
CPU_CONCURRENCY = 32
CPU_WARMUP = 64


@dataclass(slots=True)
class Cpu:
    """``exchanges`` request/answer pairs in ``wall`` seconds, costing ``cpu`` s of client CPU."""

    client: str
    exchanges: int
    wall: float
    cpu: float

    @property
    def per_second(self) -> float:
        return self.exchanges / self.wall

    @property
    def cpu_per_exchange(self) -> float:
        return self.cpu / self.exchanges


def _cpu_config() -> SimulatorConfig:
    # Runs are done the moment they exist and nothing is rate limited: only HTTP is left.
    return SimulatorConfig(
        time_scale=1.0, duration="fixed", duration_median=1e-6, rate_limit=None, seed=SEED
    )


async def cpu_ours(runs: int, *, base_url: str) -> Cpu:
    """``generate_many`` with ``CPU_CONCURRENCY`` runs in flight; every request counted."""
    async with gi.Session(
        "runbase", api_key=KEY, base_url=base_url, rate_limit=gi.RateLimit(100_000, 1.0)
    ) as session:
        await session.generate_many(prompts(CPU_WARMUP, "warm-up"), concurrency=CPU_CONCURRENCY)
        before = session.stats.requests
        wall, cpu = time.perf_counter(), time.process_time()
        await session.generate_many(prompts(runs, "cpu"), concurrency=CPU_CONCURRENCY)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return Cpu("gptimage-async", session.stats.requests - before, wall, cpu)


async def cpu_bare(runs: int, *, base_url: str) -> Cpu:
    """The least a client can do: POST, then GET until done, ``CPU_CONCURRENCY`` at a time."""
    body = json.dumps({"model": "openai/gpt-image-1.5", "input": {"prompt": "x"}}).encode()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    exchanges = 0

    async def worker(http: aiohttp.ClientSession, todo: Iterator[int]) -> None:
        nonlocal exchanges
        for _ in todo:
            async with http.post(f"{base_url}/runs", data=body) as response:
                run_id = (await response.json())["id"]
            exchanges += 1
            while True:
                async with http.get(f"{base_url}/runs/{run_id}") as response:
                    state = await response.json()
                exchanges += 1
                if state["status"] in ("succeeded", "failed"):
                    break

    async def batch(http: aiohttp.ClientSession, n: int) -> None:
        todo = iter(range(n))
        await asyncio.gather(*(worker(http, todo) for _ in range(CPU_CONCURRENCY)))

    async with aiohttp.ClientSession(headers=headers) as http:
        await batch(http, CPU_WARMUP)
        exchanges = 0
        wall, cpu = time.perf_counter(), time.process_time()
        await batch(http, runs)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return Cpu("bare aiohttp loop", exchanges, wall, cpu)


async def cpu_pair(runs: int, *, rounds: int) -> list[Cpu]:
    """Both clients against one child-process simulator, alternating, ``rounds`` times each."""
    out: list[Cpu] = []
    with ServerProcess(_cpu_config()) as base_url:
        for _ in range(rounds):
            out.append(await cpu_bare(runs, base_url=base_url))
            out.append(await cpu_ours(runs, base_url=base_url))
    return out
