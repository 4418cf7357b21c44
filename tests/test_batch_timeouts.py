"""A create that only timed out fails its prompt; it is never taken for a failed write.

``RunTimeoutError`` is a ``TimeoutError``, hence an ``OSError``: a batch that
caught ``OSError`` around a create (for the journal's write of its intent)
stopped with "cannot write to DIR" when a create merely waited out
``run_timeout`` for a slot. Each case here has a create time out: through one
key's limiter (in memory, on the fake clock), through a pool's line of
creates (a real HTTP simulator), and from the command line.
"""

from __future__ import annotations

from pathlib import Path

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import memory_session

from ._clock import FakeClock
from .test_cli import prompt_file, run_main, simulator_thread

PROMPTS = [f"a lamp, take {i}" for i in range(3)]


def _timed_out_and_went_on(report: gi.BatchReport) -> list[gi.ManifestEntry]:
    # Nothing says "write": the batch was not stopped, and no prompt is left pending.
    assert report.stop_reason is None, report.stop_reason
    assert not report.stopped
    assert all(e.status != "pending" for e in report.entries), report.entries
    never = [e for e in report.entries if e.run_id is None]
    assert never, "no create waited out run_timeout"
    # Each create that never got a slot failed, as any other run error is recorded.
    assert {(e.status, e.error_type) for e in never} == {("failed", "RunTimeoutError")}
    assert all("write" not in (e.error or "") for e in report.entries)
    return never


async def test_a_create_that_waited_out_run_timeout_fails_its_prompt(
    fake_clock: FakeClock, tmp_path: Path
) -> None:
    # Two creates a minute (the tester's 2/60), a run_timeout of 5 s: the third
    # create cannot get a slot in time.
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=5)

    async def body() -> tuple[Simulator, gi.BatchReport]:
        async with memory_session(
            config=config, rate_limit=gi.RateLimit(2, 60.0), run_timeout=5.0
        ) as (sim, session):
            return sim, await gi.Batch(session, PROMPTS, tmp_path).run()

    sim, report = await fake_clock.run(body())
    never = _timed_out_and_went_on(report)
    assert len(never) == len(PROMPTS) - sim.stats.creates >= 1


async def test_a_pool_create_no_lane_had_a_slot_for_fails_its_prompt(tmp_path: Path) -> None:
    # The router's own timeout (its line of creates): one slot a minute on each lane.
    keys = ("sk-timeout-a", "sk-timeout-b")
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=5, api_keys=frozenset(keys))
    prompts = [f"a lamp, take {i}" for i in range(4)]
    async with Simulator(config) as sim:
        lanes = [
            gi.Lane(
                "runbase", key, base_url=sim.base_url("runbase"), rate_limit=gi.RateLimit(1, 60.0)
            )
            for key in keys
        ]
        async with gi.Session(lanes=lanes, run_timeout=0.3) as session:
            report = await gi.Batch(session, prompts, tmp_path).run()
    never = _timed_out_and_went_on(report)
    assert len(never) == len(prompts) - sim.stats.creates >= 2


def test_the_tester_s_batch_fails_the_prompt_and_says_nothing_of_writing(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=5)
    prompts = prompt_file(tmp_path / "p5.txt", 3)
    with simulator_thread(config) as sim:
        done = run_main(
            "batch", str(prompts), "--out", str(tmp_path / "orl"),
            "--base-url", sim.base_url("runbase"), "--rate-limit", "2/60",
            "--run-timeout", "0.3", "--no-state", "--progress", "log",
        )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.code == 1, out  # failed prompts, not a stop
    assert "write" not in out and "stopped early" not in out
    manifest = gi.read_manifest(tmp_path / "orl" / "manifest.jsonl")
    never = [e for e in manifest if e.run_id is None]
    assert never and {(e.status, e.error_type) for e in never} == {("failed", "RunTimeoutError")}
    assert len(never) == 3 - sim.stats.creates
    assert "pending" not in out
