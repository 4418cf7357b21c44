"""The fault matrix: thousands of runs per fault, on both providers, against the simulator.

Every row checks the same promises:

* every run ends exactly once, in a ``Result`` or a typed error the row allows;
* a ``Result`` belongs to its own request (the simulator made that run for that prompt);
* no prompt was created twice, and a create the client reports as a plain
  failure was never created at all (its outcome was known);
* a create the simulator did carry out but whose answer was lost is reported
  as ``UncertainCreateError``, never dropped and never silently resent;
* the registry and the scheduler are empty afterwards, and the session still
  generates an image.

``GPTIMAGE_RELIABILITY_RUNS`` overrides the runs per row (default 2,000).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, Simulator

from .conftest import PROVIDERS, WINDOW, report, session_for, sim_config

RUNS = int(os.environ.get("GPTIMAGE_RELIABILITY_RUNS", "2000"))
#: A row that has not finished by then is hung, whatever the machine's load.
ROW_DEADLINE = 180.0
#: 429 storms: the limit drops to a tenth, counting rejected requests, for this many windows.
STORM_WINDOWS = 2

Uncertain = gi.UncertainCreateError


@dataclass(frozen=True)
class Row:
    id: str
    faults: Faults = field(default_factory=Faults)
    sim: dict[str, Any] = field(default_factory=dict)
    session: dict[str, Any] = field(default_factory=dict)
    #: Errors a run may end with in this row; anything else fails the row.
    may_fail_with: tuple[type[gi.GPTImageError], ...] = ()
    #: Fault counters (simulator names) that must have fired, so the row tested something.
    must_fire: tuple[str, ...] = ()
    #: The row loses the answers of creates the simulator carried out.
    loses_create_answers: bool = False
    storms: int = 0
    #: Several seconds of wall time (Retry-After in whole seconds, a long outage):
    #: left out of the quick local run (``-m "not slow"``).
    slow: bool = False


ROWS = [
    Row("poll-5xx-10pct", Faults(poll_5xx=0.10), must_fire=("poll_5xx",)),
    Row(
        "connection-resets-3pct",
        # 2% reset before the server acts, 1% after a create took effect.
        Faults(reset=0.02, reset_after_create=0.01),
        may_fail_with=(Uncertain,),
        must_fire=("reset", "reset_after_create"),
        loses_create_answers=True,
    ),
    Row(
        "truncated-json-2pct",
        Faults(truncated_json=0.02),
        may_fail_with=(Uncertain,),
        must_fire=("truncated_json",),
        loses_create_answers=True,
    ),
    Row(
        "slow-beyond-request-timeout",
        # Held 100 provider seconds = 0.5 s, twice the client's request timeout.
        Faults(slow=0.03, slow_seconds=100.0),
        session={"request_timeout": 0.25},
        may_fail_with=(Uncertain,),
        must_fire=("slow",),
        loses_create_answers=True,
    ),
    Row(
        "429-storms-retry-after-seconds",
        sim={"rate_limit": 100, "retry_after": "seconds"},
        session={"rate_limit": gi.RateLimit(1_000, WINDOW)},
        storms=3,
        slow=True,
    ),
    Row(
        "429-storms-retry-after-http-date",
        sim={"rate_limit": 100, "retry_after": "http-date"},
        session={"rate_limit": gi.RateLimit(1_000, WINDOW)},
        storms=3,
        slow=True,
    ),
    Row(
        "full-outage-then-recovery",
        # 200 provider seconds = 1 s of 503 to everything, starting 10 ms in.
        Faults(outage=(2.0, 202.0)),
        # A create refused by 503 certainly did not happen; it may run out of attempts.
        may_fail_with=(gi.ServerError,),
        must_fire=("outage",),
        slow=True,
    ),
    Row(
        "tolerant-answers",
        # BOM bodies, same-origin poll redirects, and every connection closed
        # 20 ms after its answer though it said keep-alive: nothing may fail.
        Faults(bom=0.05, poll_redirect=0.05, keepalive_close=1.0, keepalive_close_after=4.0),
        must_fire=("bom", "poll_redirect", "keepalive_close"),
    ),
    Row(
        "create-500-after-effect-3pct",
        Faults(create_500_after_effect=0.03),
        may_fail_with=(Uncertain,),
        must_fire=("create_500_after_effect",),
        loses_create_answers=True,
    ),
]


async def _storm(sim: Simulator) -> None:
    normal = sim.config
    assert normal.rate_limit is not None
    sim.config = normal.replace(rate_limit=max(1, normal.rate_limit // 10), count_rejected=True)
    await asyncio.sleep(STORM_WINDOWS * WINDOW)
    sim.config = normal


async def _drive(
    session: gi.Session, sim: Simulator, prompts: list[str], storms: int
) -> dict[int, gi.Run]:
    """Run every prompt through ``as_completed``; each index must come back exactly once."""
    runs: dict[int, gi.Run] = {}
    seen: collections.Counter[int] = collections.Counter()
    storm_at = {len(prompts) * (k + 1) // (storms + 1) for k in range(storms)}
    storm_tasks: list[asyncio.Task[None]] = []
    with anyio.fail_after(ROW_DEADLINE):
        async for run in session.as_completed(prompts):
            assert run.index is not None
            assert run.done(), "as_completed yielded a run that is not resolved"
            seen[run.index] += 1
            runs[run.index] = run
            if len(runs) in storm_at:
                storm_tasks.append(asyncio.create_task(_storm(sim)))
        await asyncio.gather(*storm_tasks)
    assert sorted(seen) == list(range(len(prompts))), "some runs never ended"
    assert set(seen.values()) == {1}, "some runs ended more than once"
    return runs


def _check_row(
    row: Row, prompts: list[str], runs: dict[int, gi.Run], sim: Simulator, session: gi.Session
) -> dict[str, int]:
    created = sim.stats.runs_per_prompt
    results = uncertain = really_created = known_failures = 0
    for index, run in runs.items():
        prompt = prompts[index]
        error = run.error
        if error is None:
            result = run.outcome
            assert result is not None and result.urls
            assert result.run_id == run.id
            assert result.request is not None and result.request.prompt == prompt
            # The simulator made this very run for this very prompt: nothing got crossed.
            assert sim.runs[result.run_id].prompt == prompt
            assert created[prompt] == 1
            results += 1
            continue
        assert isinstance(error, gi.GPTImageError), f"untyped error: {error!r}"
        assert getattr(gi, type(error).__name__, None) is type(error), f"private: {error!r}"
        assert isinstance(error, row.may_fail_with), f"run {index}: {type(error).__name__}: {error}"
        assert run.id is None, "only creates may fail in this matrix; polls must be retried"
        if isinstance(error, Uncertain):
            assert error.prompt == prompt
            assert created[prompt] <= 1
            uncertain += 1
            really_created += created[prompt]
        else:
            # Reported as a plain failure, so its outcome was known: nothing may exist.
            assert created[prompt] == 0, f"{type(error).__name__} but the run was created"
            known_failures += 1
    assert sim.stats.duplicates == 0, "a create was sent twice"
    assert session.stats.uncertain_creates == uncertain
    # A create the simulator carried out either became a Result or was reported uncertain.
    assert sim.stats.creates == results + really_created
    if row.loses_create_answers:
        assert really_created > 0, "no create answer was lost: the row tested nothing"
    if "create_500_after_effect" in row.must_fire:
        assert really_created == uncertain == sim.stats.faults["create_500_after_effect"]
    if "reset_after_create" in row.must_fire:
        assert really_created >= sim.stats.faults["reset_after_create"]
    for name in row.must_fire:
        assert sim.stats.faults[name] > 0, f"fault {name} never fired"
    if row.storms:
        assert sim.stats.rate_limited > 0, "no 429 was ever sent"
    # Every create the client sent reached the server once: no hidden resend of a POST.
    assert session.stats.requests - session.stats.polls == sim.stats.create_requests
    # The transport resends a GET once when a kept-alive connection drops, and
    # follows a same-origin poll redirect with a second GET; nothing else.
    hidden_polls = sim.stats.polls - session.stats.polls
    faults = sim.stats.faults
    assert (
        0 <= hidden_polls <= faults["reset"] + faults["poll_redirect"] + faults["keepalive_close"]
    )
    # Exactly-once bookkeeping: nothing in flight, every tracked run counted once.
    assert len(session.runs) == 0
    assert len(session.scheduler) == 0
    counts = session.runs.counts()
    assert counts["succeeded"] == results
    assert session.runs.total == results
    return {
        "ok": results,
        "uncertain": uncertain,
        "created": really_created,
        "known": known_failures,
    }


async def _still_usable(session: gi.Session, sim: Simulator, tag: str) -> None:
    sim.config = sim.config.replace(faults=Faults(), rate_limit=None)
    with anyio.fail_after(10):
        result = await session.generate(f"{tag}: still usable afterwards")
    assert result.urls
    assert not session.closed
    assert sim.stats.runs_per_prompt[f"{tag}: still usable afterwards"] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "row",
    [pytest.param(row, id=row.id, marks=[pytest.mark.slow] if row.slow else []) for row in ROWS],
)
async def test_fault_row(row: Row, provider: str) -> None:
    prompts = [f"{row.id} {provider} #{i:05d}" for i in range(RUNS)]
    started = time.perf_counter()
    async with (
        Simulator(sim_config(faults=row.faults, **row.sim)) as sim,
        session_for(sim, provider, **row.session) as session,
    ):
        runs = await _drive(session, sim, prompts, row.storms)
        elapsed = time.perf_counter() - started
        tally = _check_row(row, prompts, runs, sim, session)
        faults = dict(sim.stats.faults)
        if row.storms:
            faults["429"] = sim.stats.rate_limited
        await _still_usable(session, sim, row.id)
    report(
        f"fault row {row.id:34} {provider:8} {RUNS} runs in {elapsed:5.2f}s  "
        f"{tally}  faults={faults}  requests={sim.stats.requests}"
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_resend_uncertain_creates_opt_in(provider: str) -> None:
    """With the opt-in, lost create answers are resent: every run succeeds, and the
    duplicates are exactly the creates whose answers were lost, no more."""
    faults = Faults(create_500_after_effect=0.03, reset_after_create=0.01)
    prompts = [f"resend {provider} #{i:05d}" for i in range(RUNS)]
    started = time.perf_counter()
    async with (
        Simulator(sim_config(faults=faults)) as sim,
        session_for(sim, provider, resend_uncertain_creates=True) as session,
    ):
        runs = await _drive(session, sim, prompts, storms=0)
        elapsed = time.perf_counter() - started
        assert all(run.error is None for run in runs.values())
        lost = sim.stats.faults["create_500_after_effect"] + sim.stats.faults["reset_after_create"]
        assert lost > 0
        assert sim.stats.duplicates == lost
        assert sim.stats.creates == len(prompts) + lost
        assert session.stats.uncertain_creates == 0
        for index, run in runs.items():
            assert sim.runs[run.id].prompt == prompts[index]  # type: ignore[index]
        await _still_usable(session, sim, "resend")
    report(
        f"fault row {'resend-uncertain-opt-in':34} {provider:8} {RUNS} runs in {elapsed:5.2f}s  "
        f"duplicates={sim.stats.duplicates} (lost answers={lost})"
    )


async def test_run_timeout_holds_while_a_retry_after_blocks_polls() -> None:
    # One request per 500 provider seconds (2.5 s here): the create takes the only slot
    # and every poll is answered 429 with a Retry-After of about 2.5 s.
    config = sim_config(rate_limit=1, rate_window=500.0)
    async with (
        Simulator(config) as sim,
        session_for(sim, "runbase", run_timeout=0.3, on_exit="cancel") as session,
    ):
        run = await session.submit("waits out a long Retry-After")
        started = time.perf_counter()
        with anyio.fail_after(10), contextlib.suppress(gi.RunTimeoutError):
            await run
        waited = time.perf_counter() - started
        assert sim.stats.rate_limited > 0
    assert waited < 1.0, f"run_timeout=0.3 s, but the run resolved after {waited:.1f} s"
