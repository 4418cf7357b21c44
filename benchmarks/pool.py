"""Issue 19's proof: a pool of three keys on two sellers, against one simulator.

One simulator serves three keys, each with Runbase's documented limit
(``DEFAULT_LIMIT`` requests per ``WINDOW`` s, creates and polls together),
rejected requests counted (a client that keeps knocking stays locked out):
two Runbase keys and one API in One key. Our client only: the hand-written
one knows one key. Three jobs, each a fresh simulator and a fresh
``Session(lanes=[...])``:

- ``combined``: ``session.as_completed`` over ``runs`` prompts, routing
  ``"earliest"``. Efficiency is the ideal wall time (2 requests per result
  at the pool's combined limit, 3x one key's) over the measured one.
- ``closure``: the same job, and a third of the way in (once ``runs / 3``
  runs exist on the server) the API in One key's credits run out: the
  simulator sets its balance to what it has spent, so its next create gets
  402 ``insufficient_balance``. Judged: every prompt resolved exactly once
  (yielded once by ``as_completed``), nothing paid twice (the simulator's
  runs per prompt, over every key), and the requests the two remaining lanes
  had admitted per window after the closure, which should be back at their
  combined limit within one window.
- ``price-first``: routing ``"cheapest"``, API in One at its published 10
  credits, the Runbase lanes dearer (``DEAR``); the runs arrive evenly
  spaced (``benchmarks.steady.arrive``) at ``PRICE_LOAD`` of the cheap
  lane's budget, so the cheap lane is never saturated and every create
  should go to it. The share of creates on the cheap lane is counted per key
  on the simulator.

``python -m benchmarks --only pool`` runs it; ``--quick`` at a tiny size.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import gptimage_async as gi
from gptimage_async.simulator import KeyConfig, Simulator, SimulatorConfig

from ._common import DEFAULT_LIMIT, SEED, WINDOW, cancel_all, prompts
from .steady import arrive

__all__ = [
    "CASES",
    "DEAR",
    "LANES",
    "PRICE_LOAD",
    "LaneCount",
    "PoolRow",
    "pool_closure",
    "pool_combined",
    "pool_price_first",
]

#: The pool: (label, provider, key). The simulator takes any key with its protocol's prefix.
LANES = (
    ("runbase-1", "runbase", "sk-pool-one"),
    ("runbase-2", "runbase", "sk-pool-two"),
    ("apiinone", "apiinone", "aio_pool_three"),
)
#: The lane whose credits run out in the ``closure`` job (index into ``LANES``).
CLOSED = 2
#: Runbase publishes no price; in ``price-first`` its lanes cost this, dearer than
#: API in One's published 10 / 28 credits.
DEAR = {"medium": 15, "high": 40}
#: ``price-first``: runs arrive at this share of the cheap lane's budget, i.e.
#: ``PRICE_LOAD * DEFAULT_LIMIT / WINDOW`` runs per second, ``1 / PRICE_LOAD``
#: requests of its budget per run (a run needs at least 2: spare capacity).
PRICE_LOAD = 0.25
#: Jobs get this many times their ideal wall time before the scenario gives up on them.
CAP = 5.0
#: ... and never less than this (seconds): the cap finds a hung job, it does not judge
#: one; a quick run's jobs (ideal ~0.1 s) met a loaded machine's slow start.
MIN_CAP = 10.0
#: Samples of the server's per-key counters per rate window.
SAMPLES = 20
#: How often the closure watcher looks at the simulator's run count, in seconds.
CHECK = 0.002
#: A window is "back at the limit" when the remaining lanes admitted this share of it.
FULL = 0.95
CASES = ("combined", "closure", "price-first")


@dataclass(slots=True)
class LaneCount:
    """What one key saw on the simulator during a job."""

    label: str
    provider: str
    price: float | None
    """Its medium price in the job's lanes (``None``: unknown)."""
    creates: int = 0
    requests: int = 0
    rate_limited: int = 0
    refused: int = 0
    """Creates answered 402, 403 or 429 ``USAGE_EXCEEDED`` (the lane's account ran out)."""
    spent: float | None = None
    """``session.stats.spend`` for this lane (its price unit), ``None`` when unknown."""


