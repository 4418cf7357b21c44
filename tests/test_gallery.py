"""The gallery page a batch writes (``DIR/index.html``), checked in a real headless Chromium.

The page is built by real batches against the simulator over 127.0.0.1,
then opened from disk (``file://``) in Debian's ``chromium`` driven over the
DevTools protocol (``tests/_chromium.py``). Each browser test keeps a
screenshot under its pytest temporary directory; with ``GALLERY_SCREENSHOT``
set to a path, the main one is also copied there (how ``docs/gallery.png``
is made).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import gptimage_async as gi
from gptimage_async._batch import prompt_key
from gptimage_async._gallery import (
    GALLERY_NAME,
    build_gallery,
    render_gallery,
    write_gallery,
)
from gptimage_async._gallery_keep import THREAD_FROM, keep_gallery
from gptimage_async._manifest import read_manifest
from gptimage_async.simulator import Simulator, SimulatorConfig

from ._chromium import Browser
from ._clock import FakeClock
from .gallery_helpers import apiinone_session, browser, cli, entry

__all__ = ["browser"]  # a fixture, used by name

#: Prompts are user text: none of these may become markup or run.
HOSTILE = (
    '<img src=x onerror="window.__pwned = 1">',
    "</p></li></ul><script>window.__pwned = 2</script>",
    '" onmouseover="window.__pwned = 3" x="',
)
FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=11, failure_rate=0.25)
GENEROUS = gi.RateLimit(1000, 1.0)
PROMPTS = [
    gi.ImageRequest("a ceramic table lamp with a linen shade, studio product photo"),
    gi.ImageRequest("a watercolor map of an imaginary island", aspect_ratio="3:2"),
    gi.ImageRequest("a cozy reading nook in a lighthouse", quality="high"),
    gi.ImageRequest("a minimalist poster of a hot air balloon", aspect_ratio="2:3"),
    gi.ImageRequest("a close-up of dew drops on a spider web at sunrise"),
    gi.ImageRequest("a retro-futuristic train station on Mars", quality="high"),
    gi.ImageRequest("a bowl of ramen with a soft-boiled egg, overhead shot"),
    gi.ImageRequest("a paper-cut diorama of a forest at night with fireflies"),
    gi.ImageRequest("an astronaut tending a vegetable garden inside a glass dome"),
    gi.ImageRequest("a stained glass window depicting a fox and a crow"),
    gi.ImageRequest("a chess match between a cat and a raven, oil painting"),
    gi.ImageRequest("a loaf of sourdough bread on a flour-dusted table"),
    *(gi.ImageRequest(text) for text in HOSTILE),
]


def batch_prompts() -> list[gi.BatchPrompt]:
    return [gi.BatchPrompt(line, request) for line, request in enumerate(PROMPTS, 1)]


async def run_batch(out: Path, *, unknown_line: int | None = None) -> gi.BatchReport:
    """A real batch on API in One's simulator (it has prices): some runs fail, one is unknown."""
    prompts = batch_prompts()
    if unknown_line is not None:
        # What a kill -9 between intent and answer leaves: that prompt's fate is unknown.
        with gi.Journal(out / "journal.jsonl") as journal:
            journal.intent(prompt_key(prompts[unknown_line - 1].request), line=unknown_line)
    async with (
        Simulator(FAST) as sim,
        apiinone_session(sim) as session,
    ):
        return await gi.Batch(session, prompts, out).run()


# -- in the browser --------------------------------------------------------------------------

_IMAGES_LOADED = """
Promise.all(Array.from(document.images, img => {
  img.loading = "eager";  // the test looks at every image, not just the first screen
  return img.decode().then(() => img.naturalWidth, () => 0);
}))
"""


