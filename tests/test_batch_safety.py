"""A batch's promises about paid runs: withdrawn creates, reruns with other options, endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async._batch import prompt_key
from gptimage_async._journal import Journal
from gptimage_async.simulator import Simulator, SimulatorConfig


def test_a_withdrawn_intent_puts_the_key_back_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    failed = gi.ManifestEntry(
        line=2, key="b-1", input=gi.ImageRequest("b"), status="failed", error="refunded"
    )
    with Journal(path, fsync=False) as journal:
        journal.intent("a-1", line=1)
        journal.intent("a-1", line=1)  # a second attempt
        journal.withdrawn("a-1", line=1)
        journal.finished(failed, on_rerun="submit")
        journal.intent("b-1", line=2)
        journal.withdrawn("b-1", line=2)
        journal.intent("c-1", line=3)
        assert journal.get("a-1") is None
        b_now = journal.get("b-1")
        assert b_now is not None and b_now.state == "finished"
    with Journal(path, fsync=False) as replayed:
        assert replayed.get("a-1") is None
        b = replayed.get("b-1")
        assert b is not None and b.state == "finished" and b.on_rerun == "submit"
        c = replayed.get("c-1")
        assert c is not None and c.state == "intent"  # not withdrawn: unknown fate


# -- reruns with other options keep every paid image -------------------------------------------

FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=7)
GENEROUS = gi.RateLimit(1000, 1.0)


def session_for(sim: Simulator, **options: Any) -> gi.Session:
    options.setdefault("rate_limit", GENEROUS)
    return gi.Session("runbase", api_key="sk-test", base_url=sim.base_url("runbase"), **options)


def images(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".png"}


LAMPS = ["a lamp", "a chair", "an owl"]


@pytest.mark.parametrize(
    "other",
    [
        [gi.ImageRequest(p, quality="high") for p in LAMPS],  # --quality high
        [gi.ImageRequest(p, aspect_ratio="3:2") for p in LAMPS],  # --aspect-ratio
        ["A lamp!", "a chair.", "An owl"],  # the same slugs, other prompts
        [gi.ImageRequest(p, image_urls=["https://x.test/ref.png"]) for p in LAMPS],
    ],
)
async def test_a_rerun_with_other_options_keeps_the_first_images(
    tmp_path: Path, other: list[gi.ImageRequest | str]
) -> None:
    async with Simulator(FAST) as sim, session_for(sim) as session:
        first = await gi.Batch(session, LAMPS, tmp_path).run()
        saved = images(tmp_path)
        second = await gi.Batch(session, other, tmp_path).run()
        assert first.ok and second.ok and sim.stats.creates == 6
        after = images(tmp_path)
        assert len(after) == 6
        assert {name: after[name] for name in saved} == saved  # not one byte changed
        manifest = gi.read_manifest(tmp_path / "manifest.jsonl")
        assert [(e.line, e.earlier) for e in manifest] == [
            (1, False), (2, False), (3, False), (1, True), (2, True), (3, True)
        ]  # fmt: skip
        assert manifest[:3] == list(second.entries)
        assert [e.input for e in manifest[3:]] == [e.input for e in first.entries]
        assert {f for e in manifest for f in e.files} == set(after)
        assert len(second.entries) == 3 and second.counts["succeeded"] == 3

        # Back to the first options: nothing is created, and nothing is forgotten.
        third = await gi.Batch(session, LAMPS, tmp_path).run()
    assert third.skipped == 3 and sim.stats.creates == 6
    assert images(tmp_path) == after
    manifest = gi.read_manifest(tmp_path / "manifest.jsonl")
    assert len(manifest) == 6 and sum(e.earlier for e in manifest) == 3


async def test_an_earlier_request_left_in_flight_is_listed_and_resumable(tmp_path: Path) -> None:
    async with Simulator(FAST.replace(time_scale=0.2)) as sim:
        async with session_for(sim, on_exit="cancel") as session:
            batch: gi.Batch

            def on_event(event: gi.BatchEvent) -> None:
                if event.kind == "created":
                    batch.stop()

            batch = gi.Batch(session, ["a lamp"], tmp_path, on_event=on_event)
            stopped = await batch.run()
        [pending] = stopped.entries
        assert pending.status == "pending" and pending.run_id is not None
        sim.config = sim.config.replace(time_scale=0.01)
        async with session_for(sim) as session:
            other = await gi.Batch(
                session, [gi.ImageRequest("a lamp", quality="high")], tmp_path
            ).run()
            manifest = gi.read_manifest(tmp_path / "manifest.jsonl")
            assert [(e.status, e.earlier, e.run_id) for e in manifest] == [
                ("succeeded", False, other.entries[0].run_id),
                ("pending", True, pending.run_id),
            ]
            assert manifest[1].input == gi.ImageRequest("a lamp")
            back = await gi.Batch(session, ["a lamp"], tmp_path).run()
    assert back.ok and back.attached == 1 and back.entries[0].run_id == pending.run_id
    assert sim.stats.creates == 2  # one per request (the simulator counts both as "a lamp")


# -- another provider endpoint for the same directory ------------------------------------------


async def test_a_new_base_url_is_announced_and_its_runs_are_left_alone(tmp_path: Path) -> None:
    old_config, new_config = FAST.replace(time_scale=0.2, seed=1), FAST.replace(seed=2)
    async with Simulator(old_config) as old, Simulator(new_config) as new:
        async with session_for(old, on_exit="cancel") as session:
            batch: gi.Batch

            def on_event(event: gi.BatchEvent) -> None:
                if event.kind == "created" and event.progress.in_flight >= 2:
                    batch.stop()

            batch = gi.Batch(session, LAMPS, tmp_path, on_event=on_event)
            stopped = await batch.run()
        in_flight = [e for e in stopped.entries if e.run_id is not None]
        assert len(in_flight) >= 2

        async with session_for(new) as session:
            moved = gi.Batch(session, LAMPS, tmp_path)
            notice = moved.endpoint_notice()
            assert notice is not None
            assert f"last used with runbase at {old.base_url('runbase')}" in notice
            assert f"this run uses runbase at {new.base_url('runbase')}" in notice
            assert f"{len(in_flight)} run(s) created there and not finished" in notice
            assert new.stats.requests == 0  # announced before anything was sent
            report = await moved.run()
        by_line = {e.line: e for e in report.entries}
        for entry in in_flight:
            mine = by_line[entry.line]
            assert (mine.status, mine.error_type, mine.run_id) == (
                "failed",
                "ConfigurationError",
                entry.run_id,
            )
            assert old.base_url("runbase") in (mine.error or "")
        assert new.stats.creates == 3 - len(in_flight)

        # Back at the old endpoint, the runs are attached, not created again.
        old.config = old.config.replace(time_scale=0.01)
        async with session_for(old) as session:
            back = gi.Batch(session, LAMPS, tmp_path)
            assert back.endpoint_notice() is not None  # the last batch was at the new one
            resumed = await back.run()
    assert resumed.attached == len(in_flight)
    assert old.stats.creates == len(in_flight) and old.stats.duplicates == 0


async def test_the_same_endpoint_is_not_announced(tmp_path: Path) -> None:
    async with Simulator(FAST) as sim, session_for(sim) as session:
        batch = gi.Batch(session, LAMPS, tmp_path)
        assert batch.endpoint_notice() is None  # a new directory
        await batch.run()
        assert gi.Batch(session, LAMPS, tmp_path).endpoint_notice() is None


async def test_attach_elsewhere_attaches_runs_of_the_same_provider(tmp_path: Path) -> None:
    async with Simulator(FAST) as sim:
        async with session_for(sim) as session:
            run = await session.submit("a lamp")
            assert run.id is not None
        key = prompt_key(gi.ImageRequest("a lamp"))
        with Journal(tmp_path / "journal.jsonl") as journal:
            journal.start(provider="runbase", base_url="https://proxy.example/api/v1")
            journal.intent(key, line=1)
            journal.created(key, run.id, line=1, provider="runbase")  # an older journal: no URL
        async with session_for(sim) as session:
            plain = gi.Batch(session, ["a lamp"], tmp_path)
            batch = gi.Batch(session, ["a lamp"], tmp_path, attach_elsewhere=True)
            assert "1 run(s) created there and not finished" in (plain.endpoint_notice() or "")
            notice = batch.endpoint_notice()
            assert notice is not None and notice.endswith(
                f"this run uses runbase at {sim.base_url('runbase')}."
            )
            refused = await plain.run()
            assert refused.entries[0].error_type == "ConfigurationError"
            report = await batch.run()
    assert report.ok and report.attached == 1 and report.entries[0].run_id == run.id
    assert sim.stats.creates == 1
