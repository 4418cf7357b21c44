"""Figures 3 (cold) and 9 (speed-up) on the fake loop clock over many seeds.

The simulator in memory (``idle.idle_memory``), deterministic per seed, so
a change to the poll planner is judged on a few hundred runs per seed range
rather than on one noisy run over HTTP. ``python -m benchmarks.idle_seeds
cold 1 96`` prints the first 10 runs' and the later runs' mean delay over
mean run (averaged over seeds) and each of the first 10 runs' own (a ratio
of means over the seeds); ``speedup 1 96`` the delay after a 3x speed-up
(runs 10 after it on, of 60; the change at run 20) over the delay before
(runs 10-19): the mean and spread of that ratio per seed, the share above
1.5 (row 9's bound), and the ratio of the delays pooled over seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from tests._clock import FakeClock

from ._common import mean
from .idle import idle_memory

__all__ = ["cold", "speedup"]


async def cold(seeds: range, clock: FakeClock) -> str:
    """Row 3 of a cold session: the first 10 runs' delay share and the next 30's."""
    first, later, runs, rate_limited = [], [], [[] for _ in range(10)], 0
    for seed in seeds:
        row = await clock.run(idle_memory(40, seed=seed))
        first.append(row.delay_share(0, 10))
        later.append(row.delay_share(10))
        rate_limited += row.rate_limited
        for i, each in enumerate(runs):
            each.append((row.delays[i], row.durations[i]))
    each_run = " ".join(f"{sum(d for d, _ in r) / sum(t for _, t in r):.1%}" for r in runs)
    return (
        f"cold, seeds {seeds.start}-{seeds.stop - 1}: first 10 {mean(first):.2%}, "
        f"after them {mean(later):.2%}, 429s {rate_limited}; runs 0-9: {each_run}"
    )


async def speedup(seeds: range, clock: FakeClock) -> str:
    """Row 9: delay 10 runs after a 3x speed-up over the delay before, per seed."""
    ratios, before, after, rate_limited = [], [], [], 0
    for seed in seeds:
        row = await clock.run(idle_memory(60, seed=seed, drift=1 / 3, drift_at=20))
        ratios.append(mean(row.delays[30:]) / mean(row.delays[10:20]))
        before += row.delays[10:20]
        after += row.delays[30:]
        rate_limited += row.rate_limited
    over = sum(r > 1.5 for r in ratios)
    return (
        f"speedup, seeds {seeds.start}-{seeds.stop - 1}: after / before mean "
        f"{mean(ratios):.3f}, sd {statistics.stdev(ratios):.3f}, max {max(ratios):.2f}, "
        f"above 1.5 {over}/{len(ratios)}, pooled {mean(after) / mean(before):.3f}, "
        f"429s {rate_limited}"
    )


async def _main(what: str, seeds: range) -> None:
    with FakeClock(asyncio.get_running_loop()) as clock:
        print(await (cold if what == "cold" else speedup)(seeds, clock))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("cold", "speedup"))
    parser.add_argument("first", type=int, help="first seed")
    parser.add_argument("last", type=int, help="last seed (included)")
    args = parser.parse_args()
    asyncio.run(_main(args.what, range(args.first, args.last + 1)))
