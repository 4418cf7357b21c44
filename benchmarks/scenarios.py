"""The measurements. Each scenario returns plain numbers; ``report`` judges and prints them.

Bulk and idle scenarios run the simulator in this process, because detection
delay compares the server's ``finishes_at`` with the moment the caller holds
the result, both on one ``time.monotonic`` clock. CPU and memory scenarios run
it in a child process (``_server``), so the server's work stays out of the
client's CPU time and heap.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

from ._server import ServerProcess
from .baseline import BaselineClient, BaselineOutcome

__all__ = [
    "BASELINE_CONCURRENCY",
    "DEFAULT_LIMIT",
    "PROBE_SLEEP",
    "WINDOW",
    "Bulk",
    "Cpu",
    "Idle",
    "InFlight",
    "bulk_baseline",
    "bulk_ours",
    "bulk_warm",
    "bulk_warm_baseline",
    "cpu_bare",
    "cpu_ours",
    "cpu_pair",
    "idle_baseline",
    "idle_ours",
    "in_flight",
    "mean",
    "percentile",
]

KEY = "sk-benchmark"
#: Runbase's documented limit: 20 requests per 10 s per key, creates and polls together.
DEFAULT_LIMIT = 20
WINDOW = 10.0
#: Seed of every simulator, so both clients see the same run durations.
SEED = 20_260_101
#: The semaphore of the bounded hand-written variant.
BASELINE_CONCURRENCY = 5
#: Our runs get this many times the ideal wall time before the scenario gives up on them.
OURS_CAP = 5.0
#: How often the drift watcher looks at the simulator's run count, in seconds.
DRIFT_CHECK = 0.002
#: Runs in flight, and warm-up runs, in the CPU scenario.
CPU_CONCURRENCY = 32
CPU_WARMUP = 64
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
#: Samples of the server's request count per rate window, in bulk jobs.
LOAD_SAMPLES = 20


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# -- figures 1-3 in bulk: many runs against a rate-limited simulator ----------------


@dataclass(slots=True)
class Bulk:
    """One bulk job of ``runs`` runs under a real limit of ``real_limit`` per window."""

    client: str
    belief: str
    real_limit: int
    counted: bool
    runs: int
    rate: float
    """The real budget, requests per (compressed) second."""
    succeeded: int = 0
    failed: int = 0
    wall: float = 0.0
    """Seconds from the first request to the last result, or to the cap."""
    capped: bool = False
    requests: int = 0
    rate_limited: int = 0
    polls: int = 0
    delays: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    trajectory: list[tuple[float, float]] = field(default_factory=list)
    """Ours only: (seconds since start, believed limit in requests per second)."""
    diagnostics: str = ""
    by_run: list[tuple[int, float, float]] = field(default_factory=list)
    """Per run of the job in creation order: (polls answered, detection delay or NaN, duration)."""
    drift: float = 1.0
    """Run durations were multiplied by this mid-job (1.0: no change)."""
    change_at: int | None = None
    """Runs created before durations changed (``None``: they never did)."""
    session: str = ""
    """Which session of a job this is ("first", "second"), when a job has two."""
    load: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since start, requests the server had received in this job), sampled
    ``LOAD_SAMPLES`` times a window: requests per window over the job, for the figures."""

    def polls_per_run(self, start: int = 0, stop: int | None = None) -> float:
        """Mean polls per run over runs ``start:stop`` in creation order (resolved ones only)."""
        picked = [p for p, delay, _ in self.by_run[start:stop] if not math.isnan(delay)]
        return sum(picked) / len(picked) if picked else float("nan")

    def delay_share(self, start: int = 0, stop: int | None = None) -> float:
        """Mean detection delay over mean run duration, runs ``start:stop`` in creation order."""
        rows = [(d, t) for _, d, t in self.by_run[start:stop] if not math.isnan(d)]
        return mean([d for d, _ in rows]) / mean([t for _, t in rows]) if rows else float("nan")

    @property
    def ideal(self) -> float:
        """Wall time at two requests per result and the full budget."""
        return 2 * self.succeeded / self.rate

    @property
    def efficiency(self) -> float:
        return self.ideal / self.wall if self.wall > 0 else float("nan")

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0

    @property
    def spent(self) -> int:
        """Requests that used the server's budget (rejected ones only when counted)."""
        return self.requests if self.counted else self.requests - self.rate_limited

    @property
    def budget_used(self) -> float:
        """Share of the wall time's budget that was spent: efficiency's first factor."""
        return self.spent / (self.rate * self.wall) if self.wall > 0 else float("nan")

    @property
    def economy(self) -> float:
        """Two requests per result over what was spent: efficiency's second factor."""
        return 2 * self.succeeded / self.spent if self.spent else float("nan")


