"""Reruns of ``gptimage-async batch`` into the same directory with other options or endpoints."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gptimage_async as gi
from gptimage_async.simulator import SimulatorConfig

from .test_cli import RATE, prompt_file, run_main, simulator_thread


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.png")}


def test_a_rerun_with_quality_high_keeps_the_first_images(tmp_path: Path) -> None:
    with simulator_thread(SimulatorConfig(time_scale=0.01, rate_limit=None, seed=4)) as sim:
        prompts = prompt_file(tmp_path / "p.txt", 5)
        out = tmp_path / "out"
        args = ["batch", str(prompts), "--out", str(out), "--provider", "runbase"]
        args += ["--base-url", sim.base_url("runbase"), "--rate-limit", RATE]
        first = run_main(*args)
        assert first.code == 0, first.stderr
        before = digests(out)
        high = run_main(*args, "--quality", "high")
        assert high.code == 0, high.stderr
        assert "note:" not in high.stderr  # same endpoint: nothing to announce
        after = digests(out)
        assert len(after) == 10 and {k: after[k] for k in before} == before
        manifest = gi.read_manifest(out / "manifest.jsonl")
        assert [(e.input.quality, e.earlier) for e in manifest] == [("high", False)] * 5 + [
            (None, True)
        ] * 5
        assert {f for e in manifest for f in e.files} == set(after)
        again = run_main(*args)
        assert again.code == 0 and "(5 already done)" in again.stdout
    assert sim.stats.creates == 10


def test_another_base_url_is_announced_before_anything_is_sent(tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path / "p.txt", 3)
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--out", str(out), "--provider", "runbase", "--rate-limit", RATE]
    config = SimulatorConfig(time_scale=0.01, rate_limit=None)
    with (
        simulator_thread(config.replace(seed=1)) as first,
        simulator_thread(config.replace(seed=2)) as new,
    ):
        old_url, new_url = first.base_url("runbase"), new.base_url("runbase")
        done = run_main(*args, "--base-url", old_url)
        assert done.code == 0, done.stderr
        dry = run_main(*args, "--base-url", new_url, "--dry-run")
        moved = run_main(*args, "--base-url", new_url)
        assert new.stats.requests == 0  # everything was done at the first one
    # The dry run says it too, as the real run does.
    assert dry.code == 0, dry.stderr
    assert f"was last used with runbase at {old_url}" in dry.stderr
    assert moved.code == 0, moved.stderr
    assert "(3 already done)" in moved.stdout
    first_line = moved.stderr.splitlines()[0]
    assert first_line == (
        f"note: {out} was last used with runbase at {old_url}; this run uses runbase at {new_url}."
    )
    assert moved.stderr.count("was last used with") == 1  # said once, not logged again


def test_the_simulators_new_port_is_no_news(tmp_path: Path) -> None:
    # --provider simulator starts a simulator on a new port each run.
    prompts = prompt_file(tmp_path / "p.txt", 2)
    args = ["batch", str(prompts), "--out", str(tmp_path / "out"), "--provider", "simulator"]
    done = run_main(*args)
    assert done.code == 0, done.stderr
    again = run_main(*args, "--quality", "high")
    assert again.code == 0, again.stderr
    assert "was last used with" not in again.stderr
