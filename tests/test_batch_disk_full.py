"""A disk that fills up: checked before a batch starts, and a batch stops creating when it does.

On a real small tmpfs (``mount -t tmpfs -o size=...``, which needs root): no
mocked ``OSError``. Skipped, saying why, where it cannot be mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import memory_session

from ._clock import FakeClock
from .test_cli import KEY, run_main, simulator_thread

FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=7)


def session_for(sim: Simulator, **options: Any) -> gi.Session:
    options.setdefault("rate_limit", gi.RateLimit(1000, 1.0))
    return gi.Session("runbase", api_key=KEY, base_url=sim.base_url("runbase"), **options)


def _mount(path: Path, size: str, *extra: str) -> subprocess.CompletedProcess[str]:
    options = ",".join([f"size={size}", *extra])
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 256 KiB tmpfs: about 25 of the simulator's 9 KB images."""
    where = Path(tempfile.mkdtemp(prefix="gptimage-full-"))
    try:
        done = _mount(where, "256k")
    except OSError as exc:
        pytest.skip(f"cannot run mount: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def grow(disk: Path, size: str) -> None:
    done = _mount(disk, size, "remount")
    assert done.returncode == 0, done.stderr


async def test_a_job_that_does_not_fit_is_refused_before_anything_is_sent(
    small_disk: Path,
) -> None:
    async with Simulator(FAST) as sim, session_for(sim) as session:
        batch = gi.Batch(session, [f"prompt {i}" for i in range(10)], small_disk / "out")
        with pytest.raises(gi.DiskSpaceError) as caught:
            await batch.run()
        assert caught.value.needed == 10 * 4_000_000
        assert 0 < caught.value.free <= 256 * 1024
        assert "free" in str(caught.value) and "expected_image_bytes" in str(caught.value)
        assert sim.stats.create_requests == 0


def test_the_cli_refuses_a_job_that_does_not_fit(small_disk: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(10)))
    with simulator_thread(FAST) as sim:
        args = ["batch", str(prompts), "--out", str(small_disk / "out")]
        args += ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        done = run_main(*args, "--rate-limit", "1000/1")
        assert done.code == 2, done.stderr
        assert "MB free" in done.stderr and "--expected-image-mb" in done.stderr
        assert sim.stats.create_requests == 0
        # The estimate can be lowered: then it runs.
        done = run_main(*args, "--rate-limit", "1000/1", "--expected-image-mb", "0.01")
        assert done.code == 0, done.stderr
        assert sim.stats.creates == 10


@pytest.mark.parametrize("download_window", [1, 8])
async def test_a_disk_that_fills_up_stops_the_creates_and_a_rerun_resumes(
    small_disk: Path, download_window: int, fake_clock: FakeClock
) -> None:
    n = 60  # about 540 KB of images for 256 KiB
    prompts = [f"prompt number {i}" for i in range(n)]
    out = small_disk / "out"
    # The simulator in memory on the loop's (fake) clock: how many creates go out
    # before the disk is full follows the pacing alone, never how busy the machine is.
    # One simulator for the run and the rerun: the rerun must find the runs paid for.
    loop = asyncio.get_running_loop()
    sim = Simulator(FAST, clock=lambda: loop.time())

    def in_memory(**options: Any) -> AbstractAsyncContextManager[tuple[Simulator, gi.Session]]:
        options.setdefault("rate_limit", gi.RateLimit(1000, 1.0))
        return memory_session(
            simulator=sim, api_key=KEY, request_timeout=30.0, remember=False, **options
        )

    # 20 creates a second, runs of 30-100 ms: the first window's 20 go out, their
    # images fill the disk, and the next window's creates must never be sent.
    async with in_memory(on_exit="cancel", rate_limit=gi.RateLimit(20, 1.0)) as (_, session):
        batch = gi.Batch(
            session,
            prompts,
            out,
            expected_image_bytes=0,  # no check before: the disk fills up on the way
            download_concurrency=download_window,
        )
        report = await fake_clock.run(batch.run())
    assert report.stopped
    assert report.stop_reason is not None and "disk is full" in report.stop_reason
    assert report.stop_cause is gi.BatchStop.DISK_FULL
    # Stopped at the first write refused: the creates after it were never sent.
    assert sim.stats.creates < 45, sim.stats.creates
    assert sim.stats.duplicates == 0
    paid = sim.stats.creates
    # Every run paid for is in the journal (its reserve took the last records).
    journal = gi.Journal.read(out / "journal.jsonl")
    known = {entry.run_id for entry in journal if entry.run_id is not None}
    assert known == set(sim.runs), "a paid run is missing from the journal"
    assert not any(entry.state == "intent" for entry in journal)

    grow(small_disk, "4m")
    async with in_memory() as (_, session):
        rerun = await fake_clock.run(gi.Batch(session, prompts, out, expected_image_bytes=0).run())
    assert rerun.ok, rerun.counts
    assert sim.stats.creates == n and sim.stats.duplicates == 0
    assert rerun.attached + rerun.submitted + rerun.skipped == n
    assert rerun.submitted == n - paid
    assert len([p for p in out.iterdir() if p.suffix == ".png"]) == n


