"""Figure 3 when idle: single runs one after the other, the budget otherwise idle.

The simulator runs in this process (see ``bulk``: delays need one clock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

from ._common import DEFAULT_LIMIT, KEY, SEED, WINDOW, delays, mean, prompts, speed
from .baseline import BaselineClient

__all__ = ["Idle", "idle_baseline", "idle_ours"]


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
        for i, prompt in enumerate(prompts(runs, "idle")):
            if drift != 1.0 and i == drift_at:
                speed(sim, drift)
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
        for i, prompt in enumerate(prompts(runs, "idle")):
            if drift != 1.0 and i == drift_at:
                speed(sim, drift)
                row.change_at = i
            await client.generate(prompt)
        row.delays, row.durations = delays(client.outcome, sim)
        row.requests = sim.stats.requests
        row.polls = sim.stats.polls
        row.rate_limited = sim.stats.rate_limited
    return row
