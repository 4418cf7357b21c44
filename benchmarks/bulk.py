"""Figures 1-3 in bulk, 7-10 in learning: many runs against a rate-limited simulator.

The simulator runs in this process, because detection delay compares the
server's ``finishes_at`` with the moment the caller holds the result, both on
one ``time.monotonic`` clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

from ._common import DEFAULT_LIMIT, KEY, SEED, WINDOW, cancel_all, delays, mean, prompts, speed
from .baseline import BaselineClient

__all__ = ["Bulk", "bulk_baseline", "bulk_ours", "bulk_warm", "bulk_warm_baseline"]

#: Our runs get this many times the ideal wall time before the scenario gives up on them.
OURS_CAP = 5.0
#: How often the drift watcher looks at the simulator's run count, in seconds.
DRIFT_CHECK = 0.002
#: Samples of the server's request count per rate window, in bulk jobs.
LOAD_SAMPLES = 20


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
                async for run in session.as_completed(prompts(runs, "bulk")):
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
            await cancel_all(helpers)
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
    speed(sim, factor)
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
    todo = prompts(runs, "bulk")
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
                    await client.gather(todo)
                else:
                    await client.bounded(todo, concurrency)
        except TimeoutError:
            row.capped = True
        finally:
            await cancel_all([watcher, sampler])
        row.wall = time.monotonic() - started
        outcome = client.outcome
        row.delays, row.durations = delays(outcome, sim)
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