def _bulk_config(time_scale: float, limit: int, counted: bool) -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=time_scale, rate_limit=limit, count_rejected=counted, seed=SEED
    )


def _prompts(n: int, tag: str) -> list[str]:
    return [f"benchmark {tag} prompt {i}" for i in range(n)]


async def bulk_ours(
    runs: int,
    *,
    time_scale: float,
    real_limit: int,
    belief_limit: int,
    counted: bool,
    drift: float = 1.0,
    drift_at: int = 0,
) -> Bulk:
    """``session.as_completed`` over ``runs`` prompts; the belief may differ from the real limit.

    With ``drift`` other than 1, run durations are multiplied by it once
    ``drift_at`` runs were created (the provider slowed down or sped up).
    """
    async with Simulator(_bulk_config(time_scale, real_limit, counted)) as sim:
        return await _ours_on(
            sim,
            runs,
            time_scale=time_scale,
            belief_limit=belief_limit,
            drift=drift,
            drift_at=drift_at,
        )


async def bulk_warm(
    runs: int, *, time_scale: float, counted: bool, state_file: Path
) -> tuple[Bulk, Bulk]:
    """The same job twice, two sessions one after the other sharing ``state_file``."""
    async with Simulator(_bulk_config(time_scale, DEFAULT_LIMIT, counted)) as sim:
        first = await _ours_on(
            sim, runs, time_scale=time_scale, belief_limit=DEFAULT_LIMIT, state_file=state_file
        )
        second = await _ours_on(
            sim, runs, time_scale=time_scale, belief_limit=DEFAULT_LIMIT, state_file=state_file
        )
    first.session, second.session = "first", "second"
    return first, second


async def _ours_on(
    sim: Simulator,
    runs: int,
    *,
    time_scale: float,
    belief_limit: int,
    drift: float = 1.0,
    drift_at: int = 0,
    state_file: Path | None = None,
) -> Bulk:
    config = sim.config
    real_limit = config.rate_limit or DEFAULT_LIMIT
    belief = gi.RateLimit(belief_limit, WINDOW * time_scale)
    label = "stated" if belief_limit == real_limit else "unknown (default start)"
    row = Bulk(
        "gptimage-async",
        label,
        real_limit,
        config.count_rejected,
        runs,
        rate=real_limit / (WINDOW * time_scale),
        drift=drift,
    )
    cap = OURS_CAP * 2 * runs / row.rate * max(1.0, drift)
    before = sim.stats.requests, sim.stats.rate_limited, sim.stats.polls
    # Only a session that remembers gets a state file: the others start cold by design.
    remember = {} if state_file is None else {"state_file": state_file}
    done: dict[str, float] = {}
    async with gi.Session(
        "runbase",
        api_key=KEY,
        base_url=sim.base_url("runbase"),
        rate_limit=belief,
        on_exit="cancel",
        **remember,  # type: ignore[arg-type]
    ) as session:
        started = time.monotonic()
        known = len(sim.runs)
        helpers = [
            asyncio.create_task(_sample_rate(session, started, WINDOW * time_scale, row)),
            asyncio.create_task(_sample_load(sim, started, WINDOW * time_scale, row)),
        ]
        if drift != 1.0:
            helpers.append(asyncio.create_task(_drift(sim, row, known, drift_at, drift)))
        last = started
        try:
            async with asyncio.timeout(cap):
                async for run in session.as_completed(_prompts(runs, "bulk")):
                    now = time.monotonic()
                    if run.error is not None or run.id is None:
                        row.failed += 1
                        continue
                    row.succeeded += 1
                    last = now
                    served = sim.runs[run.id]
                    done[run.id] = now
                    row.delays.append(now - served.finishes_at)
                    row.durations.append(served.duration)
        except TimeoutError:
            row.capped = True
        finally:
            for helper in helpers:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        row.wall = (time.monotonic() if row.capped else last) - started
        row.requests = sim.stats.requests - before[0]
        row.rate_limited = sim.stats.rate_limited - before[1]
        row.polls = sim.stats.polls - before[2]
        row.by_run = _by_run(sim, started, done)
        row.diagnostics = (
            f"{session._limiter.adaptive!r}; {session._scheduler.model!r}; "
            f"speculative polls {session.stats.speculative_polls}"
        )
    return row


def _by_run(sim: Simulator, since: float, done: dict[str, float]) -> list[tuple[int, float, float]]:
    """(polls, delay or NaN, duration) of each run created since ``since``, in creation order."""
    served = sorted(
        ((run_id, run) for run_id, run in sim.runs.items() if run.created_at >= since),
        key=lambda item: item[1].created_at,
    )
    return [
        (run.polls, done[run_id] - run.finishes_at if run_id in done else math.nan, run.duration)
        for run_id, run in served
    ]


