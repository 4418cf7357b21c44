"""Figures 5 and 6: memory and scheduler lateness with 10,000 runs in flight.

The simulator runs in a child process (``_server``), so the server's work
stays out of the client's heap.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import gptimage_async as gi
from gptimage_async.simulator import SimulatorConfig

from ._common import KEY, SEED, prompts
from ._server import ServerProcess

__all__ = ["IN_FLIGHT_SETTLE", "IN_FLIGHT_WARMUP", "PROBE_SLEEP", "InFlight", "in_flight"]

#: In the 10,000-runs scenario: runs that never finish while we look, and who submits them.
FOREVER = 24 * 3600.0
SUBMITTERS = 64
IN_FLIGHT_WARMUP = 200
#: Seconds between the memory measurement and the lateness window. The
#: measurement blocks the event loop for ~0.1 s (a full collection with
#: tracemalloc on, then stopping tracemalloc): polls falling due meanwhile are
#: late because of the benchmark, not the scheduler, and are sent before the
#: window opens.
IN_FLIGHT_SETTLE = 1.0
#: The loop-lag probe's sleep, in seconds.
PROBE_SLEEP = 0.005


@dataclass(slots=True)
class InFlight:
    """Memory and scheduler lateness with ``runs`` runs in flight."""

    runs: int
    traced: int = 0
    """Bytes tracemalloc saw allocated and still held, over all ``runs``."""
    rss: int = 0
    """Growth of the resident set, minus tracemalloc's own bookkeeping."""
    submit_seconds: float = 0.0
    window: float = 0.0
    lateness: list[float] = field(default_factory=list)
    loop_lag: list[float] = field(default_factory=list)
    polls: int = 0
    """Polls sent during the lateness window."""
    full_collections: list[float] = field(default_factory=list)
    """Seconds each full (generation 2) garbage collection took during the window."""
    tracked: int = 0
    """Objects the garbage collector tracked when the window opened."""
    diagnostics: str = ""


def _in_flight_config() -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=1.0, duration="fixed", duration_median=FOREVER, rate_limit=None, seed=SEED
    )


async def in_flight(runs: int, *, window: float, warmup: int = IN_FLIGHT_WARMUP) -> InFlight:
    """Submit ``runs`` runs that will not finish, measure the heap, then watch the poller.

    ``warmup`` runs are submitted first, outside the measurement (default
    ``IN_FLIGHT_WARMUP``; ``--quick`` submits fewer: they are polled throughout).
    """
    row = InFlight(runs, window=window)
    with ServerProcess(_in_flight_config()) as base_url:
        async with gi.Session(
            "runbase",
            api_key=KEY,
            base_url=base_url,
            rate_limit=gi.RateLimit(100_000, 1.0),
            on_exit="cancel",
        ) as session:
            await _submit_all(session, prompts(warmup, "warm-up"))
            gc.collect()
            rss = _rss()
            tracemalloc.start()
            try:
                traced = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter()
                await _submit_all(session, (f"benchmark in-flight prompt {i}" for i in range(runs)))
                row.submit_seconds = time.perf_counter() - started
                gc.collect()
                row.traced = tracemalloc.get_traced_memory()[0] - traced
                row.rss = _rss() - rss - tracemalloc.get_tracemalloc_memory()
            finally:
                tracemalloc.stop()
            assert len(session.runs) == runs + warmup
            await asyncio.sleep(IN_FLIGHT_SETTLE)
            row.tracked = len(gc.get_objects())
            session.stats.lateness.clear()
            polls = session.stats.polls
            with _full_collections() as row.full_collections:
                row.loop_lag = await _loop_lag(window)
            row.lateness = list(session.stats.lateness)
            row.polls = session.stats.polls - polls
            row.diagnostics = f"{session._limiter!r}; {session._scheduler!r}"
    return row


async def _submit_all(session: gi.Session, prompts: Iterable[str]) -> None:
    todo = iter(prompts)

    async def submitter() -> None:
        for prompt in todo:
            await session.submit(prompt)  # the session keeps the run; so do we not

    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))


@contextlib.contextmanager
def _full_collections() -> Iterator[list[float]]:
    """Collect how long each full (generation 2) garbage collection takes, in seconds."""
    pauses: list[float] = []
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if info["generation"] != 2:
            return
        if phase == "start":
            started = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started)

    gc.callbacks.append(callback)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(callback)


async def _loop_lag(window: float) -> list[float]:
    """How late the event loop wakes a ``PROBE_SLEEP`` sleep, sampled for ``window`` s."""
    lags: list[float] = []
    end = time.monotonic() + window
    while (now := time.monotonic()) < end:
        await asyncio.sleep(PROBE_SLEEP)
        lags.append(time.monotonic() - now - PROBE_SLEEP)
    return lags


def _rss() -> int:
    """Resident set size in bytes (0 where ``/proc`` is missing: the figure is then n/a)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
