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

Each row runs in memory (``MemoryTransport`` onto the same simulator, on
the fake loop clock: no socket, no sleep) on both providers, and once more
on the simulator's real HTTP server on 127.0.0.1 (one provider per row,
alternating). ``GPTIMAGE_RELIABILITY_RUNS`` overrides the runs per in-memory
row (default 500), ``GPTIMAGE_RELIABILITY_SOCKET_RUNS`` per socket row
(default 300).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, Simulator

from .._clock import FakeClock
from .conftest import PROVIDERS, WINDOW, Wire, on_wire, report, sim_config, simulated

#: Runs per in-memory row. It was 2,000 on sockets; the client's own work is
#: ~1.5 ms of CPU per request on either wire (memory saves only aiohttp's
#: share), so 2,000 runs x 20 rows cost minutes of a 2-core machine. 500
#: runs still fire every fault several times (the rarest, 2% of creates,
#: about 10 times; the rows assert each fault fired), and in fake time the
#: same seed gives the same rolls.
RUNS = int(os.environ.get("GPTIMAGE_RELIABILITY_RUNS", "500"))
#: Runs of a row's real-socket copy (unless the row says more): it shows the
#: same faults reach the client the same way over TCP; the promises are the same.
SOCKET_RUNS = int(os.environ.get("GPTIMAGE_RELIABILITY_SOCKET_RUNS", "300"))
#: Faults that only a socket can show; the in-memory transport never fires them.
MEMORY_SILENT = frozenset({"keepalive_close"})
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
    #: Runs of the real-socket copy, if a rare fault needs more to fire for sure.
    socket_runs: int = 0
    #: Several seconds of wall time (Retry-After in whole seconds, a long outage):
    #: left out of the quick local run (``-m "not slow"``).
    slow: bool = False