async def _drift(sim: Simulator, row: Bulk, known: int, at: int, factor: float) -> None:
    """Once ``at`` runs of this job exist, multiply the simulator's run durations by ``factor``."""
    # Polled, not awaited on an event: the simulator has no hook for "a run was created".
    while True:
        if len(sim.runs) - known >= at:
            break
        await asyncio.sleep(DRIFT_CHECK)
    _speed(sim, factor)
    row.change_at = len(sim.runs) - known


async def _sample_load(sim: Simulator, started: float, window: float, row: Bulk) -> None:
    before = sim.stats.requests
    while True:
        row.load.append((time.monotonic() - started, sim.stats.requests - before))
        await asyncio.sleep(window / LOAD_SAMPLES)


async def _sample_rate(session: gi.Session, started: float, every: float, row: Bulk) -> None:
    while True:
        row.trajectory.append((time.monotonic() - started, session._limiter.adaptive.rate))
        await asyncio.sleep(every)


async def bulk_baseline(
    runs: int,
    *,
    time_scale: float,
    real_limit: int,
    counted: bool,
    concurrency: int | None,
    cap_factor: float,
    drift: float = 1.0,
    drift_at: int = 0,
) -> Bulk:
    """The hand-written client over the same prompts: ``gather`` or a semaphore.

    It gets ``cap_factor`` times the ideal wall time of the whole job; runs
    still going then are left out of its efficiency (which flatters it: they
    spent budget that is not credited to anyone). ``drift`` as in ``bulk_ours``.
    """
    async with Simulator(_bulk_config(time_scale, real_limit, counted)) as sim:
        return await _baseline_on(
            sim,
            runs,
            time_scale=time_scale,
            concurrency=concurrency,
            cap_factor=cap_factor,
            drift=drift,
            drift_at=drift_at,
        )


async def bulk_warm_baseline(
    runs: int, *, time_scale: float, counted: bool, concurrency: int, cap_factor: float
) -> tuple[Bulk, Bulk]:
    """The hand-written client on the same job twice: it has nothing to remember."""
    async with Simulator(_bulk_config(time_scale, DEFAULT_LIMIT, counted)) as sim:
        rows = []
        for _ in range(2):
            rows.append(
                await _baseline_on(
                    sim,
                    runs,
                    time_scale=time_scale,
                    concurrency=concurrency,
                    cap_factor=cap_factor,
                )
            )
    rows[0].session, rows[1].session = "first", "second"
    return rows[0], rows[1]


async def _baseline_on(
    sim: Simulator,
    runs: int,
    *,
    time_scale: float,
    concurrency: int | None,
    cap_factor: float,
    drift: float = 1.0,
    drift_at: int = 0,
) -> Bulk:
    config = sim.config
    real_limit = config.rate_limit or DEFAULT_LIMIT
    name = (
        "hand-written, gather" if concurrency is None else f"hand-written, semaphore({concurrency})"
    )
    row = Bulk(
        name,
        "-",
        real_limit,
        config.count_rejected,
        runs,
        rate=real_limit / (WINDOW * time_scale),
        drift=drift,
    )
    cap = cap_factor * 2 * runs / row.rate * max(1.0, drift)
    prompts = _prompts(runs, "bulk")
    before = sim.stats.requests, sim.stats.rate_limited, sim.stats.polls
    async with BaselineClient(sim.base_url("runbase"), KEY, time_scale=time_scale) as client:
        started = time.monotonic()
        known = len(sim.runs)
        watcher = (
            asyncio.create_task(_drift(sim, row, known, drift_at, drift)) if drift != 1.0 else None
        )
        sampler = asyncio.create_task(_sample_load(sim, started, WINDOW * time_scale, row))
        try:
            async with asyncio.timeout(cap):
                if concurrency is None:
                    await client.gather(prompts)
                else:
                    await client.bounded(prompts, concurrency)
        except TimeoutError:
            row.capped = True
        finally:
            for helper in (watcher, sampler):
                if helper is not None:
                    helper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
        row.wall = time.monotonic() - started
        outcome = client.outcome
        row.delays, row.durations = _delays(outcome, sim)
        row.succeeded = len(row.delays)
        row.failed = sum(1 for run in outcome.runs if run.error is not None)
        row.requests = sim.stats.requests - before[0]
        row.rate_limited = sim.stats.rate_limited - before[1]
        row.polls = sim.stats.polls - before[2]
        done = {
            run.run_id: run.done_at
            for run in outcome.runs
            if run.run_id is not None and run.done_at is not None
        }
        row.by_run = _by_run(sim, started, done)
    return row


