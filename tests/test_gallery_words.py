"""What the gallery and the batch summary say: pending reasons, earlier requests, a stale
page, a page that could not be written, a manifest given for a directory, the spend's unit.

Batches run against the simulator (a real HTTP server on 127.0.0.1); the
command line runs as real processes; the stale page is looked at in real
headless Chromium.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import gptimage_async as gi
from gptimage_async._gallery import GALLERY_NAME, RELOAD_SECONDS, STALE_RELOADS, render_gallery
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import TEST_KEYS

from ._chromium import Browser
from .gallery_helpers import apiinone_session, browser, cli, entry
from .test_cli import prompt_file, run_main, simulator_thread

__all__ = ["browser"]  # a fixture, used by name

FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=7)


def test_a_pending_tile_says_why_and_a_tile_not_saved_its_time() -> None:
    tiles = [entry(1, "pending"), entry(2, "succeeded", seconds=8.6)]
    stopped = render_gallery(tiles, title="o")
    assert "never sent: run the batch again to send it" in stopped
    assert "not saved" in stopped and "succeeded · 8.6 s" in stopped
    running = render_gallery(tiles, title="o", running=True)
    assert "not sent yet, waiting for its turn" in running
    assert "never sent:" not in running


def test_a_running_page_left_behind_says_the_batch_may_have_stopped(
    browser: Browser, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    old = now - datetime.timedelta(seconds=STALE_RELOADS * RELOAD_SECONDS + 30)
    shown = {}
    for name, at in (("fresh", now), ("stale", old)):
        page = tmp_path / f"{name}.html"
        page.write_text(render_gallery([entry(1, "pending")], title="o", running=True, now=at))
        text = page.read_text()
        assert f"running as of {at.strftime('%Y-%m-%d %H:%M:%S UTC')}" in text
        view = browser.open(page.as_uri())
        shown[name] = view.evaluate("document.querySelector('header').innerText")
    assert "may have stopped" in shown["stale"] and "last written at" in shown["stale"]
    assert "may have stopped" not in shown["fresh"]
    # A finished page has no such warning at all.
    assert 'id="stale"' not in render_gallery([entry(1, "succeeded")], title="o")


async def test_a_rerun_with_other_options_counts_earlier_requests_apart(tmp_path: Path) -> None:
    prompts = ["a lamp", "a chair", "an owl"]
    async with (
        Simulator(FAST) as sim,
        apiinone_session(sim) as session,
    ):
        await gi.Batch(session, prompts, tmp_path).run()
    async with (
        Simulator(FAST) as sim,
        apiinone_session(sim) as session,
    ):
        high = [gi.ImageRequest(p, quality="high") for p in prompts]
        report = await gi.Batch(session, high, tmp_path, attach_elsewhere=True).run()
    assert all(e.cost == 28 and e.cost_unit == "credits" for e in report.entries)
    header = (tmp_path / GALLERY_NAME).read_text().split("<main>")[0]
    assert "<b>3</b> prompts" in header and "<b>3</b> earlier requests" in header
    assert "<b>6</b> images" in header and "<b>114</b> credits" in header  # 3 x 28 + 3 x 10


def test_a_page_not_written_is_not_claimed_and_its_real_path_is_said(tmp_path: Path) -> None:
    out = tmp_path / "gdir"
    (out / GALLERY_NAME).mkdir(parents=True)  # the page's name is taken by a directory
    done = cli(
        "batch", str(prompt_file(tmp_path / "p.txt", 2)), "--out", str(out),
        "--provider", "simulator", "--progress", "log",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "gallery:" not in done.stdout
    assert f"could not write the gallery page {out / GALLERY_NAME}" in done.stderr
    assert "gallery: not written; rebuild it with: gptimage-async gallery" in done.stderr

    rebuilt = cli("gallery", str(out))
    assert rebuilt.returncode == 2
    assert f"cannot write {out / GALLERY_NAME}: Is a directory" in rebuilt.stderr

    manifest = cli("gallery", str(out / "manifest.jsonl"))
    assert manifest.returncode == 2
    assert "is not a batch directory" in manifest.stderr and str(out) in manifest.stderr
    assert "Not a directory" not in manifest.stderr


def test_the_spend_and_the_dry_run_say_the_same_unit(tmp_path: Path) -> None:
    # In this process (run_main): about what it prints, not a process.
    prompts = prompt_file(tmp_path / "p.txt", 3)
    out = tmp_path / "o"
    with simulator_thread(FAST) as sim:
        where = ["--provider", "apiinone", "--base-url", sim.base_url("apiinone")]
        env = {"APIINONE_API_KEY": TEST_KEYS["apiinone"]}
        said = []
        for dry in (["--dry-run"], ["--rate-limit", "1000/1"]):
            done = run_main(
                "batch", str(prompts), "--out", str(out), *where, *dry, key=None, env=env
            )
            assert done.code == 0, done.stderr
            said.append(done.stdout)
    assert "expected cost: 30 credits" in said[0], said[0]
    assert "spend: 30 credits in all" in said[1].splitlines(), said[1]