ROWS = [
    Row("poll-5xx-10pct", Faults(poll_5xx=0.10), must_fire=("poll_5xx",)),
    Row(
        "connection-resets-6pct",
        # 4% reset before the server acts, 2% after a create took effect.
        Faults(reset=0.04, reset_after_create=0.02),
        may_fail_with=(Uncertain,),
        must_fire=("reset", "reset_after_create"),
        loses_create_answers=True,
        socket_runs=800,  # 2% of creates: about 16 fire
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
    row: Row,
    prompts: list[str],
    runs: dict[int, gi.Run],
    sim: Simulator,
    session: gi.Session,
    wire: Wire = "memory",
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
    sent_creates = session.stats.requests - session.stats.polls
    # Over a socket a request can time out before a loaded server reads it:
    # sent, never seen, and counted as a connection error. Never the other way
    # round for a create (a hidden resend). In memory every request is seen.
    unseen_allowed = 0
    if wire == "memory":
        assert sent_creates == sim.stats.create_requests
    else:
        unseen = sent_creates - sim.stats.create_requests
        assert 0 <= unseen <= session.stats.connection_errors
        unseen_allowed = session.stats.connection_errors - unseen
    # The transport resends a GET once when a kept-alive connection drops, and
    # follows a same-origin poll redirect with a second GET; nothing else.
    hidden_polls = sim.stats.polls - session.stats.polls
    faults = sim.stats.faults
    assert (
        -unseen_allowed
        <= hidden_polls
        <= faults["reset"] + faults["poll_redirect"] + faults["keepalive_close"]
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


def _row_params() -> list[Any]:
    """Each row in memory on both providers (``RUNS`` runs), and on a real socket on one."""
    params = []
    for number, row in enumerate(ROWS):
        for provider in PROVIDERS:
            params.append(pytest.param(row, provider, "memory", id=f"{row.id}-{provider}-memory"))
        provider = PROVIDERS[number % 2]  # each provider carries half the socket rows
        marks = [pytest.mark.slow] if row.slow else []
        params.append(
            pytest.param(row, provider, "socket", id=f"{row.id}-{provider}-socket", marks=marks)
        )
    return params


@pytest.mark.parametrize(("row", "provider", "wire"), _row_params())
async def test_fault_row(row: Row, provider: str, wire: Wire) -> None:
    runs_per_row = RUNS if wire == "memory" else (row.socket_runs or SOCKET_RUNS)
    prompts = [f"{row.id} {provider} #{i:05d}" for i in range(runs_per_row)]
    if wire == "memory":  # no socket in memory: a connection kept alive has nothing to close
        row = dataclasses.replace(row, must_fire=tuple(set(row.must_fire) - MEMORY_SILENT))

    async def body() -> tuple[float, dict[str, int], dict[str, int], int]:
        started = time.perf_counter()
        config = sim_config(faults=row.faults, **row.sim)
        async with simulated(provider, config, wire, **row.session) as (sim, session):
            runs = await _drive(session, sim, prompts, row.storms)
            elapsed = time.perf_counter() - started
            tally = _check_row(row, prompts, runs, sim, session, wire)
            faults = dict(sim.stats.faults)
            if row.storms:
                faults["429"] = sim.stats.rate_limited
            await _still_usable(session, sim, row.id)
        return elapsed, tally, faults, sim.stats.requests

    elapsed, tally, faults, requests = await on_wire(wire, body())
    report(
        f"fault row {row.id:34} {provider:8} {wire:6} {runs_per_row} runs in {elapsed:5.2f}s  "
        f"{tally}  faults={faults}  requests={requests}"
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_resend_uncertain_creates_opt_in(provider: str) -> None:
    """With the opt-in, lost create answers are resent: every run succeeds, and the
    duplicates are exactly the creates whose answers were lost, no more."""
    faults = Faults(create_500_after_effect=0.03, reset_after_create=0.01)
    prompts = [f"resend {provider} #{i:05d}" for i in range(RUNS)]

    async def body() -> tuple[float, int, int]:
        started = time.perf_counter()
        config = sim_config(faults=faults)
        async with simulated(provider, config, "memory", resend_uncertain_creates=True) as (
            sim,
            session,
        ):
            runs = await _drive(session, sim, prompts, storms=0)
            elapsed = time.perf_counter() - started
            assert all(run.error is None for run in runs.values())
            lost = (
                sim.stats.faults["create_500_after_effect"] + sim.stats.faults["reset_after_create"]
            )
            assert lost > 0
            assert sim.stats.duplicates == lost
            assert sim.stats.creates == len(prompts) + lost
            assert session.stats.uncertain_creates == 0
            for index, run in runs.items():
                assert sim.runs[run.id].prompt == prompts[index]  # type: ignore[index]
            await _still_usable(session, sim, "resend")
        return elapsed, sim.stats.duplicates, lost

    elapsed, duplicates, lost = await on_wire("memory", body())
    report(
        f"fault row {'resend-uncertain-opt-in':34} {provider:8} {RUNS} runs in {elapsed:5.2f}s  "
        f"duplicates={duplicates} (lost answers={lost})"
    )


async def test_run_timeout_holds_while_a_retry_after_blocks_polls(fake_clock: FakeClock) -> None:
    # One request per 500 provider seconds (2.5 s here): the create takes the only slot
    # and every poll is answered 429 with a Retry-After of about 2.5 s.
    config = sim_config(rate_limit=1, rate_window=500.0)

    async def body() -> float:
        async with simulated("runbase", config, "memory", run_timeout=0.3, on_exit="cancel") as (
            sim,
            session,
        ):
            run = await session.submit("waits out a long Retry-After")
            started = fake_clock.time()
            with anyio.fail_after(10), contextlib.suppress(gi.RunTimeoutError):
                await run
            assert sim.stats.rate_limited > 0
            return fake_clock.time() - started

    waited = await fake_clock.run(body())
    assert waited < 1.0, f"run_timeout=0.3 s, but the run resolved after {waited:.1f} s"
