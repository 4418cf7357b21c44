"""What every scenario shares: the key, Runbase's limit, the seed, and small statistics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from gptimage_async.simulator import Simulator

from .baseline import BaselineOutcome

__all__ = [
    "BASELINE_CONCURRENCY",
    "DEFAULT_LIMIT",
    "KEY",
    "SEED",
    "WINDOW",
    "cancel_all",
    "delays",
    "mean",
    "percentile",
    "prompts",
    "speed",
]

KEY = "sk-benchmark"
#: Runbase's documented limit: 20 requests per 10 s per key, creates and polls together.
DEFAULT_LIMIT = 20
WINDOW = 10.0
#: Seed of every simulator, so both clients see the same run durations.
SEED = 20_260_101
#: The semaphore of the bounded hand-written variant.
BASELINE_CONCURRENCY = 5


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def prompts(n: int, tag: str) -> list[str]:
    """``n`` distinct prompts, tagged by scenario."""
    return [f"benchmark {tag} prompt {i}" for i in range(n)]


def speed(sim: Simulator, factor: float) -> None:
    """Multiply the simulator's run durations by ``factor`` from now on."""
    config = sim.config
    sim.config = config.replace(
        duration_min=config.duration_min * factor, duration_max=config.duration_max * factor
    )


def delays(outcome: BaselineOutcome, sim: Simulator) -> tuple[list[float], list[float]]:
    """Detection delays and run durations of the runs the baseline resolved, in its order."""
    late, durations = [], []
    for run in outcome.runs:
        if run.done_at is not None and run.run_id is not None:
            served = sim.runs[run.run_id]
            late.append(run.done_at - served.finishes_at)
            durations.append(served.duration)
    return late, durations


async def cancel_all(tasks: Iterable[asyncio.Future[Any] | None]) -> None:
    """Cancel each helper task (``None`` skipped) and wait for it to end."""
    for task in tasks:
        if task is None:
            continue
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