@dataclass(slots=True)
class PoolRow:
    """One pool job of ``runs`` runs over ``len(lanes)`` keys of ``rate`` requests/s each."""

    case: str
    routing: str
    runs: int
    rate: float
    """One key's budget, requests per (compressed) second."""
    window: float
    """One rate window, compressed seconds."""
    lanes: list[LaneCount] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    yielded: Counter[int] = field(default_factory=Counter)
    """How many times each prompt (by index) came back resolved."""
    wall: float = 0.0
    capped: bool = False
    requests: int = 0
    rate_limited: int = 0
    duplicates: int = 0
    """Runs the simulator created beyond the first for one prompt, over every key."""
    closed_at: float | None = None
    """``closure``: seconds after the start the lane's credits ran out."""
    created_before: int = 0
    """``closure``: runs on the server when the credits ran out."""
    after: list[int] = field(default_factory=list)
    """``closure``: requests the remaining lanes admitted in each whole window after it,
    until the last create (a job's tail admits fewer by nature)."""
    before: int | None = None
    """``closure``: requests the remaining lanes admitted in the window before it."""
    creates_after: list[int] = field(default_factory=list)
    """``closure``: runs created (on any lane) in those windows."""
    load: float = 0.0
    """``price-first``: the arrivals' share of the cheap lane's budget."""
    samples: list[tuple[float, list[int], int]] = field(default_factory=list)
    """(seconds since start, requests admitted per lane, runs on the server)."""
    diagnostics: str = ""
    """Each lane's limiter and duration model at the end, and the session's counters."""

    @property
    def open_rate(self) -> float:
        """The pool's combined limit, requests per second (all lanes)."""
        return self.rate * len(self.lanes)

    @property
    def ideal(self) -> float:
        """Wall time at two requests per result and the combined limit of the lanes open.

        In ``closure``, the runs made after the credits ran out are counted at
        the remaining lanes' combined limit.
        """
        if self.closed_at is None:
            return 2 * self.succeeded / self.open_rate
        before = min(self.created_before, self.succeeded)
        rest = self.succeeded - before
        return 2 * before / self.open_rate + 2 * rest / (self.open_rate - self.rate)

    @property
    def efficiency(self) -> float:
        return self.ideal / self.wall if self.wall > 0 else math.nan

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0

    @property
    def resolved_once(self) -> int:
        """Prompts that came back exactly once."""
        return sum(1 for n in self.yielded.values() if n == 1)

    @property
    def resolved_twice(self) -> int:
        return sum(1 for n in self.yielded.values() if n > 1)

    @property
    def remaining_limit(self) -> int:
        """Requests per window the lanes left open after the closure may make."""
        return DEFAULT_LIMIT * (len(self.lanes) - 1)

    @property
    def windows_to_recover(self) -> int | None:
        """Whole windows after the closure before one admitted ``FULL`` of the remaining
        limit on the remaining lanes (0: the first window did); ``None``: none did."""
        for k, admitted in enumerate(self.after):
            if admitted >= FULL * self.remaining_limit:
                return k
        return None

    @property
    def cheap_share(self) -> float:
        """Share of the runs created that were created on the cheapest lane."""
        created = sum(lane.creates for lane in self.lanes)
        if not created:
            return math.nan
        cheapest = min(self.lanes, key=lambda lane: math.inf if lane.price is None else lane.price)
        return cheapest.creates / created


def _config(time_scale: float, keys: dict[str, KeyConfig] | None = None) -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=time_scale,
        rate_limit=DEFAULT_LIMIT,
        rate_window=WINDOW,
        count_rejected=True,
        seed=SEED,
        keys=keys or {},
    )


