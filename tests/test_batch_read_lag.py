"""A rerun soon after a stop attaches runs the provider's read side does not show yet.

The provider may answer 404 for a while after a create (PROVIDERS.md; the
simulator's ``read_lag``). A run an earlier process created gets the same
"not visible yet" grace as one this process created, counted from the
journal's ``created`` time; a run that stays "not found" is recorded
``unknown`` (it may exist, and be paid for), never created again unasked.
Real simulator over HTTP on 127.0.0.1, real journals on disk.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async._batch_types import prompt_key
from gptimage_async._journal import Journal
from gptimage_async.simulator import Simulator, SimulatorConfig

GENEROUS = gi.RateLimit(1000, 1.0)
PROMPTS = ["a lamp", "a chair", "an owl", "a kettle"]


def session_for(sim: Simulator, **options: Any) -> gi.Session:
    options.setdefault("rate_limit", GENEROUS)
    return gi.Session("runbase", api_key="sk-test", base_url=sim.base_url("runbase"), **options)


async def stopped_batch(sim: Simulator, out: Path, prompts: list[str]) -> gi.BatchReport:
    """Run a batch that stops at its first created run: the others are answered, journaled."""
    async with session_for(sim, on_exit="cancel") as session:
        batch: gi.Batch

        def on_event(event: gi.BatchEvent) -> None:
            if event.kind == "created":
                batch.stop()

        batch = gi.Batch(session, prompts, out, on_event=on_event)
        return await batch.run()


async def test_a_rerun_at_once_waits_for_the_lagging_read_side(tmp_path: Path) -> None:
    # Runs take 3-10 provider seconds (0.15-0.5 s here); polls answer 404 for 1.5 s.
    config = SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3, read_lag=30.0)
    async with Simulator(config) as sim:
        first = await stopped_batch(sim, tmp_path, PROMPTS)
        pending = [e for e in first.entries if e.status == "pending"]
        assert pending and all(e.run_id for e in pending)
        created = sim.stats.creates
        began = time.time()
        async with session_for(sim) as session:
            second = await gi.Batch(session, PROMPTS, tmp_path).run()
        assert time.time() - began < 20  # within the grace, not a timeout
        assert second.attached == len(pending)
        assert second.ok, [(e.status, e.error) for e in second.entries]
        # Nothing paid twice, now or by a third run.
        assert sim.stats.creates == created
        async with session_for(sim) as session:
            third = await gi.Batch(session, PROMPTS, tmp_path).run()
        assert third.skipped == len(PROMPTS) and sim.stats.creates == created

    # The resumed rows show when their runs were created, and how long they took.
    for entry in gi.read_manifest(tmp_path / "manifest.jsonl"):
        assert entry.created_at is not None and entry.seconds is not None, entry
        assert entry.provider == "runbase" and entry.key_fingerprint is not None, entry


def forge_created(out: Path, prompt: str, run_id: str, base_url: str, at: float) -> None:
    """Journal ``prompt`` as run ``run_id`` created ``at`` (UNIX s), as a dead process would."""
    path = out / "journal.jsonl"
    with Journal(path, fsync=False) as journal:
        journal.start(provider="runbase", base_url=base_url)
    key = prompt_key(gi.ImageRequest(prompt), 1)
    record = {
        "record": "created",
        "key": key,
        "line": 1,
        "run_id": run_id,
        "provider": "runbase",
        "at": at,
        "base_url": base_url,
        # The session's key (session_for): a run journaled on another key is left alone.
        "key_fingerprint": gi.Lane("runbase", "sk-test").fingerprint[:8],
    }
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


@pytest.mark.parametrize("ago", [60.0, 3600.0])
async def test_a_run_not_found_past_its_grace_is_unknown_not_created_again(
    tmp_path: Path, ago: float
) -> None:
    config = SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3)
    async with Simulator(config) as sim:
        base_url = sim.base_url("runbase")
        forge_created(tmp_path, "a lamp", "run_gone", base_url, time.time() - ago)
        async with session_for(sim) as session:
            batch = gi.Batch(session, ["a lamp"], tmp_path)
            assert batch.journal_path == tmp_path / "journal.jsonl"
            report = await batch.run()
        [entry] = report.entries
        assert entry.status == "unknown" and entry.error_type == "RunNotFoundError", entry
        assert entry.run_id == "run_gone"
        assert sim.stats.creates == 0

        # A rerun does not create it again, and keeps what is known of it on its row.
        async with session_for(sim) as session:
            again = await gi.Batch(session, ["a lamp"], tmp_path).run()
        [entry] = again.entries
        assert entry.status == "unknown" and entry.run_id == "run_gone"
        assert entry.provider == "runbase" and entry.key_fingerprint is not None
        assert sim.stats.creates == 0

        # Only when asked.
        async with session_for(sim) as session:
            asked = await gi.Batch(session, ["a lamp"], tmp_path, resubmit_unknown=True).run()
        assert asked.ok and sim.stats.creates == 1


async def test_attach_counts_the_grace_from_created_at(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3, read_lag=30.0)
    async with Simulator(config) as sim, session_for(sim) as session:
        made = await session.submit("a lamp")
        assert made.id is not None
        # The same run, attached by a second session that knows when it was created.
        async with session_for(sim) as other:
            known = other.attach(made.id, created_at=time.time())
            result = await known
            assert result.urls
            # Without created_at a made-up id is "not found" at once, as before.
            with pytest.raises(gi.RunNotFoundError):
                await other.attach("run_made_up")
            # A create time long past leaves no grace either.
            with pytest.raises(gi.RunNotFoundError):
                await other.attach("run_made_up_2", created_at=time.time() - 3600)


@pytest.mark.parametrize("bad", ["now", math.nan, math.inf, True, [1.0]])
async def test_attach_refuses_a_created_at_that_is_not_a_time(bad: object) -> None:
    config = SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3)
    async with Simulator(config) as sim, session_for(sim) as session:
        with pytest.raises(gi.ConfigurationError, match="created_at"):
            session.attach("run_x", created_at=bad)  # type: ignore[arg-type]
        assert sim.stats.requests == 0 and not session.runs


def test_the_command_line_rerun_after_a_ctrl_c_pays_nothing_twice(tmp_path: Path) -> None:
    # The tester's case: a real process stopped by Ctrl-C once the creates are journaled,
    # rerun at once while the read side still answers 404, then rerun again (the reruns
    # in this process: run_main, the simulator on a thread of its own).
    from .test_cli import against, prompt_file, run_main, simulator_thread
    from .test_cli_signals import key_states, start, until

    config = SimulatorConfig(time_scale=0.05, rate_limit=None, seed=4, read_lag=40.0)
    with simulator_thread(config) as sim:
        prompts = prompt_file(tmp_path / "p8.txt", 8)
        out = tmp_path / "out"
        args = ["batch", str(prompts), "--out", str(out), *against(sim), "--no-state"]

        async def interrupted() -> tuple[int | None, bytes]:
            proc = await start(*args)
            await until(lambda: key_states(out)["created"] == 8, proc)
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, err

        code, err = asyncio.run(interrupted())
        assert code == 130, err.decode()
        assert sim.stats.creates == 8

        again = run_main(*args)
        assert again.code == 0, again.stderr
        assert "8 earlier runs re-attached" in again.stdout, again.stdout
        third = run_main(*args)
        assert third.code == 0 and "8 succeeded (8 already done)" in third.stdout, third.stdout
        assert sim.stats.creates == 8  # nothing paid twice


async def test_a_run_attached_elsewhere_and_not_found_is_created_anew(tmp_path: Path) -> None:
    # Created at another API root (the in-process simulator's old port), attached here as
    # asked (attach_elsewhere): a 404 here says nothing of a lag, and the run is not ours here.
    config = SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3)
    async with Simulator(config) as sim:
        elsewhere = "http://127.0.0.1:9/runbase/api/v1"
        forge_created(tmp_path, "a lamp", "run_old_port", elsewhere, time.time())
        began = time.monotonic()
        async with session_for(sim) as session:
            report = await gi.Batch(session, ["a lamp"], tmp_path, attach_elsewhere=True).run()
        assert time.monotonic() - began < 10  # no 30 s grace
        [entry] = report.entries
        assert entry.status == "failed" and entry.error_type == "RunNotFoundError"
        async with session_for(sim) as session:
            again = await gi.Batch(session, ["a lamp"], tmp_path, attach_elsewhere=True).run()
        assert again.ok and sim.stats.creates == 1
