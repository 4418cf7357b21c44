"""Shared helpers: a simulator plus a session against it, in compressed time."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from gptimage_async._budget import Limiter
from gptimage_async._providers import get_provider
from gptimage_async._registry import RunRegistry
from gptimage_async._scheduler import PollScheduler
from gptimage_async._stats import SessionStats
from gptimage_async._transport import Transport
from gptimage_async.simulator import VARIANTS, Faults, SimulatorConfig

#: Runs of 3-10 s take 30-100 ms; the 20-per-10-s window is 100 ms.
FAST = 0.01


def config(**overrides: Any) -> SimulatorConfig:
    """A simulator config for tests: fast, seeded, Runbase's limit unless told otherwise.

    The answer variants are on, so every test also proves the client reads them.
    """
    overrides.setdefault("time_scale", FAST)
    overrides.setdefault("seed", 1234)
    return SimulatorConfig(**{**VARIANTS, **overrides})


@contextlib.asynccontextmanager
async def running_scheduler(
    provider: str, transport: Transport, limiter: Limiter
) -> AsyncIterator[tuple[PollScheduler, RunRegistry, set[asyncio.Task[Any]]]]:
    """A ``PollScheduler`` running on ``transport`` and ``limiter``, with its registry and
    tasks; on leaving, the limiter is closed, the tasks cancelled, the transport closed."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        task = loop.create_task(fn(*args))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    registry = RunRegistry()
    scheduler = PollScheduler(
        provider=get_provider(provider),
        transport=transport,
        limiter=limiter,
        stats=SessionStats(),
        spawn=spawn,
        on_resolved=registry._untrack,
        lookup=registry.get,
    )
    spawn(scheduler.run_forever)
    try:
        yield scheduler, registry, tasks
    finally:
        limiter.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await transport.aclose()


def learned(session: Any) -> str:
    """What the session has learned of run durations, as its public ``session.scheduler``
    shows it: ``<DurationModel learning (3 observed)>`` or, once ready,
    ``<DurationModel p5=... p50=... p95=... (12 observed, 0 changes)>``."""
    text = repr(session.scheduler)
    return text[text.index("<DurationModel") : -1]


def observed(session: Any) -> int:
    """How many finished runs the session's duration model holds (from ``learned``)."""
    found = re.search(r"\((\d+) observed", learned(session))
    assert found is not None, learned(session)
    return int(found.group(1))


def warm(session: Any) -> bool:
    """True once the session places polls from learned durations (no cold start)."""
    return "learning" not in learned(session)


__all__ = [
    "FAST",
    "Faults",
    "config",
    "learned",
    "observed",
    "running_scheduler",
    "warm",
]
