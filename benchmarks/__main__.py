"""``python -m benchmarks``: run the benchmarks against the simulator, rewrite RESULTS.md.

::

    python -m benchmarks                  # everything, a few minutes
    python -m benchmarks --quick          # a smoke run of every scenario but fleet, seconds
    python -m benchmarks --only bulk idle --runs 200 --time-scale 0.05
    python -m benchmarks --only drift warm  # the learning figures
    python -m benchmarks --only fleet     # several processes on one key (needs redis-server)
    python -m benchmarks --only steady    # web-app load: steady arrivals (fleet part needs Redis)
    python -m benchmarks --only pool      # a pool of three keys on two sellers (issue 19)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import gallery as gallery_benchmark
from . import scenarios
from .figures import draw
from .pool import MILD_CASE, MILD_FACTOR
from .report import ADAPT_RUNS, COLD_RUNS, FIRST_RUNS, Results, Settings, render
from .scenarios import DEFAULT_LIMIT, WINDOW, Bulk

SCENARIOS = (
    "bulk",
    "drift",
    "warm",
    "idle",
    "cpu",
    "memory",
    "gallery",
    "steady",
    "pool",
    "fleet",
)
#: Needs redis-server and OS processes, minutes of them: only when named in --quick.
NOT_QUICK = ("fleet",)
RESULTS = Path(__file__).with_name("RESULTS.md")

#: (full, quick) sizes.
RUNS = (200, 10)
#: Drift jobs: runs in all, and runs created before durations change (x3 or x1/3).
DRIFT_RUNS = (300, 20)
DRIFT_AT = (100, 6)
DRIFT = 3.0
#: Single runs in the idle speed-up job, and runs before the speed-up.
IDLE_DRIFT_RUNS = (60, 6)
IDLE_DRIFT_AT = (20, 3)
TIME_SCALE = (0.05, 0.01)
IDLE_RUNS = (40, 3)
CPU_RUNS = (2000, 100)
CPU_ROUNDS = (3, 1)
IN_FLIGHT = (10_000, 300)
#: Runs submitted before the in-flight measurement: each is polled all through the
#: scenario, so in quick runs they are most of its requests (200 cost ~2,000 polls).
IN_FLIGHT_WARMUP = (scenarios.IN_FLIGHT_WARMUP, 20)
LATENESS_WINDOW = (5.0, 0.3)
#: Images on the gallery page measured (quick runs: a tenth, the same page code).
GALLERY_ENTRIES = (10_000, 1_000)
#: Arrivals per steady job (each load, each client), and in the steady fleet's job.
STEADY_RUNS = (200, 8)
#: The steady fleet's processes: quick runs use two, with two runs each.
STEADY_FLEET = (scenarios.FLEET, 2)
#: Runs per pool job (issue 19: 300).
POOL_RUNS = (300, 30)
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
        help=f"run only these scenarios ({', '.join(SCENARIOS)}; memory includes lateness; "
        "fleet needs redis-server and is left out of --quick)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        help="runs per bulk job (default 200; quick 10); each warm-start session does half",
    )
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
        "--steady-loads",
        type=float,
        nargs="+",
        default=list(scenarios.LOADS),
        metavar="F",
        help="shares of the budget the steady arrivals take (default %(default)s; "
        "f x limit / window runs per second, 1/f requests of budget per run)",
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
    args.drift_runs = DRIFT_RUNS[pick]
    args.drift_at = DRIFT_AT[pick]
    args.idle_drift_runs = IDLE_DRIFT_RUNS[pick]
    args.idle_drift_at = IDLE_DRIFT_AT[pick]
    args.cpu_runs = CPU_RUNS[pick]
    args.cpu_rounds = CPU_ROUNDS[pick]
    args.window = LATENESS_WINDOW[pick]
    args.in_flight_warmup = IN_FLIGHT_WARMUP[pick]
    args.steady_runs = STEADY_RUNS[pick]
    args.steady_fleet = STEADY_FLEET[pick]
    args.pool_runs = POOL_RUNS[pick]
    args.gallery_entries = GALLERY_ENTRIES[pick]
    args.only = args.only or [s for s in SCENARIOS if not (args.quick and s in NOT_QUICK)]
    if args.runs < 1 or args.in_flight < 1 or not args.time_scale > 0:
        parser.error("--runs and --in-flight must be positive, --time-scale above 0")
    if not all(0 < f <= 1 for f in args.steady_loads):
        parser.error("--steady-loads must be shares of the budget, above 0 and at most 1")
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


def _say_learning(row: Bulk) -> None:
    first = row.polls_per_run(0, FIRST_RUNS)
    after = (
        ""
        if row.change_at is None
        else f", after change+30 {row.polls_per_run(row.change_at + ADAPT_RUNS):.2f}"
    )
    say(
        f"  {row.client} {row.session}: efficiency {row.efficiency:.2f}, "
        f"polls/run first {FIRST_RUNS} {first:.2f}{after}, 429s {row.share_429:.1%}"
    )


async def drift(args: argparse.Namespace, results: Results) -> None:
    ts, n, at = args.time_scale, args.drift_runs, args.drift_at
    for factor in (DRIFT, 1 / DRIFT):
        row = await scenarios.bulk_ours(
            n,
            time_scale=ts,
            real_limit=DEFAULT_LIMIT,
            belief_limit=DEFAULT_LIMIT,
            counted=False,
            drift=factor,
            drift_at=at,
        )
        results.drift.append(row)
        _say_learning(row)
        row = await scenarios.bulk_baseline(
            n,
            time_scale=ts,
            real_limit=DEFAULT_LIMIT,
            counted=False,
            concurrency=args.baseline_concurrency,
            cap_factor=BASELINE_CAP,
            drift=factor,
            drift_at=at,
        )
        results.drift.append(row)
        _say_learning(row)
    for run in (scenarios.idle_ours, scenarios.idle_baseline):
        idle_row = await run(
            args.idle_drift_runs, time_scale=ts, drift=1 / DRIFT, drift_at=args.idle_drift_at
        )
        results.drift_idle.append(idle_row)
        share = idle_row.delay_share(args.idle_drift_at + COLD_RUNS)
        say(f"  {idle_row.client}, idle speed-up: delay share once adapted {share:.1%}")


async def warm(args: argparse.Namespace, results: Results) -> None:
    n = max(1, args.runs // 2)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            *await scenarios.bulk_warm(
                n, time_scale=args.time_scale, counted=True, state_file=Path(tmp) / "state.json"
            )
        ]
    rows += await scenarios.bulk_warm_baseline(
        n,
        time_scale=args.time_scale,
        counted=True,
        concurrency=args.baseline_concurrency,
        cap_factor=BASELINE_CAP,
    )
    for row in rows:
        results.warm.append(row)
        _say_learning(row)


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


async def fleet(args: argparse.Namespace, results: Results) -> None:
    # Imported here: it needs the redis extra, which the other scenarios do not.
    from . import fleet as fleet_benchmark

    results.fleet = await fleet_benchmark.main_async(
        argparse.Namespace(
            time_scale=args.time_scale,
            modes=list(fleet_benchmark.MODES),
            parts=list(fleet_benchmark.PARTS),
        ),
        rows=results.fleet_rows,
    )


async def memory(args: argparse.Namespace, results: Results) -> None:
    row = await scenarios.in_flight(
        args.in_flight, window=args.window, warmup=args.in_flight_warmup
    )
    results.in_flight = row
    say(f"  {row.traced / row.runs:,.0f} B per run, {len(row.lateness)} lateness samples")


async def steady(args: argparse.Namespace, results: Results) -> None:
    ts, n = args.time_scale, args.steady_runs
    for load in args.steady_loads:
        for measure in (scenarios.steady_ours, scenarios.steady_baseline):
            row = await measure(load, n, time_scale=ts)
            results.steady.append(row)
            _say_steady(row)
    if shutil.which("redis-server") is None:
        results.steady_note = "The fleet row was not measured: `redis-server` is not installed."
        say(f"  {results.steady_note}")
        return
    processes = args.steady_fleet
    runs = n if processes == scenarios.FLEET else 2 * processes
    row = await scenarios.steady_fleet(
        scenarios.FLEET_LOAD, runs, time_scale=ts, processes=processes
    )
    results.steady.append(row)
    _say_steady(row)


def _say_steady(row: scenarios.Steady) -> None:
    say(
        f"  {row.client}, load {row.load:g}: delay/run {row.delay_share:.1%}, "
        f"polls/run {row.polls_per_run:.2f}, 429s {row.share_429:.1%}, kept {row.kept:.2f}, "
        f"{row.resolved}/{row.runs} resolved"
    )


async def pool(args: argparse.Namespace, results: Results) -> None:
    n, ts = args.pool_runs, args.time_scale
    mild = functools.partial(scenarios.pool_combined, case=MILD_CASE)
    for measure, scale in (
        (scenarios.pool_combined, ts),
        (mild, ts * MILD_FACTOR),  # the same job, arrival jitter nearer its real share
        (scenarios.pool_closure, ts),
        (scenarios.pool_price_first, ts),
    ):
        row = await measure(n, time_scale=scale)
        results.pool.append(row)
        lanes = ", ".join(f"{lane.label} {lane.creates}" for lane in row.lanes)
        say(
            f"  {row.case}: efficiency {row.efficiency:.2f}, 429s {row.share_429:.1%}, "
            f"{row.resolved_once}/{row.runs} resolved once, {row.duplicates} paid twice, "
            f"creates {lanes}"
        )


async def gallery(args: argparse.Namespace, results: Results) -> None:
    row = gallery_benchmark.measure(args.gallery_entries)
    results.gallery = row
    best = min(row.write) * 1000
    say(f"  {row.entries:,} images: {best:.0f} ms a rewrite (best), {row.bytes:,} B")


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
    steps = {
        "bulk": bulk,
        "drift": drift,
        "warm": warm,
        "idle": idle,
        "cpu": cpu,
        "memory": memory,
        "gallery": gallery,
        "steady": steady,
        "pool": pool,
        "fleet": fleet,
    }
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
    figures = draw(results, args.output.parent, default_limit=DEFAULT_LIMIT, window=WINDOW)
    if not figures:
        say("no pictures drawn: they need matplotlib (pip install -e '.[benchmarks]')")
    text = render(results, default_limit=DEFAULT_LIMIT, window=WINDOW, figures=figures)
    args.output.write_text(text)
    print(text)
    say(f"wrote {args.output}")


if __name__ == "__main__":
    main()
