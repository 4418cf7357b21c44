"""Issue 21, a fresh tester's findings: ``close()`` and ``on_exit``, Ctrl-C tracebacks, CLI words.

Each test drives the real thing: a ``SyncSession`` on the simulator served
from a thread, a real ``python`` process sent a real SIGINT, the real CLI.
"""

from __future__ import annotations

import asyncio
import html
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async._gallery import GALLERY_NAME, build_gallery, render_gallery
from gptimage_async._manifest import ManifestEntry, read_manifest, write_manifest
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_gallery_words import cli
from .test_sync import SimulatorThread, sim, sim_thread, sync_session
from .test_sync_signals import start, until

__all__ = ["sim", "sim_thread"]  # fixtures, used by name


@pytest.mark.parametrize(
    ("on_exit", "cancel", "waits"),
    [
        ("cancel", None, False),
        ("wait", None, True),
        ("cancel", False, True),
        ("wait", True, False),
    ],
)
def test_close_follows_on_exit_unless_told(on_exit: str, cancel: bool | None, waits: bool) -> None:
    # Runs of 3-10 s at time scale 1: a close that waits takes seconds, one
    # that lets them go returns at once.
    scale = 1.0 if not waits else 0.05
    holder = SimulatorThread(SimulatorConfig(time_scale=scale, rate_limit=None, seed=3))
    with holder as sim:
        session = sync_session(sim, on_exit=on_exit)
        runs = [session.submit(f"a ceramic lamp, take {n}") for n in range(3)]
        started = time.monotonic()
        if cancel is None:
            session.close()
        else:
            session.close(cancel=cancel)
        took = time.monotonic() - started
        assert session.closed
        if waits:
            assert all(run.result(timeout=1).urls for run in runs)
        else:
            assert took < 2.5, f"close() waited {took:.1f}s for runs it should let go"
            for run in runs:
                with pytest.raises(gi.SessionClosedError):
                    run.result(timeout=1)
            assert {run.id for run in runs} <= {run.id for run in session.runs.abandoned}


async def test_a_ctrl_c_traceback_is_not_chained_to_a_runtime_error() -> None:
    async with Simulator(SimulatorConfig(time_scale=1.0, rate_limit=None, seed=3)) as sim:
        proc = await start(sim, "generate", rate=100.0)
        await until(lambda: sim.stats.creates == 1, proc, sim=sim)
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    stderr = err.decode()
    assert proc.returncode == -signal.SIGINT, stderr
    assert "KeyboardInterrupt" in stderr
    assert "During handling" not in stderr, stderr
    assert "RuntimeError" not in stderr, stderr
    assert "no running event loop" not in stderr, stderr


def _entry(line: int, status: str, **fields: object) -> ManifestEntry:
    fields.setdefault("input", gi.ImageRequest("a lamp"))
    return ManifestEntry(line=line, key=f"k{line}", status=status, **fields)  # type: ignore[arg-type]


def test_the_footer_names_the_real_directory_shell_quoted_and_escaped(tmp_path: Path) -> None:
    out = tmp_path / "it's <b>"
    out.mkdir()
    write_manifest(out / "manifest.jsonl", [_entry(1, "pending")])
    text = build_gallery(out).read_text()
    command = f"gptimage-async gallery {shlex.quote(str(out.resolve()))}"
    assert f"<code>{html.escape(command)}</code>" in text
    assert "gallery DIR" not in text and "<b>" not in text.split("<footer>")[1]


def test_gallery_of_a_missing_directory_says_it_does_not_exist(tmp_path: Path) -> None:
    missing = cli("gallery", str(tmp_path / "nonexist"))
    assert missing.returncode == 2
    assert f"{tmp_path / 'nonexist'} does not exist" in missing.stderr
    assert "DIR" not in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = cli("gallery", str(tmp_path / "empty"))
    assert empty.returncode == 2
    assert f"keeps {tmp_path / 'empty' / GALLERY_NAME} current" in empty.stderr
    assert "DIR" not in empty.stderr


def test_a_pending_tile_says_whether_it_was_created_and_paid() -> None:
    tiles = [_entry(1, "pending", run_id="run_paid"), _entry(2, "pending")]
    for running in (False, True):
        page = render_gallery(tiles, title="o", running=running)
        paid, unsent = page.split('<li class="tile" data-status="pending"')[1:]
        assert "created (paid)" in paid and "attach" in paid and "never pa" in paid
        unsent = unsent.split("</li>")[0]
        assert "created" not in unsent and "run" in unsent and "send" in unsent
        assert "stopped before a result" not in page


def test_a_tile_shows_its_reference_images() -> None:
    urls = ["https://example.com/a.png", "https://example.com/b.png?x=1&y=2"]
    page = render_gallery(
        [
            _entry(1, "failed", input=gi.ImageRequest("a lamp", image_urls=urls)),
            _entry(2, "failed", input=gi.ImageRequest("a lamp", image_urls=urls[:1])),
            _entry(3, "failed"),
        ],
        title="o",
    )
    one, two, three = page.split('<li class="tile"')[1:]
    assert ">2 reference images</span>" in one and html.escape(urls[1]) in one
    assert ">1 reference image</span>" in two
    assert "reference image" not in three


def test_a_sync_results_caption_says_how_sync_code_keeps_the_files(sim: Simulator) -> None:
    with sync_session(sim) as session:
        caption = session.generate("a ceramic lamp")._repr_html_()
    assert "<code>session.download(result, dir)</code> keeps the files" in caption
    assert "await" not in caption


async def test_an_async_results_caption_keeps_the_async_words() -> None:
    async with (
        Simulator(SimulatorConfig(time_scale=0.01, rate_limit=None, seed=3)) as sim,
        gi.Session("runbase", api_key="sk-sim-test", base_url=sim.base_url("runbase")) as session,
    ):
        caption = (await session.generate("a ceramic lamp"))._repr_html_()
    assert "<code>await result.save(dir)</code> keeps the files" in caption


# Two real processes, one per way out: a command's own output (``main`` catches the
# BrokenPipeError for every command alike, so ``unknown`` stands for ``gallery`` and the
# rest) and argparse's help (one ``print_help`` for the main and each subcommand's).
@pytest.mark.parametrize("args", [("unknown", "{dir}"), ("batch", "--help")])
def test_output_to_a_closed_pipe_ends_quietly(tmp_path: Path, args: tuple[str, ...]) -> None:
    # A pipe whose reader is gone before anything is written: `... | head` once head exited.
    write_manifest(tmp_path / "manifest.jsonl", [_entry(1, "pending")])
    (tmp_path / "journal.jsonl").touch()  # an empty journal: "no prompt of unknown fate"
    reader, writer = os.pipe()
    os.close(reader)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gptimage_async", *(a.format(dir=tmp_path) for a in args)],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    # argparse's help drops what it cannot write itself (and exits 0): quiet all the same.
    assert proc.returncode == (0 if "--help" in args else 141), proc.stderr
    assert proc.stderr == ""


def test_a_whole_cost_stays_an_integer_when_the_manifest_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    write_manifest(path, [_entry(1, "succeeded", cost=28.0), _entry(2, "succeeded", cost=0.04)])
    first = path.read_bytes()
    assert b'"cost":28,' in first and b'"cost":0.04,' in first
    # A later run reads the manifest back (28 decodes as 28.0) and writes it again.
    write_manifest(path, read_manifest(path))
    assert path.read_bytes() == first