def test_generate_stops_creating_when_the_disk_fills_up(small_disk: Path) -> None:
    # Room for two images only (2 KB each, in 4 KiB pages).
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(bytes(free - 8 * 1024))
    with simulator_thread(FAST) as sim:
        args = ["generate", "a lamp", "--n", "20", "--out", str(small_disk)]
        args += ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        # 4 creates a second: the first images fill the disk while creates still go out.
        # 4 MB an image does not fit: refused before anything is sent, as batch does.
        refused = run_main(*args, "--rate-limit", "4/1")
        assert refused.code == 2 and "MB free" in refused.stderr, refused.stderr
        assert sim.stats.create_requests == 0
        done = run_main(*args, "--rate-limit", "4/1", "--expected-image-mb", "0")
        assert done.code == 1, done.stderr
        assert "No space left on device" in done.stderr
        assert sim.stats.creates < 20, sim.stats.creates
        # Why the rest were never sent, and how many.
        assert f"stopped: the disk is full; {20 - sim.stats.creates} not sent" in done.stderr
        # Each run created was printed (its URL) or reported: none is lost.
        assert len(done.stdout.split()) == sim.stats.creates


async def test_a_manifest_the_full_disk_refuses_is_a_clean_stop_and_a_rerun_rebuilds_it(
    small_disk: Path,
) -> None:
    # The images and the journal made it; then the disk is full when the manifest
    # is written (found as a flake of the test above: a raw OSError). The journal's
    # reserve (RESERVE_BYTES) is freed as it closes, so the manifest must be
    # larger than that for its write to be refused: long prompts.
    grow(small_disk, "1m")
    n = 10
    prompts = [f"prompt number {i} " + "an oak desk, a lamp, " * 700 for i in range(n)]
    out = small_disk / "out"
    filler = small_disk / "filler"

    def fill_the_disk(event: gi.BatchEvent) -> None:
        if event.kind == "finished" and event.progress.finished == n and not filler.exists():
            with contextlib.suppress(OSError), filler.open("wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()

    async with Simulator(FAST) as sim:
        async with session_for(sim) as session:
            report = await gi.Batch(
                session, prompts, out, expected_image_bytes=0, on_event=fill_the_disk
            ).run()
        assert report.stopped and report.stop_reason is not None
        assert "could not be written" in report.stop_reason
        assert report.stop_cause is gi.BatchStop.DISK_FULL
        assert sim.stats.creates == n
        filler.unlink()
        async with session_for(sim) as session:
            rerun = await gi.Batch(session, prompts, out, expected_image_bytes=0).run()
        assert rerun.ok and rerun.submitted == 0 and sim.stats.creates == n
        assert len(gi.read_manifest(out / "manifest.jsonl")) == n
