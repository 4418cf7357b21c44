"""A bulk job over a pool of keys: each lane spends its budget as one key's job does.

The pool benchmark's job (three keys of 20 requests per window, rejected
requests counted) in memory on the fake loop clock (``tests/_clock.py``): the
simulator's request pipeline answers every request (``MemoryTransport``, one
per lane, each with its own key), so a whole job costs no wall time and no
scheduling noise, and the request log below is exact. Each test is about one
rule of ``_router.py``: the creates bound ahead on each lane, the job's last
creates sent to the lane whose work ends first, the lanes' first creates
staggered.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

import gptimage_async as gi
import gptimage_async._lane as lane_module
from gptimage_async._transport import Answer
from gptimage_async._transport._memory import MEMORY_ORIGIN, MemoryTransport
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.simulator._app import BASE_PATHS

from ._clock import FakeClock

#: The benchmark's time scale and limit: 20 requests per 0.5 s window per key.
SCALE = 0.05
LIMIT = 20
WINDOW = 10.0 * SCALE
KEYS = (("runbase", "sk-lane-one"), ("runbase", "sk-lane-two"), ("apiinone", "aio_lane_three"))


@dataclass
class Log:
    """Every request the lanes sent: (loop time, key, method, status)."""

    sent: list[tuple[float, str, str, int]] = field(default_factory=list)

    def of(self, key: str) -> list[tuple[float, str, str, int]]:
        return [entry for entry in self.sent if entry[1] == key]


class LoggingTransport(MemoryTransport):
    """The in-memory transport onto the simulator, logging each request it sends."""

    log: Log
    key: str

    async def send(
        self, method: str, target: str, body: bytes | None = None, **options: Any
    ) -> Answer:
        sent = asyncio.get_running_loop().time()
        answer = await super().send(method, target, body, **options)
        self.log.sent.append((sent, self.key, method, answer.status))
        return answer


@pytest.fixture
async def in_memory(monkeypatch: pytest.MonkeyPatch) -> tuple[Simulator, Log]:
    """Each lane's transport is a ``LoggingTransport`` onto one simulator in memory.

    A pool takes no ``transport=`` (one transport holds one key): the lane's
    factory is swapped for one that builds the in-memory transport with the
    lane's own base URL and key.
    """
    loop = asyncio.get_running_loop()
    config = SimulatorConfig(
        time_scale=SCALE, rate_limit=LIMIT, rate_window=10.0, count_rejected=True, seed=7
    )
    sim = Simulator(config, clock=lambda: loop.time())
    log = Log()

    def transport(base_url: str, api_key: str, *, timeout: float, **_: Any) -> MemoryTransport:
        made = LoggingTransport(sim, base_url, api_key, timeout=timeout)
        made.log, made.key = log, api_key
        return made

    monkeypatch.setattr(lane_module, "HTTPTransport", transport)
    return sim, log


def _session(keys: tuple[tuple[str, str], ...]) -> gi.Session:
    belief = gi.RateLimit(LIMIT, WINDOW)
    lanes = [
        gi.Lane(
            provider,  # type: ignore[arg-type]
            key,
            base_url=MEMORY_ORIGIN + BASE_PATHS[provider],
            rate_limit=belief,
        )
        for provider, key in keys
    ]
    return gi.Session(lanes=lanes, remember=False, on_exit="cancel")


async def _job(
    clock: FakeClock, keys: tuple[tuple[str, str], ...], runs: int, tag: str = "bulk"
) -> gi.Session:
    session = _session(keys)

    async def body() -> int:
        async with session:
            done = 0
            async for run in session.as_completed([f"{tag} {i}" for i in range(runs)]):
                assert run.error is None, run.error
                done += 1
            return done

    assert await clock.run(body()) == runs
    return session


async def test_each_lane_polls_its_runs_as_one_keys_job_does(
    fake_clock: FakeClock, in_memory: tuple[Simulator, Log]
) -> None:
    sim, log = in_memory
    await _job(fake_clock, (("runbase", "sk-alone"),), 100, "alone")
    alone = len(log.sent)
    log.sent.clear()
    await _job(fake_clock, KEYS, 300)
    assert sim.stats.duplicates == 0
    # Each lane's cold start parks its new runs behind a few scouts only while a
    # create waits in its limiter (``_planner.should_park``): with one create bound
    # ahead, the next one was often still on its way, so early runs were polled at
    # once, about twice each: 205-207 requests a lane against one key's 204 here
    # (lanes in step, not staggered: 8% more than one key's). Two bound ahead, each
    # lane's job is one key's, request for request.
    per_lane = [len(log.of(key)) for _, key in KEYS]
    assert max(per_lane) <= alone + 1, (per_lane, alone)


async def test_a_jobs_last_creates_go_where_the_work_ends_first(
    fake_clock: FakeClock, in_memory: tuple[Simulator, Log]
) -> None:
    _, log = in_memory
    await _job(fake_clock, KEYS, 300)
    ends = [log.of(key)[-1][0] for _, key in KEYS]
    # Routed by each lane's next free slot alone, the job's last creates went to the
    # lane that took ties (API in One: a known price) while its runs in flight still
    # needed their polls: its last request came 0.3-0.45 s (most of a window) after
    # another lane's. Counted by the work committed to each lane (its bound creates,
    # a poll at least per run in flight), the lanes end within a few slots.
    slot = WINDOW / LIMIT
    assert max(ends) - min(ends) <= 3 * slot, ends


async def test_the_lanes_first_creates_are_a_fraction_of_a_slot_apart(
    fake_clock: FakeClock, in_memory: tuple[Simulator, Log]
) -> None:
    _, log = in_memory
    await _job(fake_clock, KEYS, 30)
    firsts = sorted(log.of(key)[0][0] for _, key in KEYS)
    # Paced at one rate from one instant, the lanes sent in step: one event-loop stall
    # delayed a request of each at once and drew a 429 on each (the pool benchmark
    # over HTTP: three 429s within a millisecond). Lane i starts i/3 of a slot late.
    slot = gi.RateLimit(LIMIT, WINDOW).per / LIMIT / (1 - 0.02)  # margin before confirmation
    gaps = [later - earlier for earlier, later in itertools.pairwise(firsts)]
    assert gaps == pytest.approx([slot / 3] * 2, rel=0.05), gaps
    # ... and they stay apart: no two lanes send at one instant while paced.
    times = [round(entry[0], 6) for entry in log.sent]
    assert len(times) == len(set(times))
