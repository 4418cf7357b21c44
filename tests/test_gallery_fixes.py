"""The gallery and the batch's words: right-to-left text, missing files, why a batch stopped.

Pages rendered from real batches against the simulator (a real HTTP server on
127.0.0.1) and looked at in real headless Chromium; the command line run in
this process (``run_main``).
"""

from __future__ import annotations

from pathlib import Path

import gptimage_async as gi
from gptimage_async._gallery import GALLERY_NAME, build_gallery, write_gallery
from gptimage_async.simulator import Faults, Simulator, SimulatorConfig

from ._chromium import Browser
from .gallery_helpers import browser, cli, entry

__all__ = ["browser"]  # a fixture, used by name

FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=5)
GENEROUS = gi.RateLimit(1000, 1.0)
HEBREW = "מנורה קרמית על שולחן"


def test_right_to_left_text_is_isolated(browser: Browser, tmp_path: Path) -> None:
    entries = [
        entry(1, "failed", HEBREW, error=f"{HEBREW} 42", error_type="RunFailedError"),
        entry(2, "pending", f"{HEBREW} (3)"),
    ]
    page = browser.open(write_gallery(tmp_path, entries).as_uri())
    seen = page.evaluate(
        "Array.from(document.querySelectorAll('.prompt, .why'), e => "
        "[e.getAttribute('dir'), getComputedStyle(e).unicodeBidi, getComputedStyle(e).direction])"
    )
    assert len(seen) == 4
    for dir_attr, bidi, _ in seen:
        assert dir_attr == "auto" and bidi == "isolate", seen
    # The prompts read right to left; the reasons start with an error type, or are ours.
    assert [direction for *_, direction in seen] == ["rtl", "ltr", "rtl", "ltr"], seen


def test_an_image_deleted_after_the_batch_shows_as_missing(
    browser: Browser, tmp_path: Path
) -> None:
    (tmp_path / "kept.png").write_bytes(b"\x89PNG")
    entries = [
        entry(1, "succeeded", files=("kept.png",)),
        entry(2, "succeeded", files=("gone.png",)),
    ]
    write_gallery(tmp_path, entries)
    text = (tmp_path / GALLERY_NAME).read_text()
    assert "<b>1</b> images" in text  # the deleted one is not counted
    assert 'src="gone.png"' not in text and 'src="kept.png"' in text
    page = browser.open((tmp_path / GALLERY_NAME).as_uri())
    assert page.evaluate("document.images.length") == 1
    assert "file missing" in page.evaluate("document.body.innerText")


async def test_a_batch_stopped_by_an_error_says_why_on_its_page(tmp_path: Path) -> None:
    async with (
        Simulator(FAST.replace(api_keys=frozenset({"sk-good"}))) as sim,
        gi.Session(
            "runbase", api_key="sk-wrong", base_url=sim.base_url("runbase"), rate_limit=GENEROUS
        ) as session,
    ):
        report = await gi.Batch(session, ["a lamp", "a chair", "an owl"], tmp_path).run()
    assert report.stop_reason is not None
    text = (tmp_path / GALLERY_NAME).read_text()
    assert "stopped: " in text and "Fix that, then run the batch again" in text
    assert "401" in text.split("<main>")[0], "the reason is in the header"


async def test_an_uncertain_create_says_what_a_batch_user_can_do(tmp_path: Path) -> None:
    config = FAST.replace(faults=Faults(reset_after_create=1.0))
    async with (
        Simulator(config) as sim,
        gi.Session(
            "runbase", api_key="sk-test", base_url=sim.base_url("runbase"), rate_limit=GENEROUS
        ) as session,
    ):
        report = await gi.Batch(session, ["a lamp"], tmp_path).run()
    [row] = report.entries
    assert row.status == "unknown" and row.error is not None
    assert "--resubmit-unknown" in row.error and "resend_uncertain_creates" not in row.error
    page = build_gallery(tmp_path).read_text()
    assert "--resubmit-unknown" in page and "resend_uncertain_creates" not in page


def test_the_gallery_command_says_what_it_does(tmp_path: Path) -> None:
    helped = cli("gallery", "--help")
    assert helped.returncode == 0 and "log requests" not in helped.stdout
    assert "sends no request" in helped.stdout
    (tmp_path / "journal.jsonl").write_text("")  # a batch running into it, or killed
    missing = cli("gallery", str(tmp_path))
    assert missing.returncode == 2
    assert "when it ends" in missing.stderr and "index.html" in missing.stderr
    assert "an interrupted batch writes it" not in missing.stderr


def test_only_gallery_v_is_verbose_and_a_dry_run_refuses_what_a_run_refuses(
    tmp_path: Path,
) -> None:
    from gptimage_async._cli._args import parser

    # The gallery's own -v must not turn every other command verbose.
    assert parser().parse_args(["batch", "p.txt", "--out", "o"]).verbose is False
    assert parser().parse_args(["gallery", "d", "-v"]).verbose is True

    prompts = tmp_path / "p.txt"
    prompts.write_text("a lamp\n")
    for dry in ([], ["--dry-run"]):
        done = cli(
            "batch", str(prompts), "--out", str(tmp_path / "o"), "--provider", "apiinone",
            "--time-scale", "0.1", *dry,
        )  # fmt: skip
        assert done.returncode == 2, (dry, done.stderr)
        assert "--time-scale applies to --provider simulator only" in done.stderr


def test_generate_does_not_advise_a_library_option(tmp_path: Path) -> None:
    from .test_cli import against, run_main, simulator_thread

    with simulator_thread(FAST.replace(faults=Faults(reset_after_create=1.0))) as sim:
        done = run_main("generate", "a lamp", "--out", str(tmp_path / "o"), *against(sim))
    assert done.code == 1, done.stderr
    assert "UncertainCreateError" in done.stderr
    assert "resend_uncertain_creates" not in done.stderr
    assert "dashboard before running the command again" in done.stderr
