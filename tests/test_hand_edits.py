"""What a user does to a batch directory by hand, and what the library makes of it.

A run id settled by hand can be corrected until a batch attaches it; a
damaged ``manifest.jsonl`` is a typed error that names its line; images a
hand-edited manifest names by sub-folder or absolute path show on the
gallery page (real headless Chromium); a rerun keeps what is known of a
prompt of unknown fate, its finish time included. The simulator is a real
HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async._gallery import GALLERY_NAME, write_gallery
from gptimage_async._manifest import write_manifest
from gptimage_async.simulator import Faults, Simulator, SimulatorConfig

from ._chromium import Browser
from ._images import png
from .gallery_helpers import browser, cli, entry
from .test_cli import KEY, run_main, simulator_thread
from .test_cli_settle import FAST, find_run, leave_unknown

__all__ = ["browser"]  # the fixture, imported for its use here


def test_a_mistyped_settled_run_id_is_settled_again_before_a_batch_tries_it(
    tmp_path: Path,
) -> None:
    texts = ["a lamp", "a chair", "an owl"]
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out"
    with simulator_thread(FAST) as sim:
        leave_unknown(out, sim, texts)  # all three were on the wire when the batch died
        found = asyncio.run(find_run(sim, KEY, texts[0]))
        assert found.id is not None
        creates = sim.stats.creates

        # Line 1: a typo, then the right id. Line 2: a typo, then "none was made".
        assert run_main("settle", str(out), "1", found.id + "x").code == 0
        assert run_main("settle", str(out), "2", "run_typo").code == 0
        listed = run_main("unknown", str(out))
        assert "2 prompt(s) settled by hand" in listed.stdout, listed.stdout
        assert f"run {found.id}x" in listed.stdout and "run run_typo" in listed.stdout
        assert "1 prompt(s)" in listed.stdout  # line 3 is still of unknown fate
        again = run_main("settle", str(out), "1", found.id)
        assert again.code == 0 and f"run {found.id} recorded" in again.stdout, again.stderr
        assert run_main("settle", str(out), "2", "--not-created").code == 0
        # A corrected id still may not be another line's run.
        taken = run_main("settle", str(out), "3", found.id)
        assert taken.code == 2 and "already belongs to line 1" in taken.stderr
        assert run_main("settle", str(out), "3", "--not-created").code == 0

        where = ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        done = run_main("batch", str(prompts), "--out", str(out), *where)
        assert done.code == 0, done.stderr
        rows = {e.line: e for e in gi.read_manifest(out / "manifest.jsonl")}
        assert rows[1].run_id == found.id and rows[1].status == "succeeded"
        assert all(rows[n].status == "succeeded" for n in (2, 3))
        # Line 1 attached, never created again; lines 2 and 3 created once each.
        assert sim.stats.creates == creates + 2
        # Once a batch attached it, the line is settled for good.
        late = run_main("settle", str(out), "1", "run_other")
        assert late.code == 2 and "no prompt of unknown fate" in late.stderr


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (b'{"line": 2, "key": "k2"\n', "truncated"),  # cut short
        (b'{"line": "two", "key": "k2", "input": {"prompt": "x"}, "status": "failed"}\n', "int"),
        (b"\xff\xfe not json\n", "malformed"),
    ],
)
def test_a_damaged_manifest_names_its_line(tmp_path: Path, damage: bytes, reason: str) -> None:
    entries = [entry(1, "failed", error="no"), entry(3, "failed", error="no")]
    write_manifest(tmp_path / "manifest.jsonl", entries)
    lines = (tmp_path / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    # Line 3 of the file is the damaged one; a blank line 2 is still counted.
    (tmp_path / "manifest.jsonl").write_bytes(lines[0] + b"\n" + damage + lines[1])
    with pytest.raises(gi.ManifestError) as caught:
        gi.read_manifest(tmp_path / "manifest.jsonl")
    error = caught.value
    assert isinstance(error, gi.GPTImageError) and isinstance(error, ValueError)
    assert error.line == 3 and error.path == str(tmp_path / "manifest.jsonl")
    assert reason in error.reason.lower() and str(error).startswith(f"{error.path}:3: ")
    done = cli("gallery", str(tmp_path))
    assert done.returncode == 2 and "damaged at line 3" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_images_named_by_sub_folder_or_absolute_path_show(browser: Browser, tmp_path: Path) -> None:
    image = png()
    out = tmp_path / "out"
    (out / "sub dir").mkdir(parents=True)
    elsewhere = tmp_path / "kept #1"
    elsewhere.mkdir()
    (out / "sub dir" / "a%1.png").write_bytes(image)
    (elsewhere / "b.png").write_bytes(image)
    (out / "c.png").write_bytes(image)
    names = ["sub dir/a%1.png", str(elsewhere / "b.png"), "c.png"]
    entries = [
        entry(n, "succeeded", files=(name,), run_id=f"r{n}") for n, name in enumerate(names, 1)
    ]
    page = browser.open(write_gallery(out, entries).as_uri())
    loaded: list[Any] = page.evaluate(
        "new Promise(done => { const imgs = [...document.querySelectorAll('img')];"
        " Promise.all(imgs.map(i => i.decode().then(() => i.naturalWidth, () => 0)))"
        ".then(done); })"
    )
    assert loaded == [1, 1, 1], loaded  # each 1x1 image decoded
    assert "file missing" not in (out / GALLERY_NAME).read_text()


async def test_a_rerun_keeps_an_unknown_prompts_finish_time(tmp_path: Path) -> None:
    config = SimulatorConfig(
        time_scale=0.01, rate_limit=None, seed=3, faults=Faults(create_500_after_effect=1.0)
    )
    async with Simulator(config) as sim:
        base = sim.base_url("runbase")
        options = {"api_key": "sk-test", "base_url": base, "rate_limit": gi.RateLimit(1000, 1)}
        async with gi.Session("runbase", **options) as session:
            first = await gi.Batch(session, ["a lamp"], tmp_path).run()
        assert [e.status for e in first.entries] == ["unknown"]
        before = json.loads((tmp_path / "manifest.jsonl").read_text())
        assert before["finished_at"] is not None and before["created_at"] is not None
        shutil.copy(tmp_path / "manifest.jsonl", tmp_path / "first.jsonl")
        async with gi.Session("runbase", **options) as session:
            second = await gi.Batch(session, ["a lamp"], tmp_path).run()
        assert [e.status for e in second.entries] == ["unknown"]
        assert sim.stats.creates == 1  # never created again unasked
    after = json.loads((tmp_path / "manifest.jsonl").read_text())
    for field in ("finished_at", "created_at", "provider", "key_fingerprint", "status"):
        assert after[field] == before[field], field
