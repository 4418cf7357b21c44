"""``gptimage-async unknown`` and ``settle``: prompts of unknown fate are seen and settled by hand.

The journal is the one a batch killed mid-create leaves (intents with no
answer); the run "recovered from the dashboard" is a real run of the
simulator the batch then attaches, never creating that prompt again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import gptimage_async as gi
from gptimage_async._batch import prompt_key
from gptimage_async._cli._settle import _names
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_cli import KEY, RATE, Done, prompt_file, run_cli, run_main, simulator_thread

FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=3)


def leave_unknown(out: Path, sim: Simulator, prompts: list[str]) -> None:
    """What a batch killed while these prompts' creates were on the wire leaves behind."""
    out.mkdir(parents=True, exist_ok=True)
    with gi.Journal(out / "journal.jsonl") as journal:
        journal.start(provider="runbase", base_url=sim.base_url("runbase"))
        for line, prompt in enumerate(prompts, 1):
            request = gi.ImageRequest(prompt)
            journal.intent(prompt_key(request), line=line, request=request)


# The commands here run in this process (``run_main``) against a simulator in a
# thread: they are about journals and usage, not processes, and a process
# start-up per command (0.4 s of CPU, a dozen of them) was most of their time.


async def find_run(sim: Simulator, key: str, prompt: str) -> gi.Run:
    """A real run of ``prompt`` on ``key`` (what the user finds on that key's dashboard)."""
    async with gi.Session(
        "runbase", api_key=key, base_url=sim.base_url("runbase"), rate_limit=gi.RateLimit(1000, 1)
    ) as session:
        run = await session.submit(prompt)
        await run
    return run


def test_unknown_lists_them_and_settle_records_a_run_or_none(tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path / "p.txt", 3)
    texts = [f"prompt number {i}" for i in (1, 2, 3)]
    out = tmp_path / "out"
    with simulator_thread(FAST) as sim:
        leave_unknown(out, sim, texts[:2])  # lines 1 and 2 were on the wire
        # The user finds line 1's run at the provider.
        found = asyncio.run(find_run(sim, KEY, texts[0]))
        assert sim.stats.creates == 1

        where = ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        dry = ["batch", str(prompts), "--out", str(out), *where, "--dry-run"]
        done = run_main(*dry)
        assert "dry run: 1 of 3 prompts" in done.stdout, done.stdout
        assert "2 of unknown fate" in done.stdout

        listed = run_main("unknown", str(out))
        assert listed.code == 0, listed.stderr
        assert "2 prompt(s)" in listed.stdout
        # A pool file that cannot be read is refused before anything is listed.
        bad_pool = run_main("unknown", str(out), "--pool", str(tmp_path / "no-such.toml"))
        assert bad_pool.code == 2 and "pool file" in bad_pool.stderr
        assert bad_pool.stdout == ""
        assert "line     1" in listed.stdout and "line     2" in listed.stdout
        assert "prompt number 1" in listed.stdout

        # Neither, or both, is bad usage; a line with nothing unknown too.
        for bad in (["1"], ["1", "run_x", "--not-created"], ["3", "--not-created"]):
            done = run_main("settle", str(out), *bad)
            assert done.code == 2, (bad, done.stdout, done.stderr)
        assert "line 3" in done.stderr and "no prompt of unknown fate" in done.stderr
        done = run_main("settle", str(out), "1")
        assert "RUN_ID you found" in done.stderr and "not both" not in done.stderr
        # A run id goes into the status URL's path: spaces or slashes cannot be one.
        for bad_id in ("run x", "../x", "a" * 201):
            done = run_main("settle", str(out), "1", bad_id)
            assert done.code == 2 and "RUN_ID" in done.stderr, (bad_id, done.stderr)

        assert found.id is not None
        done = run_main("settle", str(out), "1", found.id)
        assert done.code == 0 and "attaches it" in done.stdout, done.stderr
        done = run_main("settle", str(out), "2", "--not-created")
        assert done.code == 0 and "sends it" in done.stdout, done.stderr
        listed = run_main("unknown", str(out))
        assert "no prompt of unknown fate" in listed.stdout
        done = run_main(*dry)
        assert "dry run: 2 of 3 prompts" in done.stdout, done.stdout
        assert "1 earlier runs would be followed again" in done.stdout

        args = ["batch", str(prompts), "--out", str(out), "--provider", "runbase"]
        done = run_main(*args, "--base-url", sim.base_url("runbase"), "--rate-limit", RATE)
        assert done.code == 0, done.stderr
        # Line 1 was attached (not created again); lines 2 and 3 were sent.
        assert sim.stats.creates == 3 and sim.stats.duplicates == 0
        manifest = gi.read_manifest(out / "manifest.jsonl")
        assert [e.status for e in manifest] == ["succeeded"] * 3
        assert manifest[0].run_id == found.id
        assert "1 earlier runs re-attached" in done.stdout


async def test_settle_needs_a_journal_and_refuses_while_a_batch_holds_it(tmp_path: Path) -> None:
    # unknown only reads the journal: in this process, but for the refusals that
    # must come from another process than the one holding it.
    done = run_main("unknown", str(tmp_path))
    assert done.code == 2 and "no batch journal" in done.stderr
    async with Simulator(FAST) as sim:
        leave_unknown(tmp_path, sim, ["a lamp"])
        with gi.Journal(tmp_path / "journal.jsonl"):  # a batch running into the directory
            done = await run_cli("settle", str(tmp_path), "1", "--not-created")
            listed = await run_cli("unknown", str(tmp_path))
        assert done.code == 2 and "in use by another process" in done.stderr
        # Its creates on the wire are not of unknown fate: unknown refuses too.
        assert listed.code == 2 and "a batch is running" in listed.stderr
        assert "line " not in listed.stdout
        listed = run_main("unknown", str(tmp_path))  # once it has stopped
        assert listed.code == 0 and "1 prompt(s)" in listed.stdout
        # Nothing was written by the refused settle.
        journal = gi.Journal.read(tmp_path / "journal.jsonl")
        assert [entry.state for entry in journal] == ["intent"]


