"""Web-app load (issue 22): requests arriving steadily at a share of the key's budget.

A web app does not submit a batch: its users' requests arrive one by one while
the budget is busy but, ideally, not saturated, and what matters is how late
each user sees a finished image. Here:

- **Budget**: Runbase's limit, ``DEFAULT_LIMIT`` requests per ``WINDOW`` s per
  key, creates and polls together, rejected requests counted (a client that
  keeps knocking stays locked out).
- **Load** ``f``, as issue 22 defines it: runs arrive at ``f`` times the
  budget's rate, ``f * DEFAULT_LIMIT / WINDOW`` runs per second, so each run
  has ``1 / f`` requests of budget (a quarter: 4, one create and about 3
  polls). Note the arithmetic: a run needs at least 2 requests (its create and
  one poll), so at 1/2 the budget is exactly saturated with one poll per run,
  and at 3/4 (1.33 requests per run) no client can keep up; *throughput kept*
  is then at most ``(1 / f) / 2`` (0.67) by construction (``Steady.kept_bound``).
  So loads are also stated as a share of the key's **run capacity**
  (``DEFAULT_LIMIT / WINDOW / 2`` runs per second, a create and one poll
  each): ``capacity = 2 f``. Half the run capacity is the issue's quarter of
  the budget; three quarters of it is ``f = 3/8``, 2.67 requests per run.
  ``--steady-loads`` measures other shares.
- **Arrivals** are evenly spaced, not Poisson: "steady", and the same arrival
  times for every client, so the rows differ only by client; Poisson bursts
  at 1/2 (where the budget is saturated) would add queueing noise of their
  own that swamps the poll planner's share.
- **Runs** last ``DURATION`` (8-10 s, uniform), time compressed like the other
  scenarios (``time_scale``).

Measured per job: mean detection delay (from the run finishing on the
simulator to the client holding the result) over mean run time, polls answered
per run, the 429 share of all requests, and *throughput kept*: the arrivals'
span over the span of the server's creates (1.0: creates kept pace with
arrivals). Runs ``WARMUP`` and later (in creation order) are judged, so a
cold start (measured elsewhere) does not weigh on a steady-state figure.

Clients: ours in one process (``Session``, public API only); ours in
``FLEET`` OS processes sharing the key through a real ``redis-server``
(``Session(redis=...)``), the arrivals dealt round-robin so the fleet's
combined arrivals are the same even sequence; and the hand-written client
(``baseline``) on the same load. ``python -m benchmarks --only steady`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import memory_session

from ._common import DEFAULT_LIMIT, KEY, SEED, WINDOW, mean, prompts
from ._processes import collect, redis_server, spawn
from .baseline import BaselineClient

__all__ = [
    "DURATION",
    "FLEET",
    "FLEET_LOAD",
    "LOADS",
    "WARMUP",
    "Steady",
    "steady_baseline",
    "steady_fleet",
    "steady_memory",
    "steady_ours",
]

#: Shares of the budget the arrivals take: issue 22's rows (1/4, 1/2, 3/4), and 3/8,
#: three quarters of the key's run capacity (1/4 is half of it).
LOADS = (0.25, 0.375, 0.5, 0.75)
#: Run durations in provider seconds, uniform.
DURATION = (8.0, 10.0)
#: Processes in the fleet, and the fleet's combined load.
FLEET = 4
FLEET_LOAD = 0.5
#: Runs (in creation order) left out of the judged figures: the cold start.
WARMUP = 10
#: A job gets its arrivals' span plus this many times (the ideal time of its runs at 2
#: requests each, plus the longest run), then stops: the hand-written client, locked out
#: by counted 429s, would otherwise keep knocking for minutes.
CAP = 1.5
#: Seconds the fleet's workers get to import their libraries before the shared start.
STARTUP = 3.0


@dataclass(slots=True)
class Steady:
    """One steady job: ``runs`` arrivals at ``load`` of the budget, by ``processes`` processes."""

    client: str
    processes: int
    load: float
    runs: int
    rate: float
    """The budget, requests per (compressed) second."""
    resolved: int = 0
    failed: int = 0
    capped: bool = False
    requests: int = 0
    rate_limited: int = 0
    by_run: list[tuple[int, float, float]] = field(default_factory=list)
    """Per run created, in creation order: (polls answered, detection delay or NaN, duration)."""
    created: int = 0
    """Runs the server created."""
    created_span: float = 0.0
    """Seconds from the first run's creation on the server to the last one's."""
    create_waits: list[float] = field(default_factory=list)
    """Per run created, in creation order: seconds from its arrival to its creation on the
    server (the wait for a create's slot, which the detection delay does not see)."""

    @property
    def arrivals(self) -> float:
        """Runs arriving per (compressed) second."""
        return self.load * self.rate

    @property
    def budget_per_run(self) -> float:
        """Requests of budget each arriving run has (``1 / load``)."""
        return self.rate / self.arrivals

    @property
    def capacity(self) -> float:
        """The load as a share of the key's run capacity (a create and one poll per run)."""
        return 2.0 * self.load

    @property
    def kept_bound(self) -> float:
        """The most throughput any client can keep: runs need 2 requests each (1.0 at most)."""
        return min(1.0, self.budget_per_run / 2.0)

    @property
    def judged(self) -> list[tuple[int, float, float]]:
        """The resolved runs after the first ``WARMUP`` (all resolved ones in a short job)."""
        rows = self.by_run[WARMUP:] if len(self.by_run) > 2 * WARMUP else self.by_run
        return [row for row in rows if not math.isnan(row[1])]

    @property
    def delays(self) -> list[float]:
        return [d for _, d, _ in self.judged]

    @property
    def delay_share(self) -> float:
        """Mean detection delay over mean run time, judged runs."""
        rows = self.judged
        return mean([d for _, d, _ in rows]) / mean([t for _, _, t in rows]) if rows else math.nan

    @property
    def create_wait(self) -> float:
        """Mean seconds from arrival to creation on the server, runs after the first ``WARMUP``."""
        waits = self.create_waits[WARMUP:] if len(self.create_waits) > 2 * WARMUP else []
        return mean(waits or self.create_waits) if self.create_waits else math.nan

    @property
    def polls_per_run(self) -> float:
        rows = self.judged
        return mean([float(p) for p, _, _ in rows]) if rows else math.nan

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0

    @property
    def kept(self) -> float:
        """Throughput kept, 0-1: the pace of the server's creates over the arrivals' pace
        (capped at 1), times the share of arrivals resolved.

        1.0 means every arrival was resolved and creates kept pace with arrivals;
        below it a backlog grew, or runs were lost.
        """
        done = self.resolved / self.runs if self.runs else math.nan
        if self.created < 2 or self.created_span <= 0:
            return done
        return min(1.0, (self.created - 1) / self.created_span / self.arrivals) * done


def config(time_scale: float) -> SimulatorConfig:
    """Runbase's limit with rejected requests counted, runs of ``DURATION``."""
    return SimulatorConfig(
        time_scale=time_scale,
        rate_limit=DEFAULT_LIMIT,
        rate_window=WINDOW,
        count_rejected=True,
        duration="uniform",
        duration_min=DURATION[0],
        duration_max=DURATION[1],
        seed=SEED,
    )


def _row(client: str, processes: int, load: float, runs: int, time_scale: float) -> Steady:
    return Steady(client, processes, load, runs, rate=DEFAULT_LIMIT / (WINDOW * time_scale))


def _cap(row: Steady, time_scale: float) -> float:
    span = row.runs / row.arrivals
    return span + CAP * (2 * row.runs / row.rate + DURATION[1] * time_scale)


async def arrive(
    start: float,
    gap: float,
    todo: Sequence[tuple[int, str]],
    one: Callable[[str], Awaitable[None]],
    cap: float,
) -> tuple[int, bool]:
    """Start ``one(prompt)`` for item ``(i, prompt)`` at ``start + i * gap``; wait for all.

    Returns (how many raised, whether ``cap`` seconds after ``start`` cut the job off).
    """

    async def later(i: int, prompt: str) -> None:
        await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
        await one(prompt)

    tasks = [asyncio.ensure_future(later(i, p)) for i, p in todo]
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, start + cap - time.monotonic()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failed = sum(1 for task in done if task.exception() is not None)
    return failed, bool(pending)


def _fill(
    row: Steady, sim: Simulator, done: dict[str, float], arrived: dict[str, float] | None = None
) -> None:
    served = sorted(sim.runs.items(), key=lambda item: item[1].created_at)
    if arrived is not None:
        row.create_waits = [run.created_at - arrived[rid] for rid, run in served if rid in arrived]
    row.by_run = [
        (run.polls, done[rid] - run.finishes_at if rid in done else math.nan, run.duration)
        for rid, run in served
    ]
    row.resolved = len(done)
    row.requests = sim.stats.requests
    row.rate_limited = sim.stats.rate_limited
    row.created = len(served)
    if served:
        row.created_span = served[-1][1].created_at - served[0][1].created_at


def _belief(time_scale: float) -> gi.RateLimit:
    return gi.RateLimit(DEFAULT_LIMIT, WINDOW * time_scale)


async def steady_ours(load: float, runs: int, *, time_scale: float) -> Steady:
    """One ``Session``: ``await session.submit(prompt)`` then ``await run`` per arrival."""
    row = _row("gptimage-async", 1, load, runs, time_scale)
    done: dict[str, float] = {}
    arrived: dict[str, float] = {}
    async with Simulator(config(time_scale)) as sim:
        async with gi.Session(
            "runbase",
            api_key=KEY,
            base_url=sim.base_url("runbase"),
            rate_limit=_belief(time_scale),
            on_exit="cancel",
        ) as session:
            one = _timed(session, time.monotonic, arrived, done)
            todo = list(enumerate(prompts(runs, f"steady {load:g}")))
            row.failed, row.capped = await arrive(
                time.monotonic(), 1 / row.arrivals, todo, one, _cap(row, time_scale)
            )
        _fill(row, sim, done, arrived)
    return row


def _timed(
    session: gi.Session,
    clock: Callable[[], float],
    arrived: dict[str, float],
    done: dict[str, float],
) -> Callable[[str], Awaitable[None]]:
    """One arrival: submit ``prompt``, await its run; its arrival and end on ``clock`` (s)."""

    async def one(prompt: str) -> None:
        at = clock()
        run = await session.submit(prompt)
        assert run.id is not None
        arrived[run.id] = at
        await run
        done[run.id] = clock()

    return one


class _Far(Simulator):
    """The simulator ``one_way`` seconds away: each request and each answer takes that long
    on the loop (a round trip of twice it); ``0.0``: no wait at all."""

    def __init__(self, config: SimulatorConfig, *, clock: Callable[[], float], one_way: float):
        super().__init__(config, clock=clock)
        self._one_way = one_way

    async def respond(self, *args: Any, **kwargs: Any) -> Any:
        if self._one_way > 0.0:
            await asyncio.sleep(self._one_way)
        reply = await super().respond(*args, **kwargs)
        if self._one_way > 0.0:
            await asyncio.sleep(self._one_way)
        return reply


async def steady_memory(
    load: float, runs: int, *, seed: int = SEED, one_way: float = 0.0, time_scale: float = 1.0
) -> Steady:
    """``steady_ours`` on the running loop's clock, the simulator in memory (no socket).

    Run it on a fake clock (tests/_clock.py) for the pacing alone: no
    scheduling noise, and a 10 s window costs no wall time. ``one_way``
    (seconds) delays each request and each answer, a round trip of twice it.
    """
    loop = asyncio.get_running_loop()
    row = _row("gptimage-async", 1, load, runs, time_scale)
    sim = _Far(config(time_scale).replace(seed=seed), clock=loop.time, one_way=one_way)
    done: dict[str, float] = {}
    arrived: dict[str, float] = {}
    async with memory_session(
        "runbase",
        simulator=sim,  # ours, to be far away: closed below
        api_key=KEY,
        rate_limit=_belief(time_scale),
        on_exit="cancel",
    ) as (_, session):
        one = _timed(session, loop.time, arrived, done)
        gap = 1 / row.arrivals
        start = loop.time()
        tasks = []
        for i, prompt in enumerate(prompts(runs, f"steady {load:g}")):
            await asyncio.sleep(max(0.0, start + i * gap - loop.time()))
            tasks.append(asyncio.ensure_future(one(prompt)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        row.failed = sum(1 for r in results if isinstance(r, BaseException))
    await sim.close()
    _fill(row, sim, done, arrived)
    return row


async def steady_baseline(load: float, runs: int, *, time_scale: float) -> Steady:
    """The hand-written ``generate(prompt)`` per arrival, on the same load."""
    row = _row("hand-written", 1, load, runs, time_scale)
    async with (
        Simulator(config(time_scale)) as sim,
        BaselineClient(sim.base_url("runbase"), KEY, time_scale=time_scale) as client,
    ):

        async def one(prompt: str) -> None:
            run = await client.generate(prompt)
            if run.error is not None:
                raise run.error

        todo = list(enumerate(prompts(runs, f"steady {load:g}")))
        row.failed, row.capped = await arrive(
            time.monotonic(), 1 / row.arrivals, todo, one, _cap(row, time_scale)
        )
        done = {
            run.run_id: run.done_at
            for run in client.outcome.runs
            if run.run_id is not None and run.done_at is not None
        }
        _fill(row, sim, done)
    return row


async def steady_fleet(
    load: float, runs: int, *, time_scale: float, processes: int = FLEET
) -> Steady:
    """``processes`` OS processes, one ``Session(redis=...)`` each, sharing the key.

    Arrival ``i`` of the even sequence goes to process ``i % processes``; a
    real ``redis-server`` is started for the job and killed after it.
    """
    row = _row(f"gptimage-async, {processes} processes, Redis", processes, load, runs, time_scale)
    gap = 1 / row.arrivals
    texts = prompts(runs, f"steady fleet {load:g}")
    with redis_server() as (url, _proc, _argv):
        async with Simulator(config(time_scale)) as sim:
            start = time.monotonic() + STARTUP
            procs = [
                await spawn(
                    "benchmarks.steady",
                    {
                        "base_url": sim.base_url("runbase"),
                        "redis": url,
                        "rate_limit": [DEFAULT_LIMIT, WINDOW * time_scale],
                        "start_at": start,
                        "gap": gap,
                        "cap": _cap(row, time_scale),
                        "todo": [(i, texts[i]) for i in range(k, runs, processes)],
                    },
                )
                for k in range(processes)
            ]
            results = [await collect(proc) for proc in procs]
            done = {rid: at for r in results for rid, at in r["done"].items()}
            row.failed = sum(r["failed"] for r in results)
            row.capped = any(r["capped"] for r in results)
            _fill(row, sim, done)
    return row


async def worker(opts: dict[str, Any]) -> dict[str, Any]:
    """One fleet process: its share of the arrivals, through a Redis-shared ``Session``."""
    import redis.asyncio  # noqa: F401  (imported before the start, like aiohttp)

    requests, per = opts["rate_limit"]
    done: dict[str, float] = {}
    async with gi.Session(
        "runbase",
        api_key=KEY,
        base_url=opts["base_url"],
        rate_limit=gi.RateLimit(requests, per),
        redis=opts["redis"],
        on_exit="cancel",
    ) as session:

        async def one(prompt: str) -> None:
            run = await session.submit(prompt)
            await run
            assert run.id is not None
            done[run.id] = time.monotonic()

        todo = [(int(i), str(p)) for i, p in opts["todo"]]
        failed, capped = await arrive(opts["start_at"], opts["gap"], todo, one, opts["cap"])
    return {"done": done, "failed": failed, "capped": capped}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.steady --worker JSON``: one fleet worker (prints JSON)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.steady")
    parser.add_argument("--worker", required=True, help="the worker's options, as JSON")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(worker(json.loads(args.worker)))), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
