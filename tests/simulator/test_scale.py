"""The simulator's statistics, and ten thousand runs in flight in little memory."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections import Counter

import aiohttp
import msgspec

from gptimage_async.simulator import SimulatorConfig

from .wire import (
    RB_KEY,
    RB_MODEL,
    aio_create,
    auth,
    make,
    rb_create,
    rb_get,
)

# -- stats and scale -----------------------------------------------------------------


async def test_stats_counters_and_duplicates(session: aiohttp.ClientSession) -> None:
    async with make(rate_limit=6, time_scale=1.0, apiinone_shape="flat") as sim:
        for _ in range(3):
            await rb_create(session, sim, "same prompt")
        await rb_create(session, sim, "other prompt")
        run_id = next(iter(sim.runs))
        await rb_get(session, sim, run_id)
        await rb_get(session, sim, "run_unknown")
        await rb_get(session, sim, run_id)  # the 7th request: rate limited
        await aio_create(session, sim, "same prompt")  # other key, counted too
        stats = sim.stats
        assert stats.requests == 8
        assert stats.create_requests == 5
        assert stats.creates == 5
        assert stats.polls == 3
        assert stats.rate_limited == 1
        assert stats.runs_per_prompt == Counter({"same prompt": 4, "other prompt": 1})
        assert stats.duplicates == 3
        assert stats.status_counts == Counter({200: 6, 404: 1, 429: 1})
        sim.reset_stats()
        assert stats.requests == 0
        assert stats.duplicates == 0
        assert not stats.status_counts
        assert len(sim.runs) == 5  # runs are kept


async def test_ten_thousand_runs_in_flight_cheaply() -> None:
    # The pipeline the HTTP server runs (``respond``), with no socket: what is
    # measured is the simulator's own cost per run, not aiohttp's per request.
    tasks_before = len(asyncio.all_tasks())
    sim = make(time_scale=10.0)  # runs last 30-100 s: all still in flight at the end
    path = "/runbase/api/v1/runs"
    headers = {**auth(RB_KEY), "Content-Type": "application/json"}

    async def create(i: int) -> None:
        body = msgspec.json.encode({"model": RB_MODEL, "input": {"prompt": f"prompt {i}"}})
        reply = await sim.respond("POST", path, headers, body)
        assert reply.status == 200

    started = time.monotonic()
    await asyncio.gather(*(create(i) for i in range(10_000)))
    elapsed = time.monotonic() - started
    assert sim.stats.creates == 10_000
    assert len(sim.runs) == 10_000
    now = time.monotonic()
    assert all(run.finishes_at > now for run in sim.runs.values())  # all in flight
    # No task or timer per run: nothing of the simulator's outlives its answers.
    assert len(asyncio.all_tasks()) - tasks_before < 50
    assert not [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert elapsed < 20.0
    assert sim.stats.duplicates == 0
    for run_id in list(sim.runs)[::500]:  # statuses are still read off the clock
        reply = await sim.respond("GET", f"{path}/{run_id}", auth(RB_KEY))
        assert msgspec.json.decode(reply.body)["status"] in ("pending", "processing")


def test_run_records_are_small() -> None:
    from gptimage_async.simulator._app import SimulatorService

    service = SimulatorService(SimulatorConfig(seed=1))
    config = service.config
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            service.registry.create(
                run_id=service.registry.new_id("run_"),
                protocol="runbase",
                key=RB_KEY,
                prompt=f"prompt number {i}",
                aspect_ratio="1:1",
                quality="medium",
                input_urls=(),
                cost=10,
                file_base="http://127.0.0.1:1",
                config=config,
            )
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used / 10_000 < 2_000, f"{used / 10_000:.0f} bytes per run"
