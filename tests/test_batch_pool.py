"""A batch over a pool of keys: each run is resumed through its own lane (issue 19).

The simulator serves two keys, each an account of its own: a run id is known
only to the key that created it, as at Runbase.
"""

from __future__ import annotations

import collections
from pathlib import Path

import gptimage_async as gi
from gptimage_async._batch_types import JOURNAL_NAME
from gptimage_async.simulator import Simulator, SimulatorConfig

KEY_A, KEY_B = "sk-batch-a", "sk-batch-b"
FAST = gi.RateLimit(1000, 1.0)
PROMPTS = [f"a lamp, take {i}" for i in range(12)]


def lane(sim: Simulator, key: str) -> gi.Lane:
    return gi.Lane("runbase", key, base_url=sim.base_url("runbase"), rate_limit=FAST)


def config() -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=0.05, rate_limit=None, seed=19, api_keys=frozenset({KEY_A, KEY_B})
    )


async def stopped_on_a(sim: Simulator, out: Path) -> list[gi.ManifestEntry]:
    """A batch on key A alone, stopped with runs in flight; its entries with a run."""
    async with gi.Session(lanes=[lane(sim, KEY_A)], on_exit="cancel") as session:
        batch: gi.Batch

        def on_event(event: gi.BatchEvent) -> None:
            if event.kind == "created" and event.progress.in_flight >= 4:
                batch.stop()

        batch = gi.Batch(session, PROMPTS, out, on_event=on_event)
        report = await batch.run()
    return [e for e in report.entries if e.run_id is not None and e.status == "pending"]


async def test_a_rerun_without_the_first_key_leaves_its_runs_alone(tmp_path: Path) -> None:
    fp_a = gi.Lane("runbase", KEY_A).fingerprint
    async with Simulator(config()) as sim:
        in_flight = await stopped_on_a(sim, tmp_path)
        assert len(in_flight) >= 4
        assert {e.key_fingerprint for e in in_flight} == {fp_a}
        created = sim.stats.creates

        # Key B only: A's runs are named and left alone, never created again.
        async with gi.Session(lanes=[lane(sim, KEY_B)]) as session:
            job = gi.Batch(session, PROMPTS, tmp_path)
            plan = job.plan()
            assert plan.missing_lanes == {f"runbase:{fp_a}": len(in_flight)}
            notice = job.endpoint_notice() or ""
            assert f"runbase:{fp_a} is not in this job's lanes: its {len(in_flight)}" in notice
            report = await job.run()
            assert job.missing_lanes == {f"runbase:{fp_a}": len(in_flight)}
        assert sim.stats.duplicates == 0
        assert report.attached == 0
        left = {e.key: e for e in report.entries if e.status == "pending"}
        assert {e.key for e in in_flight} <= set(left)
        assert sim.stats.creates == created + report.submitted

        # Keys A and B: A's runs are resumed through A.
        async with gi.Session(lanes=[lane(sim, KEY_B), lane(sim, KEY_A)]) as session:
            job = gi.Batch(session, PROMPTS, tmp_path)
            assert job.plan().missing_lanes == {}
            both = await job.run()
    assert sim.stats.duplicates == 0
    assert both.ok and both.submitted == 0 and both.attached == len(in_flight)
    final = {e.key: e for e in both.entries}
    for entry in in_flight:
        assert final[entry.key].run_id == entry.run_id
        assert final[entry.key].key_fingerprint == fp_a
    assert collections.Counter(e.status for e in both.entries) == {"succeeded": len(PROMPTS)}


async def test_a_journal_of_eight_digit_lanes_resumes_through_its_own_lane(
    tmp_path: Path,
) -> None:
    # Journals and manifests written before fingerprints had one length name a
    # lane by 8 hex digits: a rerun still finds the lane, and never pays again.
    full = gi.Lane("runbase", KEY_A).fingerprint
    old = full[:8]
    async with Simulator(config()) as sim:
        in_flight = await stopped_on_a(sim, tmp_path)
        assert len(in_flight) >= 4
        journal = tmp_path / JOURNAL_NAME
        text = journal.read_text()
        assert full in text
        journal.write_text(text.replace(full, old))
        created = sim.stats.creates

        async with gi.Session(lanes=[lane(sim, KEY_B)]) as session:
            # Without A the old label is what the user is told about.
            assert gi.Batch(session, PROMPTS, tmp_path).plan().missing_lanes == {
                f"runbase:{old}": len(in_flight)
            }
        async with gi.Session(lanes=[lane(sim, KEY_B), lane(sim, KEY_A)]) as session:
            job = gi.Batch(session, PROMPTS, tmp_path)
            plan = job.plan()
            assert plan.missing_lanes == {} and len(plan.attach) == len(in_flight)
            report = await job.run()
    assert sim.stats.duplicates == 0
    assert report.ok and report.attached == len(in_flight)
    assert sim.stats.creates == created + report.submitted
    final = {e.key: e for e in report.entries}
    for entry in in_flight:
        assert final[entry.key].run_id == entry.run_id
        # Attached through A, and named now by its one fingerprint length.
        assert final[entry.key].key_fingerprint == full
