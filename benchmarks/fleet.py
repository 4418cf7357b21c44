"""``python -m benchmarks.fleet``: four processes on one key, with and without a shared budget.

Each process is a real OS process running a ``Session`` against one simulator
(in this process) with Runbase's limit of 20 requests per 10 s, rejected
requests counted, runs of 3-10 s, time compressed 20x. Three ways to run the
fleet are compared on the same loads:

* ``shared``: ``Session(redis=...)``, the key's budget kept in Redis;
* ``full``: each process believes it has the whole limit (the default);
* ``static``: each believes a quarter of it (the README's old advice, 5/10 s).

efficiency = ideal wall time at the real limit with 2 requests per run
(one create, one poll) over the measured wall time. Then Redis is killed
(SIGKILL) for 3 windows mid-batch and restarted, and the admitted requests per
window show how soon throughput is back. Last, the latency a shared limiter
adds to each request on loopback (an idle budget, so nobody waits).

For the shared fleet, the grant log in Redis (each slot with the time its
request really went out) splits the wall time: the ideal, requests beyond 2 a
run (polls of runs not done yet: each process learns run durations alone, and
429s), pace under the true limit (margin, a belief cut below it), slots
granted and never sent, gaps with nothing granted (pauses), start and tail.

Prints a Markdown report; ``RESULTS.md`` is not touched. ``--parts`` picks
what to measure; ``FLEET_DEBUG=1`` shows each worker's log and limiter. Needs ``redis-server``
on the PATH and the ``redis`` package (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gptimage_async as gi
from gptimage_async._budget import RateLimiter
from gptimage_async._budget.shared import SharedLimiter
from gptimage_async.simulator import Simulator, SimulatorConfig

from ._processes import collect as _collect
from ._processes import redis_server, spawn
from ._processes import start as _start
from .diagnosis import DIAGNOSIS

KEY = "sk-fleet-benchmark"
LIMIT = 20
WINDOW = 10.0
TIME_SCALE = 0.05
LOADS = ((50, 50, 50, 50), (140, 20, 20, 20))
MODES = ("shared", "full", "static")
PARTS = ("fleets", "outage", "latency")
#: Workers import their libraries before this shared start (seconds).
STARTUP = 3.0
#: The Redis outage: starts this many windows in, lasts OUTAGE_WINDOWS.
OUTAGE_AT = 6
OUTAGE_WINDOWS = 3
LATENCY_SAMPLES = 2000


@dataclass
class Row:
    mode: str
    load: tuple[int, ...]
    wall: float
    ideal: float
    requests: int
    rate_limited: int
    duplicates: int
    resolved: int
    errors: int
    per_process: list[float] = field(default_factory=list)
    fallback_at_end: int = 0
    polls: int = 0
    speculative: int = 0
    diagnosis: str = ""
    losses: dict[str, float] = field(default_factory=dict)
    """Shares of the wall time by the grant log (``grant_log``): ideal, extra requests, ..."""

    @property
    def efficiency(self) -> float:
        return self.ideal / self.wall

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0


async def _spawn(opts: dict[str, Any]) -> asyncio.subprocess.Process:
    return await spawn("benchmarks.fleet", opts)


async def fleet(
    mode: str,
    load: Sequence[int],
    *,
    redis_url: str | None,
    time_scale: float,
    outage: Any = None,
) -> tuple[Row, list[int]]:
    """Run one fleet; return its row and the admitted requests per window."""
    config = SimulatorConfig(
        time_scale=time_scale, seed=20_260_101, rate_limit=LIMIT, count_rejected=True
    )
    window = WINDOW * time_scale
    requests = {"static": LIMIT // len(load)}.get(mode, LIMIT)
    async with Simulator(config) as sim:
        start = time.monotonic() + STARTUP
        procs = [
            await _spawn(
                {
                    "name": f"{mode}{i}",
                    "runs": runs,
                    "base_url": sim.base_url("runbase"),
                    "redis": redis_url if mode == "shared" else None,
                    "rate_limit": [requests, window],
                    "start_at": start,
                }
            )
            for i, runs in enumerate(load)
        ]
        per_window: list[int] = []

        async def count() -> None:
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            last = 0
            while True:
                await asyncio.sleep(window)
                admitted = sim.stats.requests - sim.stats.rate_limited
                per_window.append(admitted - last)
                last = admitted

        counter = asyncio.ensure_future(count())
        if outage is not None:
            await outage(start, window)
        results = [await _collect(p) for p in procs]
        counter.cancel()
        # On a loaded machine a worker may still be importing at the start it was
        # given: the fleet starts when its first process does (never before).
        start = max(start, min(r.get("began", start) for r in results))
        stats = sim.stats
        if os.environ.get("FLEET_DEBUG"):
            runs = sorted(sim.runs.values(), key=lambda r: r.created_at)
            extra = [
                (
                    i,
                    r.polls,
                    round(r.duration / window, 2),
                    round((r.created_at - start) / window, 1),
                )
                for i, r in enumerate(runs)
                if r.polls > 1
            ]
            print(
                "runs polled more than once (order, polls, duration and created in windows)",
                extra,
                file=sys.stderr,
            )
        total = sum(load)
        row = Row(
            mode=mode,
            load=tuple(load),
            wall=max(r["finished"] for r in results) - start,
            ideal=total * 2 / (LIMIT / window),
            requests=stats.requests,
            rate_limited=stats.rate_limited,
            duplicates=stats.duplicates,
            resolved=sum(r["ok"] for r in results),
            errors=sum(r["errors"] for r in results),
            per_process=[r["finished"] - start for r in results],
            fallback_at_end=sum(r["fallback"] for r in results),
            polls=stats.polls,
            speculative=sum(r["stats"].get("speculative_polls", 0) for r in results),
        )
    if mode == "shared" and redis_url is not None and outage is None:
        row.diagnosis = grant_log(redis_url, row, start, window, results)
    return row, per_window


def grant_log(
    redis_url: str, row: Row, start: float, window: float, results: list[dict[str, Any]]
) -> str:
    """Where the fleet's wall time went, read from the grant log in Redis (issue 22).

    The wall time is split into the ideal (2 requests a run at the true
    limit), requests beyond 2 a run (extra polls, 429s), the pace under the
    limit (margin), slots granted but never sent (leases that lapsed, slots
    given up), gaps with nothing granted, and the tail after the last grant.
    """
    import redis

    from gptimage_async._budget.keys import BudgetKeys, budget_id

    keys = BudgetKeys(budget_id("runbase", KEY))
    client = redis.Redis.from_url(redis_url)
    try:
        grants = [s for _, s in client.zrange(keys.grants, 0, -1, withscores=True)]
        members = [m.decode() for m in client.zrange(keys.grants, 0, -1)]
        redis_now = float(client.time()[0]) + client.time()[1] * 1e-6
        belief = {k.decode(): v.decode() for k, v in client.hgetall(keys.belief).items()}
    finally:
        client.close()
    # Only this fleet's grants: the log holds the earlier fleets' too.
    offset = redis_now - time.monotonic()
    lo, hi = start + offset - window, start + offset + row.wall + window
    own = [(g, m) for g, m in zip(grants, members, strict=True) if lo <= g <= hi]
    times = sorted(g for g, _ in own)
    if len(times) < 2:
        return "grant log: empty"
    slot = window / LIMIT  # one request's share of the true limit
    span = times[-1] - times[0]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    rate = float(belief.get("rate", "nan"))
    margin = float(belief.get("margin", "nan"))
    paced = 1.0 / (rate * (1.0 - margin))
    idle = sum(g - paced for g in gaps if g > 1.5 * paced)
    first = times[0] - offset - start
    tail = row.wall - (times[-1] - offset - start)
    sent = row.requests
    per = sorted(collections.Counter(m.rsplit(":", 1)[0] for _, m in own).values())
    parts = {
        "ideal": row.ideal,
        "extra requests": (sent - 2 * sum(row.load)) * slot,
        "granted, not sent": (len(times) - sent) * slot,
        "pace under the limit": span - (len(times) - 1) * slot - idle,
        "gaps (nothing granted)": idle,
        "start": first,
        "tail": tail,
    }
    row.losses = {k: v / row.wall for k, v in parts.items()}
    text = ", ".join(f"{k} {v:.1%}" for k, v in row.losses.items())
    if os.environ.get("FLEET_DEBUG"):
        base = times[0]
        counts = collections.Counter(int((t - base) / window) for t in times)
        print("grants per window", [counts[i] for i in range(max(counts) + 1)], file=sys.stderr)
        # By slot time (in each member's name): what the limiter booked, before send jitter.
        booked = collections.Counter(
            int((float(m.rsplit(":", 1)[1]) - base) / window) for _, m in own
        )
        print("slots per window", [booked[i] for i in range(max(booked) + 1)], file=sys.stderr)
        late = sorted(g - float(m.rsplit(":", 1)[1]) for g, m in own)
        print(
            "send - slot ms, 50/90/99/max",
            [round(1e3 * late[int(q * (len(late) - 1))], 1) for q in (0.5, 0.9, 0.99, 1.0)],
            file=sys.stderr,
        )
        q = statistics.quantiles([g / slot for g in gaps], n=20)
        print("gap/slot 5%..95%", [round(x, 2) for x in q], file=sys.stderr)
        refusals = [
            s
            for _, s in redis.Redis.from_url(redis_url).zrange(
                keys.refusals, 0, -1, withscores=True
            )
            if lo <= s <= hi
        ]
        print("refusals at", [round((r - base) / window, 2) for r in refusals], file=sys.stderr)
        # A slot whose score is still its own time was never reported sent.
        unsent = collections.defaultdict(list)
        for g, m in own:
            if abs(g - float(m.rsplit(":", 1)[1])) < 1e-6:
                unsent[m.rsplit(":", 1)[0][-8:]].append(round((g - base) / window, 2))
        print("never reported sent (windows in)", dict(unsent), file=sys.stderr)
    return (
        f"grant log: {len(times)} slots granted, {sent} requests sent ({row.polls} polls, "
        f"{row.speculative} speculative, {row.rate_limited} 429s), per process {per}; "
        f"belief {rate:.4g}/s margin {margin:.1%}; wall {row.wall:.2f}s = {text}"
    )


async def latency(redis_url: str) -> tuple[float, float]:
    """Median seconds per acquire on an idle budget: (shared, local)."""
    belief = gi.RateLimit(requests=1_000_000, per=1.0)
    shared = SharedLimiter(belief, provider="runbase", api_key="sk-latency", redis=redis_url)
    await shared.start()
    local = RateLimiter(belief)
    out = []
    try:
        for lim in (shared, local):
            samples = []
            for _ in range(LATENCY_SAMPLES):
                t = time.perf_counter()
                await lim.acquire()
                samples.append(time.perf_counter() - t)
            out.append(statistics.median(samples))
    finally:
        await shared.aclose()
    return out[0], out[1]


def _windows_to_recover(per_window: list[int], back_at: int) -> int | None:
    """Windows after Redis returned until admitted requests reach 90% of the steady level."""
    steady = per_window[2:OUTAGE_AT]
    if not steady:
        return None
    target = 0.9 * statistics.median(steady)
    for i, n in enumerate(per_window[back_at:]):
        if n >= target:
            return i
    return None


async def main_async(args: argparse.Namespace, rows: list[Row] | None = None) -> str:
    """The Markdown report; each fleet's ``Row`` is appended to ``rows`` too, if given."""
    lines = [
        "## Several processes, one key (`python -m benchmarks.fleet`)",
        "",
        f"4 OS processes, limit {LIMIT} per {WINDOW:g} s counting rejected requests, "
        f"runs of 3-10 s, time x{1 / args.time_scale:g}; load {os.getloadavg()[0]:.1f} at start.",
        "",
        "| load per process | fleet | efficiency | 429 share | requests | duplicates | resolved |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    diagnoses: list[str] = []
    with redis_server() as (url, _proc, _argv):
        for load in LOADS if "fleets" in args.parts else ():
            for mode in args.modes:
                row, per_window = await fleet(mode, load, redis_url=url, time_scale=args.time_scale)
                if rows is not None:
                    rows.append(row)
                lines.append(
                    f"| {' / '.join(map(str, load))} | {mode} | {row.efficiency:.2f} | "
                    f"{row.share_429:.1%} | {row.requests} | {row.duplicates} | "
                    f"{row.resolved}/{sum(load)} |"
                )
                print(lines[-1], per_window, file=sys.stderr, flush=True)
                if row.diagnosis:
                    diagnoses.append(f"- {' / '.join(map(str, load))}: {row.diagnosis}")
                    print(diagnoses[-1], file=sys.stderr, flush=True)
        if diagnoses:
            lines += ["", "Where the shared fleet's wall time went (from the grant log in Redis):"]
            lines += diagnoses
            lines += ["", f"- *Diagnosis (fleet)*: {DIAGNOSIS['fleet']}"]
        if "latency" in args.parts:
            shared_s, local_s = await latency(url)
            lines += [
                "",
                f"Added latency per request (idle budget, loopback, median of "
                f"{LATENCY_SAMPLES}): {(shared_s - local_s) * 1e3:.3f} ms "
                f"(shared {shared_s * 1e3:.3f} ms, local {local_s * 1e3:.3f} ms).",
            ]
    if "outage" in args.parts:
        lines += await outage_part(args)
    return "\n".join(lines)


async def outage_part(args: argparse.Namespace) -> list[str]:
    """Redis killed for OUTAGE_WINDOWS windows mid-batch, then restarted on its port."""
    with redis_server() as (url, proc, argv):
        holder: dict[str, Any] = {"proc": proc}
        back: dict[str, float] = {}

        async def outage(start: float, window: float) -> None:
            await asyncio.sleep(max(0.0, start + OUTAGE_AT * window - time.monotonic()))
            holder["proc"].send_signal(signal.SIGKILL)
            holder["proc"].wait()
            await asyncio.sleep(OUTAGE_WINDOWS * window)
            holder["proc"] = _start(argv)
            back["at"] = time.monotonic() - start

        row, per_window = await fleet(
            "shared", LOADS[0], redis_url=url, time_scale=args.time_scale, outage=outage
        )
        holder["proc"].kill()
        holder["proc"].wait()
    window = WINDOW * args.time_scale
    back_at = round(back.get("at", 0.0) / window)
    recovered = _windows_to_recover(per_window, back_at)
    return [
        "",
        f"Redis killed (SIGKILL) {OUTAGE_AT} windows in, back after {OUTAGE_WINDOWS}: "
        f"efficiency {row.efficiency:.2f}, 429 share {row.share_429:.1%}, "
        f"{row.resolved}/{sum(LOADS[0])} resolved, {row.errors} errors, "
        f"{row.duplicates} duplicates; throughput back "
        f"{'?' if recovered is None else recovered} window(s) after Redis returned "
        f"(window {back_at}).",
        f"Admitted requests per window: {per_window}",
        f"Processes still pacing locally at the end: {row.fallback_at_end}",
    ]


async def worker(opts: dict[str, Any]) -> dict[str, Any]:
    requests, per = opts["rate_limit"]
    prompts = [f"{opts['name']}-{i}" for i in range(opts["runs"])]
    if opts["redis"]:
        import redis.asyncio  # noqa: F401  (imported before the start, like aiohttp)
    await asyncio.sleep(max(0.0, opts["start_at"] - time.monotonic()))
    began = time.monotonic()
    async with gi.Session(
        "runbase",
        api_key=KEY,
        base_url=opts["base_url"],
        rate_limit=gi.RateLimit(requests=requests, per=per),
        redis=opts["redis"],
    ) as session:
        results = await session.generate_many(prompts, return_exceptions=True)
        fallback = bool(getattr(session.limiter, "fallback", False))
        stats = session.stats.as_dict()
        if os.environ.get("FLEET_DEBUG"):
            print(repr(session.limiter), session.stats, file=sys.stderr)
    ok = sum(isinstance(r, gi.Result) for r in results)
    return {
        "ok": ok,
        "errors": len(results) - ok,
        "finished": time.monotonic(),
        "began": began,
        "fallback": fallback,
        "stats": stats,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__)
    parser.add_argument("--time-scale", type=float, default=TIME_SCALE)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if os.environ.get("FLEET_DEBUG"):
            import logging

            logging.basicConfig(level=logging.INFO, format="%(relativeCreated)d %(message)s")
        print(json.dumps(asyncio.run(worker(json.loads(args.worker)))), flush=True)
        return
    print(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