def _delays(outcome: BaselineOutcome, sim: Simulator) -> tuple[list[float], list[float]]:
    """Detection delays and run durations of the runs the baseline resolved, in its order."""
    delays, durations = [], []
    for run in outcome.runs:
        if run.done_at is not None and run.run_id is not None:
            served = sim.runs[run.run_id]
            delays.append(run.done_at - served.finishes_at)
            durations.append(served.duration)
    return delays, durations


# -- figure 3 when idle: one run at a time ---------------------------------------------


@dataclass(slots=True)
class Idle:
    """``runs`` single runs, one after the other, with the budget otherwise idle.

    ``delays`` and ``durations`` are in submission order, so the first runs
    (before the duration model has learned anything) can be told apart.
    """

    client: str
    runs: int
    requests: int = 0
    polls: int = 0
    rate_limited: int = 0
    delays: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    drift: float = 1.0
    """Run durations were multiplied by this after ``change_at`` runs (1.0: no change)."""
    change_at: int | None = None

    def delay_share(self, start: int = 0, stop: int | None = None) -> float:
        """Mean delay over mean run duration, runs ``start:stop`` in submission order."""
        return mean(self.delays[start:stop]) / mean(self.durations[start:stop])


def _speed(sim: Simulator, factor: float) -> None:
    config = sim.config
    sim.config = config.replace(
        duration_min=config.duration_min * factor, duration_max=config.duration_max * factor
    )


def _idle_config(time_scale: float) -> SimulatorConfig:
    return SimulatorConfig(time_scale=time_scale, seed=SEED)


async def idle_ours(runs: int, *, time_scale: float, drift: float = 1.0, drift_at: int = 0) -> Idle:
    """``await session.submit(prompt)`` then ``await run``, ``runs`` times in a row.

    With ``drift`` other than 1, durations are multiplied by it after ``drift_at`` runs.
    """
    config = _idle_config(time_scale)
    row = Idle("gptimage-async", runs, drift=drift)
    async with (
        Simulator(config) as sim,
        gi.Session(
            "runbase",
            api_key=KEY,
            base_url=sim.base_url("runbase"),
            rate_limit=gi.RateLimit(DEFAULT_LIMIT, WINDOW * time_scale),
        ) as session,
    ):
        for i, prompt in enumerate(_prompts(runs, "idle")):
            if drift != 1.0 and i == drift_at:
                _speed(sim, drift)
                row.change_at = i
            run = await session.submit(prompt)
            await run
            now = time.monotonic()
            assert run.id is not None
            served = sim.runs[run.id]
            row.delays.append(now - served.finishes_at)
            row.durations.append(served.duration)
        row.requests = sim.stats.requests
        row.polls = sim.stats.polls
        row.rate_limited = sim.stats.rate_limited
    return row


async def idle_baseline(
    runs: int, *, time_scale: float, drift: float = 1.0, drift_at: int = 0
) -> Idle:
    """The hand-written ``generate(prompt)``, ``runs`` times in a row (``drift`` as above)."""
    config = _idle_config(time_scale)
    row = Idle("hand-written", runs, drift=drift)
    async with (
        Simulator(config) as sim,
        BaselineClient(sim.base_url("runbase"), KEY, time_scale=time_scale) as client,
    ):
        for i, prompt in enumerate(_prompts(runs, "idle")):
            if drift != 1.0 and i == drift_at:
                _speed(sim, drift)
                row.change_at = i
            await client.generate(prompt)
        row.delays, row.durations = _delays(client.outcome, sim)
        row.requests = sim.stats.requests
        row.polls = sim.stats.polls
        row.rate_limited = sim.stats.rate_limited
    return row


# -- figure 4: client CPU per HTTP exchange ----------------------------------------------


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
        await session.generate_many(_prompts(CPU_WARMUP, "warm-up"), concurrency=CPU_CONCURRENCY)
        before = session.stats.requests
        wall, cpu = time.perf_counter(), time.process_time()
        await session.generate_many(_prompts(runs, "cpu"), concurrency=CPU_CONCURRENCY)
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


# -- figures 5 and 6: 10,000 runs in flight ----------------------------------------------


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


async def in_flight(runs: int, *, window: float) -> InFlight:
    """Submit ``runs`` runs that will not finish, measure the heap, then watch the poller."""
    row = InFlight(runs, window=window)
    with ServerProcess(_in_flight_config()) as base_url:
        async with gi.Session(
            "runbase",
            api_key=KEY,
            base_url=base_url,
            rate_limit=gi.RateLimit(100_000, 1.0),
            on_exit="cancel",
        ) as session:
            await _submit_all(session, _prompts(IN_FLIGHT_WARMUP, "warm-up"))
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
            assert len(session.runs) == runs + IN_FLIGHT_WARMUP
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
