"""Load: 10,000 runs submitted at once complete, in bounded memory, with a responsive loop.

The runs go to the real simulator through the in-memory transport, on the
loop's real clock: what is under load is the client (its scheduler, limiter
and registry) and the simulator's run book, not the loopback sockets, whose
HTTP handling the wire and fault-matrix tests prove. Over a socket the same
test spent three quarters of its 30 s of CPU in HTTP parsing.
Every run lasts 20 provider seconds (5 s here), longer than it takes to
create all 10,000, so nearly all of them are in flight at the same moment and
all come due together. The bounds are loose on purpose (a shared CI machine
must pass them every time); the measured figures are printed in the
"reliability" summary, and precise ones belong to the benchmarks.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from dataclasses import dataclass

import anyio
import pytest

import gptimage_async as gi

from .conftest import report, sim_config, simulated

RUNS = 10_000
TIME_SCALE = 0.25
DURATION = 20.0  # provider seconds: 5 s here
TICK = 0.01
MAX_LOOP_LAG = 1.0
#: Peak resident memory growth per run, client and simulator together.
MAX_BYTES_PER_RUN = 10_000


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Watch:
    max_lag: float = 0.0
    peak_in_flight: int = 0
    peak_rss: int = 0
    ticks: int = 0


async def _watch(session: gi.Session, watch: Watch) -> None:
    """Sleeps ``TICK`` at a time and records how late it wakes, and the peaks."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(TICK)
        watch.max_lag = max(watch.max_lag, loop.time() - before - TICK)
        watch.peak_in_flight = max(watch.peak_in_flight, len(session.runs))
        watch.peak_rss = max(watch.peak_rss, _rss())
        watch.ticks += 1


def _live_runs() -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is gi.Run)


@pytest.mark.slow  # 10,000 runs: ~8 s of CPU, 12 s of wall time
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
async def test_ten_thousand_concurrent_runs() -> None:
    prompts = [f"load #{i:05d}" for i in range(RUNS)]
    config = sim_config(time_scale=TIME_SCALE, duration="fixed", duration_median=DURATION)
    watch = Watch()
    # A belief of 3,000 requests a second: above what one process on loopback
    # can send, so it is the CPU that limits, but 10,000 polls due at the same
    # instant still go out paced rather than as 10,000 tasks at once.
    async with simulated("runbase", config, "memory", rate_limit=gi.RateLimit(3_000, 1.0)) as (
        sim,
        session,
    ):
        gc.collect()
        rss_before = _rss()
        ticker = asyncio.create_task(_watch(session, watch))
        started = time.perf_counter()
        with anyio.fail_after(120):
            results = await session.generate_many(prompts)
        elapsed = time.perf_counter() - started
        ticker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ticker

        # Every run ended once, with its own result.
        assert len(results) == RUNS
        assert len({r.run_id for r in results}) == RUNS
        for prompt, result in zip(prompts, results, strict=True):
            assert result.request is not None and result.request.prompt == prompt
            assert sim.runs[result.run_id].prompt == prompt
        assert sim.stats.creates == RUNS and sim.stats.duplicates == 0
        assert len(session.runs) == 0 and len(session.scheduler) == 0
        assert session.runs.counts()["succeeded"] == RUNS

        # Nothing of the runs is kept once the caller lets go of the results (the
        # scheduler's loop may still name the last run it looked at: one, not 10,000).
        del results
        gc.collect()
        assert _live_runs() <= 1

        per_run = (watch.peak_rss - rss_before) / RUNS
        polls = session.stats.polls / RUNS
        report(
            f"load: {RUNS} runs in {elapsed:.1f}s, peak in flight {watch.peak_in_flight}, "
            f"max loop lag {watch.max_lag * 1000:.0f} ms, peak RSS +{per_run:.0f} B/run "
            f"(client and simulator), {polls:.2f} polls/run, "
            f"{session.stats.speculative_polls} speculative"
        )
    assert watch.ticks > 100
    assert watch.peak_in_flight >= RUNS // 10, "the runs never overlapped: the test is void"
    assert watch.max_lag < MAX_LOOP_LAG
    assert per_run < MAX_BYTES_PER_RUN