POOL_KEYS = {"POOL_KEY_A": "sk-settle-a", "POOL_KEY_B": "sk-settle-b"}


def run_pool(*args: str) -> Done:
    """The command line with only the pool's key variables set."""
    return run_main(*args, key=None, env=POOL_KEYS)


def made_on(sim: Simulator, key: str, prompt: str) -> str:
    """The id of a real run of ``prompt`` on ``key``, found on that key's dashboard."""
    run = asyncio.run(find_run(sim, key, prompt))
    assert run.id is not None
    return run.id


def test_settle_in_a_pool_job_attaches_through_the_named_lane(tmp_path: Path) -> None:
    key_a, key_b = POOL_KEYS.values()
    lane_a = f"runbase:{gi.Lane('runbase', key_a).fingerprint}"
    lane_b = f"runbase:{gi.Lane('runbase', key_b).fingerprint}"
    texts = [f"prompt number {i}" for i in (1, 2, 3)]
    prompts = prompt_file(tmp_path / "p.txt", 3)
    out = tmp_path / "out"
    config = FAST.replace(api_keys=frozenset(POOL_KEYS.values()))
    with simulator_thread(config) as sim:
        url = sim.base_url("runbase")
        pool = tmp_path / "pool.toml"
        pool.write_text(
            "".join(
                f'[lanes.{name}]\nprovider = "runbase"\nkey_env = "{env}"\n'
                f'base_url = "{url}"\nrate_limit = "{RATE}"\n'
                for name, env in (("a", "POOL_KEY_A"), ("b", "POOL_KEY_B"))
            )
        )
        # What a pool batch killed mid-create leaves: line 1 made on A, line 2 on B,
        # line 3's create on the wire (its run, on B, is found on B's dashboard).
        keys = (key_a, key_b, key_b)
        runs = [made_on(sim, key, text) for key, text in zip(keys, texts, strict=True)]
        out.mkdir()
        with gi.Journal(out / "journal.jsonl") as journal:
            journal.start(provider="runbase", base_url=url)
            for line, (text, lane) in enumerate(zip(texts, (lane_a, lane_b, None), strict=True), 1):
                request = gi.ImageRequest(text)
                journal.intent(prompt_key(request), line=line, request=request)
                if lane is not None:
                    journal.created(
                        prompt_key(request), runs[line - 1], line=line, provider="runbase",
                        base_url=url, key_fingerprint=lane.partition(":")[2],
                    )  # fmt: skip
        creates = sim.stats.creates

        listed = run_pool("unknown", str(out))
        assert listed.code == 0 and "1 prompt(s)" in listed.stdout, listed.stderr
        assert "--lane LANE, one of" in listed.stdout
        # Written without its lane (a journal of before): the line says so.
        assert "send time" not in listed.stdout and "a lane not recorded" in listed.stdout
        assert f"  {lane_a}" in listed.stdout and f"  {lane_b}" in listed.stdout

        before = (out / "journal.jsonl").read_bytes()
        # No lane, a lane not in the job, --lane with --not-created: usage errors, nothing written.
        line_3 = ["settle", str(out), "3"]
        refused = [
            run_pool(*line_3, runs[2]),
            run_pool(*line_3, runs[2], "--lane", "runbase:0123456789ab"),
            run_pool(*line_3, runs[2], "--lane", "c", "--pool", str(pool)),
            run_pool(*line_3, "--not-created", "--lane", lane_b),
        ]
        assert [done.code for done in refused] == [2, 2, 2, 2], [d.stderr for d in refused]
        assert "add --lane, one of" in refused[0].stderr and lane_b in refused[0].stderr
        assert "'runbase:0123456789ab' is not one of this job's lanes" in refused[1].stderr
        assert "'c' is not one of this job's lanes" in refused[2].stderr
        assert "--not-created" in refused[3].stderr
        assert (out / "journal.jsonl").read_bytes() == before
        assert not any(key in d.stdout + d.stderr for d in refused for key in (key_a, key_b))

        # Named by its label in the pool file: the same lane as its provider:fingerprint.
        done = run_pool("settle", str(out), "3", runs[2], "--lane", "b", "--pool", str(pool))
        assert done.code == 0, done.stderr
        assert f"attaches it through {lane_b}" in done.stdout

        batch = run_pool("batch", str(prompts), "--out", str(out), "--pool", str(pool))
        assert batch.code == 0, batch.stderr
    # Every run attached through its own key; nothing created again, no 404 anywhere.
    assert sim.stats.creates == creates and sim.stats.duplicates == 0
    for key in (key_a, key_b):
        assert sim.stats.key(key).status_counts[404] == 0, key
    manifest = gi.read_manifest(out / "manifest.jsonl")
    assert [e.run_id for e in manifest] == runs
    assert [e.status for e in manifest] == ["succeeded"] * 3
    assert manifest[2].key_fingerprint == lane_b.partition(":")[2]


def test_a_lane_is_named_by_either_fingerprint_length_or_alone() -> None:
    full = gi.Lane("runbase", "sk-settle-a").fingerprint
    lane = f"runbase:{full}"
    assert _names(lane, lane) and _names(f"runbase:{full[:8]}", lane)  # an older manifest's
    assert _names(full, lane) and _names(full[:8], lane)  # the fingerprint alone
    assert not _names(full[:6], lane)  # too short to name one key
    assert not _names(f"apiinone:{full}", lane) and not _names("runbase:0123456789ab", lane)
