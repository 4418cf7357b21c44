"""A create of unknown fate says which lane it went through and when (issue 19 / 20).

Creates are bound to a lane late, at send time; one whose answer is lost (a
bare 500 after the simulator made the run) must still name that lane and its
send time in the journal, the manifest, ``unknown``, the gallery, and be
settled through that lane by default. The simulator is a real HTTP server on
127.0.0.1; the command line runs as real processes.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import shlex
import subprocess
from pathlib import Path

import gptimage_async as gi
from gptimage_async._batch import prompt_key
from gptimage_async.simulator import Faults, Simulator, SimulatorConfig

from .test_cli import (
    KEY,
    RATE,
    Done,
    against,
    command,
    environment,
    prompt_file,
    run_cli,
    run_main,
    simulator_thread,
)
from .test_cli_settle import POOL_KEYS, run_pool

KEY_A, KEY_B = POOL_KEYS.values()
PRICES = {"a": 4, "b": 7}


def pool_toml(path: Path, sim: Simulator) -> Path:
    url = sim.base_url("runbase")
    path.write_text(
        "".join(
            f'[lanes.{name}]\nprovider = "runbase"\nkey_env = "{env}"\nbase_url = "{url}"\n'
            f'rate_limit = "{RATE}"\nprices = {{ medium = {PRICES[name]} }}\n'
            for name, env in (("a", "POOL_KEY_A"), ("b", "POOL_KEY_B"))
        )
    )
    return path


async def run_pool_cli(*args: str) -> Done:
    """The command line as a real process, with only the pool's key variables set."""
    proc = await asyncio.create_subprocess_exec(
        *command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(**POOL_KEYS),
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Done(proc.returncode, stdout.decode(), stderr.decode())


def fingerprint(key: str) -> str:
    return gi.Lane("runbase", key).fingerprint


def run_of(sim: Simulator, key: str, prompt: str) -> str:
    """The run the simulator made for ``prompt`` on ``key`` (what its dashboard shows)."""
    found = [r.id for r in sim.runs.values() if r.key == key and r.prompt == prompt]
    assert len(found) == 1, found
    return found[0]


def test_a_pool_batch_says_where_and_when_each_unknown_create_went(tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path / "p.txt", 12)
    out = tmp_path / "out dir"  # a space: the hints quote it for the shell
    config = SimulatorConfig(
        time_scale=0.01,
        rate_limit=None,
        seed=19,
        api_keys=frozenset(POOL_KEYS.values()),
        faults=Faults(create_500_after_effect=0.4),
    )
    with simulator_thread(config) as sim:
        pool = pool_toml(tmp_path / "pool.toml", sim)
        before = datetime.datetime.now(datetime.UTC)
        done = run_pool("batch", str(prompts), "--out", str(out), "--pool", str(pool))
        after = datetime.datetime.now(datetime.UTC)
        assert done.code == 1, done.stderr  # some prompts are of unknown fate
        manifest = gi.read_manifest(out / "manifest.jsonl")
        unknown = [e for e in manifest if e.status == "unknown"]
        succeeded = [e for e in manifest if e.status == "succeeded"]
        assert len(unknown) >= 2 and succeeded, [e.status for e in manifest]
        lanes = {fingerprint(KEY_A): KEY_A, fingerprint(KEY_B): KEY_B}
        for e in unknown:
            # Its lane and send time, never the key; no time to result (there is none).
            assert e.provider == "runbase" and e.key_fingerprint in lanes, e
            assert e.created_at is not None and before <= e.created_at <= after, e
            assert e.seconds is None and e.cost is None
            # The simulator did make it, on that very key.
            run_of(sim, lanes[e.key_fingerprint], e.input.prompt)
        # Cost per run: its own lane's price (the user's, so in "price units").
        for e in succeeded:
            lane = "a" if lanes[e.key_fingerprint or ""] == KEY_A else "b"
            assert (e.cost, e.cost_unit) == (PRICES[lane], "price units"), e
        # The hint names the real directory, quoted for the shell.
        assert f"gptimage-async unknown {shlex.quote(str(out))}" in done.stdout
        assert "unknown DIR" not in done.stdout and "settle DIR" not in done.stdout

        # The journal's intent records name the lane each create was sent through.
        records = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
        intents = [r for r in records if r["record"] == "intent"]
        assert intents and all(r["key_fingerprint"] in lanes for r in intents), intents
        # ... and its API root, so `settle` records the run where that lane finds it.
        assert all(r["base_url"] == sim.base_url("runbase") for r in intents), intents

        # `unknown` shows each line's lane and send time.
        listed = run_pool("unknown", str(out))
        assert listed.code == 0, listed.stderr
        for e in unknown:
            assert e.created_at is not None
            sent = e.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            assert f"sent {sent}, through runbase:{e.key_fingerprint}" in listed.stdout

        # The gallery tile names the lane (provider · fingerprint) and the send time.
        page = (out / "index.html").read_text()
        for e in unknown:
            assert f"runbase · {e.key_fingerprint}" in page
            assert e.created_at is not None
            assert f"unknown · sent {e.created_at.strftime('%H:%M:%S')} UTC" in page

        # A run id the journal gives another line is refused, naming it; nothing written.
        first, second = unknown[0], unknown[1]
        journal_before = (out / "journal.jsonl").read_bytes()
        taken = succeeded[0]
        assert taken.run_id is not None
        refused = run_pool("settle", str(out), str(first.line), taken.run_id)
        assert refused.code == 2, refused.stdout
        assert f"already belongs to line {taken.line}" in refused.stderr
        assert (out / "journal.jsonl").read_bytes() == journal_before

        # Settled without --lane: through the lane its create went to.
        assert first.key_fingerprint is not None and second.key_fingerprint is not None
        found = run_of(sim, lanes[first.key_fingerprint], first.input.prompt)
        settled = run_pool("settle", str(out), str(first.line), found)
        assert settled.code == 0, settled.stderr
        assert f"through runbase:{first.key_fingerprint}" in settled.stdout
        # The same run id for the next line: it now belongs to the first.
        again = run_pool("settle", str(out), str(second.line), found)
        assert again.code == 2 and f"already belongs to line {first.line}" in again.stderr

        creates = sim.stats.creates
        rerun = run_pool("batch", str(prompts), "--out", str(out), "--pool", str(pool))
        assert rerun.code == 1, rerun.stderr  # the others stay unknown
    # Attached, never created again; its creation time is its send time, not the rerun's.
    assert sim.stats.creates == creates
    line = next(e for e in gi.read_manifest(out / "manifest.jsonl") if e.line == first.line)
    assert line.status == "succeeded" and line.run_id == found
    assert line.created_at == first.created_at and line.key_fingerprint == first.key_fingerprint
    assert line.cost == PRICES["a" if lanes[first.key_fingerprint] == KEY_A else "b"]


async def test_one_key_records_its_lane_for_an_unknown_create_too(tmp_path: Path) -> None:
    config = SimulatorConfig(
        time_scale=0.01, rate_limit=None, seed=3, faults=Faults(create_500_after_effect=1.0)
    )
    async with (
        Simulator(config) as sim,
        gi.Session(
            "runbase",
            api_key=KEY,
            base_url=sim.base_url("runbase"),
            rate_limit=gi.RateLimit(1000, 1),
        ) as session,
    ):
        report = await gi.Batch(session, ["a lamp", "a chair"], tmp_path).run()
    lane = fingerprint(KEY)
    assert [e.status for e in report.entries] == ["unknown", "unknown"]
    assert all(e.key_fingerprint == lane and e.created_at is not None for e in report.entries)
    # A rerun reads them back from the journal with the same lane and time.
    journal = gi.Journal.read(tmp_path / "journal.jsonl")
    for e in report.entries:
        known = journal.get(e.key)
        assert known is not None and known.key_fingerprint == lane
        assert known.sent_at is not None and e.created_at is not None
        assert abs(known.sent_at - e.created_at.timestamp()) < 5


async def test_a_hand_settled_run_without_a_send_time_has_no_creation_time(
    tmp_path: Path,
) -> None:
    """A journal of before (intents without lane or time): unknown, never the settle time."""
    out = tmp_path / "out"
    out.mkdir()
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=4)
    async with Simulator(config) as sim:
        async with gi.Session(
            "runbase",
            api_key=KEY,
            base_url=sim.base_url("runbase"),
            rate_limit=gi.RateLimit(1000, 1),
        ) as session:
            run = await session.submit("prompt number 1")
            await run
        assert run.id is not None
        request = gi.ImageRequest("prompt number 1")
        key = prompt_key(request)
        (out / "journal.jsonl").write_text(
            json.dumps({"record": "start", "at": 1.0, "provider": "runbase",
                        "base_url": sim.base_url("runbase")}) + "\n"
            + json.dumps({"record": "intent", "key": key, "line": 1, "at": 2.0}) + "\n"
        )  # fmt: skip
        # An old intent still has its time: a settled run takes it as its creation time.
        settled = await run_cli("settle", str(out), "1", run.id)
        assert settled.code == 0, settled.stderr
        known = gi.Journal.read(out / "journal.jsonl").get(key)
        assert known is not None and known.created_at == 2.0
    # No send time at all (settled from a finished "ask" line with none): None, not "now".
    with gi.Journal(tmp_path / "j.jsonl") as journal:
        journal.finished(
            gi.ManifestEntry(line=1, key="k", input=request, status="unknown"), on_rerun="ask"
        )
        journal.created("k", "run_x", line=1, provider="runbase", settled=True)
        found = journal.get("k")
    assert found is not None and found.created_at is None


