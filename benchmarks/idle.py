"""Figure 3 when idle: single runs one after the other, the budget otherwise idle.

The simulator runs in this process (see ``bulk``: delays need one clock).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import memory_session

from ._common import DEFAULT_LIMIT, KEY, SEED, WINDOW, delays, mean, prompts, speed
from .baseline import BaselineClient

__all__ = ["Idle", "idle_baseline", "idle_floor", "idle_memory", "idle_ours"]


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


async def _single_runs(
    session: gi.Session, sim: Simulator, row: Idle, *, drift_at: int, clock: Callable[[], float]
) -> Idle:
    """``row.runs`` single runs through ``session``, each awaited before the next.

    ``clock`` is the simulator's (seconds): a run's delay is from its
    ``finishes_at`` to the caller holding the result. Durations change by
    ``row.drift`` from run ``drift_at`` on.
    """
    for i, prompt in enumerate(prompts(row.runs, "idle")):
        if row.drift != 1.0 and i == drift_at:
            speed(sim, row.drift)
            row.change_at = i
        run = await session.submit(prompt)
        await run
        now = clock()
        assert run.id is not None
        served = sim.runs[run.id]
        row.delays.append(now - served.finishes_at)
        row.durations.append(served.duration)
    row.requests = sim.stats.requests
    row.polls = sim.stats.polls
    row.rate_limited = sim.stats.rate_limited
    return row


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
        return await _single_runs(session, sim, row, drift_at=drift_at, clock=time.monotonic)


async def idle_memory(
    runs: int, *, seed: int = SEED, drift: float = 1.0, drift_at: int = 0
) -> Idle:
    """``idle_ours`` on the running loop's clock, the simulator in memory (no socket).

    Run it on a fake clock (tests/_clock.py): the pacing alone, no round trip,
    time scale 1 (a 10 s window costs no wall time). ``drift`` as for ``idle_ours``.
    """
    loop = asyncio.get_running_loop()
    row = Idle("gptimage-async", runs, drift=drift)
    async with memory_session(
        config=_idle_config(1.0).replace(seed=seed),
        api_key=KEY,
        rate_limit=gi.RateLimit(DEFAULT_LIMIT, WINDOW),
    ) as (sim, session):
        return await _single_runs(session, sim, row, drift_at=drift_at, clock=loop.time)


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


async def idle_floor(
    runs: int, *, seed: int = SEED, reserve: int = 0, shortest: float = 3.0, longest: float = 10.0
) -> Idle:
    """An oracle's single runs, one after the other: the floor of ``Idle.delay_share``.

    It knows the durations' true range (``shortest``-``longest`` provider
    seconds, the simulator's default uniform one) and that no run ends
    before ``shortest``: after each create it polls evenly from there at the
    densest spacing the sliding window allows, ``DEFAULT_LIMIT`` requests per
    ``WINDOW`` less ``reserve`` kept free (our limiter keeps 2 of every
    window from its speculative polls). The binding window holds one
    run's create and ``longest - shortest`` seconds of polls (its own, and
    the previous run's last ones), so ``DEFAULT_LIMIT - reserve - 1`` polls
    over that span. Talks to the simulator in memory (``MemoryTransport``) on
    the running loop's clock, with no round trip: run it on a fake clock
    (tests/_clock.py) for the pacing alone. No 429 is expected: any is counted.
    """
    from gptimage_async._transport._memory import MEMORY_ORIGIN, MemoryTransport
    from gptimage_async.simulator._app import BASE_PATHS

    loop = asyncio.get_running_loop()
    config = SimulatorConfig(time_scale=1.0, seed=seed, count_rejected=True)
    sim = Simulator(config, clock=loop.time)
    transport = MemoryTransport(sim, MEMORY_ORIGIN + BASE_PATHS["runbase"], KEY)
    budget = DEFAULT_LIMIT - reserve
    spacing = (longest - shortest) / (budget - 1)
    sent: collections.deque[float] = collections.deque()
    row = Idle("oracle", runs)

    async def send(method: str, target: str, body: bytes | None = None) -> dict[str, object]:
        # The sliding window: wait until the budget-th request back has left it.
        while len(sent) >= budget:
            if sent[0] + WINDOW < loop.time():
                sent.popleft()
            else:
                await asyncio.sleep(sent[0] + WINDOW - loop.time() + 1e-6)
        sent.append(loop.time())
        answer = await transport.send(method, target, body)
        if answer.status == 429:
            row.rate_limited += 1
        return dict(json.loads(answer.body)) if answer.status == 200 else {}

    body = json.dumps({"model": "openai/gpt-image-1.5", "input": {"prompt": ""}})
    for prompt in prompts(runs, "idle floor"):
        made = await send("POST", "/runs", body.replace('""', json.dumps(prompt)).encode())
        run_id, created = str(made["id"]), loop.time()
        age = shortest
        while True:
            await asyncio.sleep(max(0.0, created + age - loop.time()))
            row.polls += 1
            if (await send("GET", f"/runs/{run_id}")).get("status") == "succeeded":
                break
            age += spacing
        served = sim.runs[run_id]
        row.delays.append(loop.time() - served.finishes_at)
        row.durations.append(served.duration)
    row.requests = sim.stats.requests
    await transport.aclose()
    return row
