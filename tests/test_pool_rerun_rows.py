"""What a pool batch's rows say about runs it leaves alone or never sent (issue 19).

A rerun without the key a run was created through leaves that run alone; its
manifest row still names the lane and the time it was created, and the log
line calls it pending. A prompt that no lane could take (every lane closed)
names no lane: it went through none. Real simulator over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import io
from pathlib import Path

import gptimage_async as gi
from gptimage_async._progress import LogDisplay
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_batch_pool import KEY_A, KEY_B, PROMPTS, config, lane, stopped_on_a


async def test_a_run_left_alone_keeps_its_lane_and_time_on_its_row(tmp_path: Path) -> None:
    fp_a = gi.Lane("runbase", KEY_A).fingerprint
    async with Simulator(config()) as sim:
        in_flight = await stopped_on_a(sim, tmp_path)
        assert in_flight
        shown = io.StringIO()
        display = LogDisplay(shown, verbose=False)
        async with gi.Session(lanes=[lane(sim, KEY_B)]) as session:
            report = await gi.Batch(session, PROMPTS, tmp_path, on_event=display.event).run()
    rows = {e.key: e for e in gi.read_manifest(tmp_path / "manifest.jsonl")}
    for before in in_flight:
        row = rows[before.key]
        assert row.status == "pending" and row.run_id == before.run_id
        assert (row.provider, row.key_fingerprint) == ("runbase", fp_a)
        assert row.created_at is not None and before.created_at is not None
        # The journal's time of the create's answer (the first manifest's is its own, ms apart).
        assert abs((row.created_at - before.created_at).total_seconds()) < 1
    assert report.attached == 0 and sim.stats.duplicates == 0
    lines = [line for line in shown.getvalue().splitlines() if "ConfigurationError" in line]
    assert len(lines) == len(in_flight) and all("PENDING" in line for line in lines), lines


async def test_a_prompt_no_lane_took_names_no_lane(tmp_path: Path) -> None:
    # Each key can pay for 2 runs: then 402, and the pool is closed for new creates.
    cfg = SimulatorConfig(
        time_scale=0.05, rate_limit=None, seed=5, api_keys=frozenset({KEY_A, KEY_B}), credits=20
    )
    async with (
        Simulator(cfg) as sim,
        gi.Session(lanes=[lane(sim, KEY_A), lane(sim, KEY_B)]) as session,
    ):
        report = await gi.Batch(session, PROMPTS, tmp_path).run()
    rows = gi.read_manifest(tmp_path / "manifest.jsonl")
    never = [e for e in rows if e.run_id is None and e.status == "failed"]
    assert never and report.stopped
    assert all(e.provider is None and e.key_fingerprint is None for e in never), never[:2]
    made = [e for e in rows if e.run_id is not None]
    assert len(made) == sim.stats.creates == 4
    assert all(e.provider == "runbase" and e.key_fingerprint for e in made)