async def test_a_batch_page_in_a_real_browser(
    browser: Browser, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    report = await run_batch(out, unknown_line=5)
    page_file = out / GALLERY_NAME
    assert page_file.is_file()
    counts = report.counts
    assert counts["failed"] >= 1 and counts["unknown"] == 1 and counts["succeeded"] >= 5
    succeeded = [e for e in report.entries if e.status == "succeeded"]
    files = [name for e in succeeded for name in e.files]

    page = browser.open(page_file.as_uri(), width=1280, height=860)
    # One tile per prompt here (one image a run), each image tile showing its file.
    assert page.evaluate("document.querySelectorAll('.tile').length") == len(report.entries)
    shown = page.evaluate("Array.from(document.images, i => decodeURIComponent(i.src))")
    assert [src.rsplit("/", 1)[1] for src in shown] == files
    assert page.evaluate("Array.from(document.images).every(i => i.loading === 'lazy')")
    # No broken image: each decodes to a real width.
    widths = page.evaluate(_IMAGES_LOADED)
    assert len(widths) == len(files) and all(w > 0 for w in widths), widths
    shot = page.screenshot(tmp_path / "gallery.png")
    print(f"screenshot: {shot}")
    if target := os.environ.get("GALLERY_SCREENSHOT"):
        shutil.copyfile(shot, target)

    # Failed and unknown prompts are listed with their reason.
    listed = page.evaluate(
        "Array.from(document.querySelectorAll('.tile:not([data-status=succeeded])'), t => "
        "[t.dataset.status, t.querySelector('.prompt').textContent, "
        "t.querySelector('.why').textContent])"
    )
    expected = [
        [e.status, e.input.prompt, f"{e.error_type}: {e.error}"]
        for e in sorted(report.entries, key=lambda e: e.line)
        if e.status != "succeeded"
    ]
    assert listed == expected

    # The hostile prompts are text: shown verbatim, no element made of them, nothing ran.
    texts = page.evaluate("Array.from(document.querySelectorAll('.prompt'), p => p.textContent)")
    assert all(text in texts for text in HOSTILE)
    assert page.evaluate("window.__pwned === undefined")
    assert page.evaluate("document.scripts.length") == 1
    assert page.evaluate("document.querySelectorAll('.prompt *').length") == 0
    assert page.evaluate("document.querySelectorAll('[onerror], [onmouseover]').length") == 0

    # Counts at the top, and the filter by status.
    buttons = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('nav button'), "
        "b => [b.dataset.f, Number(b.querySelector('span').textContent)]))"
    )
    assert buttons == {"all": len(report.entries), **{s: counts[s] for s in buttons if s != "all"}}
    visible = (
        "Array.from(document.querySelectorAll('.tile'))"
        ".filter(t => getComputedStyle(t).display !== 'none').length"
    )
    page.evaluate("document.querySelector('[data-f=failed]').click()")
    assert page.evaluate(visible) == counts["failed"]
    page.screenshot(tmp_path / "gallery-failed.png")
    page.evaluate("document.querySelector('[data-f=all]').click()")
    assert page.evaluate(visible) == len(report.entries)


def test_ten_thousand_images_load_lazily(browser: Browser, tmp_path: Path) -> None:
    # 10,000 tiles of real files (hard links of one PNG): the page opens, and
    # only the images near the first screen are fetched.
    from gptimage_async.simulator._png import render_png

    png = tmp_path / "one.png"
    png.write_bytes(render_png("a lamp", 64, 64))
    entries = []
    for line in range(1, 10_001):
        name = f"{line:05d}-a-lamp-{line:08x}-1.png"
        os.link(png, tmp_path / name)
        entries.append(entry(line, "succeeded", f"prompt {line}", files=(name,)))
    page_file = write_gallery(tmp_path, entries)
    page = browser.open(page_file.as_uri(), width=1280, height=900)
    assert page.evaluate("document.querySelectorAll('.tile').length") == 10_000
    loaded = page.evaluate(
        "Array.from(document.images).filter(i => i.complete && i.naturalWidth).length"
    )
    assert 0 < loaded < 200, loaded


# -- the page as written ---------------------------------------------------------------------


def test_user_text_is_escaped_and_paths_quoted() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    page = render_gallery(
        [
            entry(1, "succeeded", hostile, files=('a "b" #1 <c>.png',)),
            entry(
                2, "failed", "fine", error='<b onclick="x()">no</b>', error_type="RunFailedError"
            ),
        ],
        title="<out>",
    )
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'src="a%20%22b%22%20%231%20%3Cc%3E.png"' in page
    assert "<b onclick" not in page and "&lt;b onclick=&quot;x()&quot;&gt;" in page
    assert "<title>&lt;out&gt; · gptimage-async</title>" in page
    # Nothing comes from the network; only the page's own script may run.
    assert "http://" not in page and "https://" not in page
    assert "script-src 'sha256-" in page


def test_ten_thousand_entries_make_a_compact_page() -> None:
    entries = [
        entry(
            n,
            "succeeded" if n % 10 else "failed",
            f"a ceramic lamp on a table, variant {n}",
            files=(f"{n:05d}-a-ceramic-lamp-on-a-table-variant-1a2b3c4d-1.png",) if n % 10 else (),
            error=None if n % 10 else "The prompt was rejected by the safety system.",
            provider="apiinone",
            key_fingerprint="3f9a1c2b",
            seconds=8.25,
            cost=10,
            cost_unit="credits",
        )
        for n in range(1, 10_001)
    ]
    page = render_gallery(entries, title="out")
    assert page.count('<li class="tile"') == 10_000
    assert page.count('loading="lazy"') == 9_000
    # About 1 KB a tile, prompt and file name included: 10,000 open in a browser at once.
    assert len(page.encode()) < 12_000_000, len(page.encode())


