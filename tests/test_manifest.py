"""What the manifest records of a batch: options sent, lane, times and cost.

Real batches against the simulator over 127.0.0.1; old manifests still read.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import gptimage_async as gi
from gptimage_async._manifest import (
    ManifestEntry,
    read_manifest,
    write_manifest,
)
from gptimage_async._pool import FINGERPRINT_DIGITS, lane_fingerprint, same_lane
from gptimage_async.simulator import Simulator, SimulatorConfig

FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=5)
GENEROUS = gi.RateLimit(1000, 1.0)
KEYS = {"runbase": "sk-manifest-test-key", "apiinone": "aio_manifest_test_key"}
REQUESTS = [
    gi.ImageRequest("a lamp"),
    gi.ImageRequest("a chair", quality="high", aspect_ratio="3:2"),
    gi.ImageRequest("a table", quality="medium"),
]


async def run(
    provider: str, out: Path, config: SimulatorConfig = FAST, key: str | None = None
) -> gi.BatchReport:
    async with (
        Simulator(config) as sim,
        gi.Session(
            provider,  # type: ignore[arg-type]
            api_key=key or KEYS[provider],
            base_url=sim.base_url(provider),
            rate_limit=GENEROUS,
        ) as session,
    ):
        return await gi.Batch(session, REQUESTS, out).run()


async def test_the_manifest_says_what_was_sent_where_when_and_for_how_much(
    tmp_path: Path,
) -> None:
    before = datetime.datetime.now(datetime.UTC)
    report = await run("apiinone", tmp_path)
    after = datetime.datetime.now(datetime.UTC)
    lamp, chair, table = read_manifest(report.manifest)
    assert report.ok
    # The provider's default is filled in and named as such.
    assert (lamp.quality, lamp.quality_source) == ("medium", "default")
    assert (lamp.aspect_ratio, lamp.aspect_ratio_source) == ("1:1", "default")
    assert (chair.quality, chair.quality_source) == ("high", "request")
    assert (chair.aspect_ratio, chair.aspect_ratio_source) == ("3:2", "request")
    assert (table.quality, table.quality_source) == ("medium", "request")
    # API in One's price list: 10 credits a medium image, 28 a high one.
    assert [(e.cost, e.cost_unit) for e in (lamp, chair, table)] == [
        (10, "credits"),
        (28, "credits"),
        (10, "credits"),
    ]
    for entry in (lamp, chair, table):
        assert entry.provider == "apiinone"
        # The lane's one fingerprint: the manifest, Run.lane and gi.Lane agree.
        assert entry.key_fingerprint == gi.Lane("apiinone", KEYS["apiinone"]).fingerprint
        assert entry.created_at is not None and entry.finished_at is not None
        assert before <= entry.created_at <= entry.finished_at <= after
        assert entry.created_at.utcoffset() == datetime.timedelta(0)
        assert entry.seconds == round((entry.finished_at - entry.created_at).total_seconds(), 3)
    text = report.manifest.read_text()
    # Wall clock in ISO 8601, UTC; the key itself nowhere.
    assert re.search(r'"created_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"', text)
    assert KEYS["apiinone"] not in text and KEYS["apiinone"] not in report.journal.read_text()


async def test_runbase_publishes_no_price_and_failed_runs_cost_nothing(tmp_path: Path) -> None:
    report = await run("runbase", tmp_path / "rb")
    assert report.ok and all(e.cost is None and e.cost_unit is None for e in report.entries)
    assert all(e.provider == "runbase" for e in report.entries)

    failing = await run("apiinone", tmp_path / "aio", FAST.replace(failure_rate=1.0))
    assert failing.counts["failed"] == 3
    for entry in failing.entries:
        assert entry.cost is None and entry.finished_at is not None
        assert entry.quality is not None and entry.provider == "apiinone"


async def test_a_rerun_keeps_what_the_first_run_recorded(tmp_path: Path) -> None:
    first = await run("apiinone", tmp_path)
    second = await run("apiinone", tmp_path)
    assert second.skipped == 3
    assert second.entries == first.entries


def test_fingerprints_tell_keys_apart_and_never_show_them() -> None:
    one = lane_fingerprint("runbase", "sk-one-secret-key")
    assert FINGERPRINT_DIGITS == 12 and re.fullmatch(r"[0-9a-f]{12}", one)
    assert one == lane_fingerprint("runbase", "sk-one-secret-key")
    assert one != lane_fingerprint("runbase", "sk-two-secret-key")
    assert one != lane_fingerprint("apiinone", "sk-one-secret-key")


def test_an_old_eight_digit_lane_is_the_same_lane_and_no_other() -> None:
    full = lane_fingerprint("runbase", "sk-one-secret-key")
    other = lane_fingerprint("runbase", "sk-two-secret-key")
    lane = f"runbase:{full}"
    assert same_lane(lane, lane)
    assert same_lane(f"runbase:{full[:8]}", lane)  # what manifests of before wrote
    assert not same_lane(f"apiinone:{full[:8]}", lane)  # another provider
    assert not same_lane(f"runbase:{other[:8]}", lane)  # another key
    assert not same_lane(f"runbase:{full[:6]}", lane)  # too short to be one
    assert not same_lane("runbase:", lane)


def test_manifests_with_either_length_of_fingerprint_read_back(tmp_path: Path) -> None:
    full = lane_fingerprint("apiinone", KEYS["apiinone"])
    rows = [
        ManifestEntry(
            line=n,
            key=f"k-{n}",
            input=gi.ImageRequest("a lamp"),
            status="succeeded",
            run_id=f"run_{n}",
            provider="apiinone",
            key_fingerprint=fingerprint,
        )
        for n, fingerprint in ((1, full[:8]), (2, full))
    ]
    write_manifest(tmp_path / "manifest.jsonl", rows)
    old, new = read_manifest(tmp_path / "manifest.jsonl")
    lane = f"apiinone:{full}"
    assert (old.key_fingerprint, new.key_fingerprint) == (full[:8], full)
    assert same_lane(f"{old.provider}:{old.key_fingerprint}", lane)
    assert same_lane(f"{new.provider}:{new.key_fingerprint}", lane)


def test_an_old_manifest_reads_with_the_new_fields_empty(tmp_path: Path) -> None:
    old = (
        b'{"line":3,"key":"5f0c-1","input":{"prompt":"a lamp","aspect_ratio":null,'
        b'"quality":null,"image_urls":[]},"status":"succeeded","run_id":"run_abc",'
        b'"urls":["https://x.test/a.png"],"files":["00003-a-lamp-5f0c1a2b-1.png"],'
        b'"error":null,"error_type":null,"earlier":false}\n'
    )
    (tmp_path / "manifest.jsonl").write_bytes(old)
    (entry,) = read_manifest(tmp_path / "manifest.jsonl")
    assert entry.files == ("00003-a-lamp-5f0c1a2b-1.png",)
    assert entry.quality is None and entry.created_at is None and entry.cost is None
    assert entry.provider is None and entry.key_fingerprint is None and entry.seconds is None


def test_writing_fills_in_the_options_of_entries_not_sent(tmp_path: Path) -> None:
    pending = ManifestEntry(
        line=1,
        key="k-1",
        input=gi.ImageRequest("a lamp", aspect_ratio="2:3"),
        status="pending",
    )
    write_manifest(tmp_path / "manifest.jsonl", [pending])
    (back,) = read_manifest(tmp_path / "manifest.jsonl")
    assert (back.quality, back.quality_source) == ("medium", "default")
    assert (back.aspect_ratio, back.aspect_ratio_source) == ("2:3", "request")
    assert back.provider is None and back.created_at is None