def test_single_key_cli_hint_and_gallery_line(tmp_path: Path) -> None:
    config = SimulatorConfig(
        time_scale=0.01, rate_limit=None, seed=3, faults=Faults(create_500_after_effect=1.0)
    )
    out = tmp_path / "o"
    with simulator_thread(config) as sim:
        done = run_main(
            "batch", str(prompt_file(tmp_path / "p.txt", 1)), "--out", str(out), *against(sim)
        )
    assert done.code == 1
    assert f"gptimage-async unknown {out}" in done.stdout
    assert f"gptimage-async settle {out} LINE RUN_ID" in done.stdout
    assert f"gallery: {out / 'index.html'}" in done.stdout


async def test_a_killed_pool_batch_s_intent_keeps_its_lane_and_time(tmp_path: Path) -> None:
    """What ``kill -9`` leaves (an intent, no answer): a rerun and ``unknown`` say where it went."""
    out = tmp_path / "out"
    out.mkdir()
    config = SimulatorConfig(
        time_scale=0.01, rate_limit=None, seed=5, api_keys=frozenset(POOL_KEYS.values())
    )
    async with Simulator(config) as sim:
        url = sim.base_url("runbase")
        lane_b = f"runbase:{fingerprint(KEY_B)}"
        request = gi.ImageRequest("prompt number 1")
        with gi.Journal(out / "journal.jsonl") as journal:
            journal.start(provider="runbase", base_url=url)
            journal.intent(prompt_key(request), line=1, request=request, lane=lane_b, root=url)
            sent = journal.get(prompt_key(request))
        assert sent is not None and sent.sent_at is not None and sent.base_url == url
        listed = await run_pool_cli("unknown", str(out))
        assert f"through {lane_b}" in listed.stdout, listed.stdout
        lanes = [
            gi.Lane("runbase", key, base_url=url, rate_limit=gi.RateLimit(1000, 1))
            for key in (KEY_A, KEY_B)
        ]
        async with gi.Session(lanes=lanes) as session:
            report = await gi.Batch(session, [request], out).run()
        assert sim.stats.creates == 0  # never sent again on its own
    [row] = report.entries
    assert row.status == "unknown" and row.key_fingerprint == fingerprint(KEY_B)
    assert row.created_at is not None and abs(row.created_at.timestamp() - sent.sent_at) < 1e-3