async def test_the_page_is_kept_current_and_written_at_the_end(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    page = tmp_path / GALLERY_NAME
    entries = [entry(1, "pending"), entry(2, "pending")]
    async with keep_gallery(tmp_path, lambda: entries, interval=3.0):
        await fake_clock.wait_for(page.exists)
        first = page.stat().st_ino
        text = page.read_text()
        assert (
            text.count('<li class="tile" data-status="pending"') == 2
            and 'http-equiv="refresh"' in text
        )
        await fake_clock.advance(3.0)
        assert page.stat().st_ino == first, "nothing changed: the page is not rewritten"

        (tmp_path / "one.png").write_bytes(b"")  # the page shows only files that exist
        entries = [entry(1, "succeeded", files=("one.png",)), entries[1]]
        await fake_clock.advance(3.0)
        await fake_clock.wait_for(lambda: page.stat().st_ino != first)
        assert 'src="one.png"' in page.read_text()
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")], "temporary file left"
    text = page.read_text()
    # The batch ended with a prompt pending: the page says so and stops reloading.
    assert "stopped: run the batch again" in text and 'http-equiv="refresh"' not in text


async def test_a_large_page_is_rendered_off_the_loop_and_a_late_one_never_wins(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    page = tmp_path / GALLERY_NAME
    entries = [entry(n, "pending") for n in range(1, THREAD_FROM + 1)]
    async with keep_gallery(tmp_path, lambda: entries, interval=3.0):
        # Each render is a worker thread's; time moves on once the keeper sleeps again.
        await fake_clock.wait_for(lambda: page.exists() and fake_clock.timer_pending())
        entries = [entry(1, "failed", error="late news"), *entries[1:]]
        await fake_clock.advance(3.0)
        await fake_clock.wait_for(
            lambda: "late news" in page.read_text() and fake_clock.timer_pending()
        )
        # A render of this state starts in a worker thread, and the block ends while it runs.
        entries = [entry(1, "failed", error="later news"), *entries[1:]]
        await fake_clock.advance(3.0)
        entries = [entry(n, "succeeded", files=(f"{n}.png",)) for n in range(1, THREAD_FROM + 1)]
    # The last page is the end's, whatever a worker thread was still rendering: once
    # every worker thread has finished (this test's loop is its own), a late one had its say.
    await asyncio.get_running_loop().shutdown_default_executor()
    text = page.read_text()
    assert text.count('<li class="tile" data-status="succeeded"') == THREAD_FROM
    assert 'http-equiv="refresh"' not in text


async def test_the_page_is_written_when_the_batch_is_cancelled(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    entries = [entry(1, "succeeded", files=("one.png",))]

    async def body() -> None:
        async with keep_gallery(tmp_path, lambda: entries, interval=3.0):
            await asyncio.sleep(3600)

    task = asyncio.create_task(body())
    await fake_clock.wait_for((tmp_path / GALLERY_NAME).exists)
    entries = [*entries, entry(2, "failed", error="boom")]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    text = (tmp_path / GALLERY_NAME).read_text()
    assert '<li class="tile" data-status="failed"' in text and "boom" in text


# -- batches and the command line ------------------------------------------------------------


async def test_a_batch_writes_the_page_and_gallery_false_skips_it(tmp_path: Path) -> None:
    async with (
        Simulator(FAST.replace(failure_rate=0.0)) as sim,
        gi.Session(
            "runbase", api_key="sk-test", base_url=sim.base_url("runbase"), rate_limit=GENEROUS
        ) as session,
    ):
        report = await gi.Batch(session, ["a lamp", "a chair"], tmp_path / "on").run()
        await gi.Batch(session, ["a lamp"], tmp_path / "off", gallery=False).run()
    text = (tmp_path / "on" / GALLERY_NAME).read_text()
    for e in report.entries:
        assert e.files[0] in text
    assert "runbase · " in text and "finished" in text
    assert not (tmp_path / "off" / GALLERY_NAME).exists()


def test_the_gallery_command_rebuilds_the_page_from_the_manifest(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a lamp\na chair\n")
    done = cli(
        "batch",
        str(prompts),
        "--out",
        str(tmp_path / "a"),
        "--provider",
        "simulator",
        "--progress",
        "log",
        "--no-gallery",
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "a" / GALLERY_NAME).exists()
    assert "gallery:" not in done.stdout

    rebuilt = cli("gallery", str(tmp_path / "a"))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.strip() == str(tmp_path / "a" / GALLERY_NAME)
    text = (tmp_path / "a" / GALLERY_NAME).read_text()
    for e in read_manifest(tmp_path / "a" / "manifest.jsonl"):
        assert e.files[0] in text

    # Another --no-gallery run leaves that page as it was, and says so.
    prompts.write_text("a lamp\na chair\na desk\n")
    again = cli(
        *("batch", str(prompts), "--out", str(tmp_path / "a"), "--provider", "simulator"),
        *("--progress", "log", "--no-gallery"),
    )
    assert again.returncode == 0, again.stderr
    assert (
        f"gallery: not rewritten (--no-gallery); {tmp_path / 'a' / GALLERY_NAME} is from an "
        "earlier run" in again.stdout
    )
    assert (tmp_path / "a" / GALLERY_NAME).read_text() == text

    missing = cli("gallery", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "nothing does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = cli("gallery", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "no manifest.jsonl" in empty.stderr

    (tmp_path / "a" / "manifest.jsonl").write_text('{"line": 1, "status": "succ')
    damaged = cli("gallery", str(tmp_path / "a"))
    assert damaged.returncode == 2 and "manifest.jsonl is damaged" in damaged.stderr


def test_an_old_manifest_still_makes_a_page(tmp_path: Path) -> None:
    # A manifest written before the manifest recorded options, lane, times and cost.
    line = {
        "line": 3,
        "key": "5f0c-1",
        "input": {"prompt": "a lamp", "aspect_ratio": None, "quality": None, "image_urls": []},
        "status": "succeeded",
        "run_id": "run_abc",
        "urls": [],
        "files": ["00003-a-lamp-5f0c1a2b-1.png"],
        "error": None,
        "error_type": None,
        "earlier": False,
    }
    (tmp_path / "manifest.jsonl").write_bytes(msgspec.json.encode(line) + b"\n")
    (tmp_path / "00003-a-lamp-5f0c1a2b-1.png").write_bytes(b"")
    text = build_gallery(tmp_path).read_text()
    assert 'src="00003-a-lamp-5f0c1a2b-1.png"' in text
    assert "medium (default)" in text and "1:1 (default)" in text


def test_ctrl_c_leaves_a_finished_page_and_a_rerun_completes_it(tmp_path: Path) -> None:
    # The batch Ctrl-C stops is a real process; the rerun runs in this process (run_main),
    # the simulator on a thread of its own.
    from .test_cli import run_main, simulator_thread

    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(1, 101)))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["RUNBASE_API_KEY"] = "sk-test"
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    page = out / GALLERY_NAME
    with simulator_thread(SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3)) as sim:
        args = [
            *("batch", str(prompts), "--out", str(out), "--progress", "log"),
            *("--provider", "runbase", "--base-url", sim.base_url("runbase")),
            *("--rate-limit", "1000/1"),
        ]

        async def interrupted() -> tuple[int | None, bytes, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gptimage_async",
                *args,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            # The page is written as the batch starts: a running page, reloading itself.
            while not (page.exists() and (out / "journal.jsonl").stat().st_size > 2000):
                assert proc.returncode is None and loop.time() < deadline
                await asyncio.sleep(0.01)
            running = page.read_text()
            proc.send_signal(signal.SIGINT)
            _, stderr = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, stderr, running

        code, stderr, running = asyncio.run(interrupted())
        assert 'http-equiv="refresh"' in running
        assert code == 130, stderr.decode()
        text = page.read_text()
        assert text.count('<li class="tile"') == 100
        assert '<li class="tile" data-status="pending"' in text
        assert "stopped: run the batch again" in text and 'http-equiv="refresh"' not in text
        # Each pending tile says why: created (paid) or never sent, and what finishes it.
        pending = [e for e in read_manifest(out / "manifest.jsonl") if e.status == "pending"]
        created = sum(1 for e in pending if e.run_id is not None)
        assert text.count("created (paid) before the stop, no result yet") == created
        assert text.count("never sent: run the batch again to send it") == len(pending) - created

        sim.config = sim.config.replace(time_scale=0.01)
        again = run_main(*args, env={"XDG_CACHE_HOME": env["XDG_CACHE_HOME"]})
        assert again.code == 0, again.stderr
    text = page.read_text()
    assert text.count('<li class="tile" data-status="succeeded"') == 100
    assert "finished" in text and f"gallery: {page}" in again.stdout