def _lanes(sim: Simulator, time_scale: float, *, priced: bool) -> list[gi.Lane]:
    belief = gi.RateLimit(DEFAULT_LIMIT, WINDOW * time_scale)
    return [
        gi.Lane(
            provider,
            key,
            base_url=sim.base_url(provider),  # type: ignore[arg-type]
            rate_limit=belief,
            label=label,
            prices=DEAR if priced and provider == "runbase" else None,
        )
        for label, provider, key in LANES
    ]


def _row(case: str, routing: str, runs: int, time_scale: float, lanes: list[gi.Lane]) -> PoolRow:
    window = WINDOW * time_scale
    return PoolRow(
        case,
        routing,
        runs,
        rate=DEFAULT_LIMIT / window,
        window=window,
        lanes=[
            LaneCount(label, provider, spec.price("medium"))
            for (label, provider, _), spec in zip(LANES, lanes, strict=True)
        ],
    )


def _admitted(sim: Simulator) -> list[int]:
    out = []
    for _, _, key in LANES:
        stats = sim.stats.key(key)
        out.append(stats.create_requests + stats.polls - stats.rate_limited)
    return out


async def _sample(sim: Simulator, started: float, row: PoolRow) -> None:
    while True:
        row.samples.append((time.monotonic() - started, _admitted(sim), sim.stats.creates))
        await asyncio.sleep(row.window / SAMPLES)


async def _close_lane(sim: Simulator, started: float, row: PoolRow, at: int) -> None:
    """Once ``at`` runs exist, the closing lane's balance drops to nothing (402 next)."""
    # Polled, not awaited on an event: the simulator has no hook for "a run was created".
    while True:
        if sim.stats.creates >= at:
            break
        await asyncio.sleep(CHECK)
    key = LANES[CLOSED][2]
    sim.set_key(key, credits=sim.spent(key))
    row.closed_at = time.monotonic() - started
    row.created_before = sim.stats.creates


def _fill(row: PoolRow, sim: Simulator, session: gi.Session) -> None:
    row.requests = sim.stats.requests
    row.rate_limited = sim.stats.rate_limited
    row.duplicates = sim.stats.duplicates
    spend = session.stats.spend
    for i, (lane, (_, _, key)) in enumerate(zip(row.lanes, LANES, strict=True)):
        stats = sim.stats.key(key)
        lane.creates = stats.creates
        lane.requests = stats.create_requests + stats.polls
        lane.rate_limited = stats.rate_limited
        lane.refused = stats.status_counts[402] + stats.status_counts[403]
        lane.refused += stats.status_counts[429] - stats.rate_limited
        if spend is not None:
            lane.spent = spend.lanes[i].spent
    # Private, as bulk's diagnostics are: the lanes' own limiters and duration models.
    parts = [
        f"{lane.spec.label}: {lane.limiter and lane.limiter.belief!r}; "
        f"{lane.scheduler and lane.scheduler.model!r}"
        for lane in session._lanes
    ]
    counts = session.stats
    parts.append(
        f"speculative polls {counts.speculative_polls}, polls {counts.polls}, "
        f"creates {counts.creates}"
    )
    row.diagnostics = "; ".join(parts)


def _windows(row: PoolRow, last_create: float) -> None:
    """Fill ``row.after`` and ``row.creates_after`` from the samples (``closure`` only)."""
    if row.closed_at is None or not row.samples:
        return

    samples = row.samples

    def at(t: float) -> tuple[float, float]:
        # Admitted on the remaining lanes and runs created by t, read linearly between
        # the samples around it (they come about SAMPLES a window, a sleep apart).
        def counts(k: int) -> tuple[float, float]:
            _, admitted, created = samples[k]
            return sum(n for i, n in enumerate(admitted) if i != CLOSED), created

        after = next((k for k, sample in enumerate(samples) if sample[0] > t), len(samples))
        if after == 0 or after == len(samples):
            return counts(min(after, len(samples) - 1))
        (t0, t1), (a0, c0), (a1, c1) = (
            (samples[after - 1][0], samples[after][0]),
            counts(after - 1),
            counts(after),
        )
        share = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        return a0 + share * (a1 - a0), c0 + share * (c1 - c0)

    start = row.closed_at
    if start >= row.window:
        row.before = round(at(start)[0] - at(start - row.window)[0])
    while start + row.window <= last_create:
        (a0, c0), (a1, c1) = at(start), at(start + row.window)
        row.after.append(round(a1 - a0))
        row.creates_after.append(round(c1 - c0))
        start += row.window


