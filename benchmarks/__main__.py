"""``python -m benchmarks``: run the benchmarks against the simulator, rewrite RESULTS.md.

::

    python -m benchmarks                  # everything, a few minutes
    python -m benchmarks --quick          # a smoke run of every scenario, seconds
    python -m benchmarks --only bulk idle --runs 300 --time-scale 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import scenarios
from .report import Results, Settings, render
from .scenarios import DEFAULT_LIMIT, WINDOW

SCENARIOS = ("bulk", "idle", "cpu", "memory")
RESULTS = Path(__file__).with_name("RESULTS.md")

#: (full, quick) sizes.
RUNS = (300, 10)
TIME_SCALE = (0.05, 0.01)
IDLE_RUNS = (40, 3)
CPU_RUNS = (2000, 100)
CPU_ROUNDS = (3, 1)
IN_FLIGHT = (10_000, 300)
LATENESS_WINDOW = (5.0, 0.3)
#: The hand-written client gets as long as an ideal client needs for the whole job.
BASELINE_CAP = 1.0


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure gptimage-async against a hand-written client on the simulator "
        "and rewrite benchmarks/RESULTS.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run of every scenario"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        metavar="NAME",
        help=f"run only these scenarios ({', '.join(SCENARIOS)}; memory includes lateness)",
    )
    parser.add_argument("--runs", type=int, help="runs per bulk job (default 300; quick 10)")
    parser.add_argument(
        "--time-scale", type=float, help="simulator time scale (default 0.05; quick 0.01)"
    )
    parser.add_argument(
        "--in-flight", type=int, help="runs in flight for memory and lateness (default 10000)"
    )
    parser.add_argument(
        "--baseline-concurrency",
        type=int,
        default=scenarios.BASELINE_CONCURRENCY,
        help="semaphore size of the bounded hand-written client (default %(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="where to write the results (%(default)s)"
    )
    args = parser.parse_args(argv)
    pick = 1 if args.quick else 0
    args.runs = RUNS[pick] if args.runs is None else args.runs
    args.time_scale = TIME_SCALE[pick] if args.time_scale is None else args.time_scale
    args.in_flight = IN_FLIGHT[pick] if args.in_flight is None else args.in_flight
    args.idle_runs = IDLE_RUNS[pick]
    args.cpu_runs = CPU_RUNS[pick]
    args.cpu_rounds = CPU_ROUNDS[pick]
    args.window = LATENESS_WINDOW[pick]
    args.only = args.only or list(SCENARIOS)
    if args.runs < 1 or args.in_flight < 1 or not args.time_scale > 0:
        parser.error("--runs and --in-flight must be positive, --time-scale above 0")
    return args


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def bulk(args: argparse.Namespace, results: Results) -> None:
    ts = args.time_scale
    for counted in (False, True):
        for real in (DEFAULT_LIMIT, DEFAULT_LIMIT * 2, DEFAULT_LIMIT // 2):
            row = await scenarios.bulk_ours(
                args.runs,
                time_scale=ts,
                real_limit=real,
                belief_limit=DEFAULT_LIMIT,
                counted=counted,
            )
            results.bulk.append(row)
            say(
                f"  {row.client}, real limit {real}, counted={counted}: "
                f"efficiency {row.efficiency:.2f}, 429s {row.share_429:.1%}"
            )
    # The hand-written client has no belief to be right or wrong about: it meets each
    # real limit once, and the counting server only at the default (where it locks up).
    for real, counted in (
        (DEFAULT_LIMIT, False),
        (DEFAULT_LIMIT, True),
        (DEFAULT_LIMIT * 2, False),
        (DEFAULT_LIMIT // 2, False),
    ):
        for concurrency in (None, args.baseline_concurrency):
            row = await scenarios.bulk_baseline(
                args.runs,
                time_scale=ts,
                real_limit=real,
                counted=counted,
                concurrency=concurrency,
                cap_factor=BASELINE_CAP,
            )
            results.bulk.append(row)
            say(
                f"  {row.client}, real limit {real}, counted={counted}: "
                f"efficiency {row.efficiency:.2f}, 429s {row.share_429:.1%}"
            )


async def idle(args: argparse.Namespace, results: Results) -> None:
    for run in (scenarios.idle_ours, scenarios.idle_baseline):
        row = await run(args.idle_runs, time_scale=args.time_scale)
        results.idle.append(row)
        say(f"  {row.client}: {row.requests / row.runs:.1f} requests per run")


async def cpu(args: argparse.Namespace, results: Results) -> None:
    results.cpu = await scenarios.cpu_pair(args.cpu_runs, rounds=args.cpu_rounds)
    for row in results.cpu:
        say(
            f"  {row.client}: {row.per_second:,.0f} exchanges/s, "
            f"{row.cpu_per_exchange * 1e6:.0f} us CPU each"
        )


async def memory(args: argparse.Namespace, results: Results) -> None:
    row = await scenarios.in_flight(args.in_flight, window=args.window)
    results.in_flight = row
    say(f"  {row.traced / row.runs:,.0f} B per run, {len(row.lateness)} lateness samples")


async def run(args: argparse.Namespace) -> Results:
    results = Results(
        settings=Settings(
            time_scale=args.time_scale,
            runs=args.runs,
            baseline_cap=BASELINE_CAP,
            cpu_concurrency=scenarios.CPU_CONCURRENCY,
            argv=" ".join(sys.argv[1:]),
        ),
        load=(os.getloadavg()[0], 0.0),
    )
    started = time.perf_counter()
    steps = {"bulk": bulk, "idle": idle, "cpu": cpu, "memory": memory}
    for name in SCENARIOS:
        if name in args.only:
            say(f"{name} ...")
            await steps[name](args, results)
    results.seconds = time.perf_counter() - started
    results.load = (results.load[0], os.getloadavg()[0])
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    results = asyncio.run(run(args))
    text = render(results, default_limit=DEFAULT_LIMIT, window=WINDOW)
    args.output.write_text(text)
    print(text)
    say(f"wrote {args.output}")


if __name__ == "__main__":
    main()