async def _bulk(runs: int, time_scale: float, *, case: str, close_at: int | None = None) -> PoolRow:
    async with Simulator(_config(time_scale)) as sim:
        lanes = _lanes(sim, time_scale, priced=False)
        row = _row(case, "earliest", runs, time_scale, lanes)
        # Generous: at two lanes' limit, and the longest run (10 s) after the last create.
        cap = max(MIN_CAP, CAP * (2 * runs / (row.rate * 2) + 10 * time_scale))
        async with gi.Session(lanes=lanes, remember=False, on_exit="cancel") as session:
            started = time.monotonic()
            helpers = [asyncio.create_task(_sample(sim, started, row))]
            if close_at is not None:
                helpers.append(asyncio.create_task(_close_lane(sim, started, row, close_at)))
            last = started
            try:
                async with asyncio.timeout(cap):
                    async for run in session.as_completed(prompts(runs, f"pool {case}")):
                        last = time.monotonic()
                        if run.index is not None:
                            row.yielded[run.index] += 1
                        if run.error is not None or run.id is None:
                            row.failed += 1
                            row.errors[type(run.error).__name__] += 1
                        else:
                            row.succeeded += 1
            except TimeoutError:
                row.capped = True
            finally:
                await cancel_all(helpers)
            row.wall = (time.monotonic() if row.capped else last) - started
            _fill(row, sim, session)
        created = [run.created_at - started for run in sim.runs.values()]
        _windows(row, max(created, default=0.0))
    return row


#: The combined job is also measured with time this many times less compressed (0.2
#: for the default 0.05: a 2 s window, where a request's few ms of arrival jitter
#: weigh a quarter of what they do at 0.05; in real time, a twentieth).
MILD_FACTOR = 4.0
#: Its row's name.
MILD_CASE = "combined, time 4x less compressed"


async def pool_combined(runs: int, *, time_scale: float, case: str = "combined") -> PoolRow:
    """``runs`` prompts through ``as_completed`` over the three lanes, routing ``"earliest"``."""
    return await _bulk(runs, time_scale, case=case)


async def pool_closure(runs: int, *, time_scale: float) -> PoolRow:
    """As ``pool_combined``; the API in One key runs out of credits after ``runs // 3`` runs."""
    return await _bulk(runs, time_scale, case="closure", close_at=max(1, runs // 3))


async def pool_price_first(runs: int, *, time_scale: float, load: float = PRICE_LOAD) -> PoolRow:
    """``runs`` arrivals at ``load`` of the cheap lane's budget, routing ``"cheapest"``."""
    async with Simulator(_config(time_scale)) as sim:
        lanes = _lanes(sim, time_scale, priced=True)
        row = _row("price-first", "cheapest", runs, time_scale, lanes)
        row.load = load
        arrivals = load * row.rate
        cap = max(MIN_CAP, runs / arrivals + CAP * (2 * runs / row.rate + 10 * time_scale))
        async with gi.Session(
            lanes=lanes, routing="cheapest", remember=False, on_exit="cancel"
        ) as session:
            started = time.monotonic()
            sampler = asyncio.create_task(_sample(sim, started, row))

            todo = list(enumerate(prompts(runs, "pool price-first")))
            position = {prompt: i for i, prompt in todo}

            async def one(prompt: str) -> None:
                run = await session.submit(prompt)
                try:
                    await run
                finally:
                    row.yielded[position[prompt]] += 1

            try:
                row.failed, row.capped = await arrive(started, 1 / arrivals, todo, one, cap)
            finally:
                await cancel_all([sampler])
            row.succeeded = runs - row.failed
            row.wall = time.monotonic() - started
            _fill(row, sim, session)
    return row
