"""``gptimage-async batch/generate --pool POOL.toml``: several keys from a pool file (issue 19).

The command line (in this process, ``run_main``; a real process where one is
killed) against the simulator (a real HTTP server on 127.0.0.1) serving two
keys, each an account of its own: a run id is known only to the key that
created it.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import gptimage_async as gi
from gptimage_async._cli import state_file
from gptimage_async._cli._sessions import pool_state_file
from gptimage_async._pool import Pool, lane_state_file
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_cli import (
    RATE,
    Done,
    journal_records,
    kill_a_batch,
    prompt_file,
    run_main,
    simulator_thread,
)

KEY_A, KEY_B = "sk-pool-a", "sk-pool-b"
LANE_A = f"runbase:{gi.Lane('runbase', KEY_A).fingerprint}"
LANE_B = f"runbase:{gi.Lane('runbase', KEY_B).fingerprint}"


def pool_file(path: Path, sim: Simulator, *, lanes: str = "ab", extra: str = "") -> Path:
    url = sim.base_url("runbase")
    tables = {
        "a": f'[lanes.a]\nprovider = "runbase"\nkey_env = "POOL_KEY_A"\nbase_url = "{url}"\n'
        f'rate_limit = "{RATE}"\nprices = {{ medium = 4, high = 11 }}\n',
        "b": f'[lanes.b]\nprovider = "runbase"\nkey_env = "POOL_KEY_B"\nbase_url = "{url}"\n'
        f'rate_limit = "{RATE}"\n',
    }
    path.write_text(extra + "\n" + "\n".join(tables[name] for name in lanes))
    return path


def run_here(*args: str, **env: str) -> Done:
    """The command line in this process (``run_main``), with the given key variables."""
    return run_main(*args, key=None, env=env)


KEYS = {"POOL_KEY_A": KEY_A, "POOL_KEY_B": KEY_B}


def two_keys(**overrides: object) -> SimulatorConfig:
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=19)
    return config.replace(api_keys=frozenset({KEY_A, KEY_B}), **overrides)


def test_pool_with_single_key_options_is_a_usage_error(tmp_path: Path) -> None:
    with simulator_thread(two_keys()) as sim:
        pool = pool_file(tmp_path / "pool.toml", sim)
        prompts = prompt_file(tmp_path / "p.txt", 2)
        for option in (
            ["--provider", "runbase"],
            ["--base-url", sim.base_url("runbase")],
            ["--rate-limit", "20/10"],
        ):
            done = run_here(
                "batch", str(prompts), "--out", str(tmp_path / "o"), "--pool", str(pool),
                *option, **KEYS,
            )  # fmt: skip
            assert done.code == 2, done.stderr
            assert f"--pool cannot be used with {option[0]}" in done.stderr
        gen = run_here("generate", "a lamp", "--pool", str(pool), "--provider", "runbase", **KEYS)
        assert gen.code == 2 and "--pool cannot be used with --provider" in gen.stderr
        # A lane whose variable is unset: named, with the file and lane, exit 2.
        unset = run_here("generate", "a lamp", "--pool", str(pool), POOL_KEY_A=KEY_A)
        assert unset.code == 2
        assert "lane 'b'" in unset.stderr and "POOL_KEY_B is not set" in unset.stderr
        assert KEY_A not in unset.stderr
    assert sim.stats.requests == 0


def test_a_pool_batch_uses_both_keys_and_prints_the_spend(tmp_path: Path) -> None:
    with simulator_thread(two_keys()) as sim:
        pool = pool_file(tmp_path / "pool.toml", sim, extra='routing = "earliest"')
        prompts = prompt_file(tmp_path / "p.txt", 30)
        out = tmp_path / "out"
        done = run_here("batch", str(prompts), "--out", str(out), "--pool", str(pool), **KEYS)
        assert done.code == 0, done.stderr
        assert sim.stats.duplicates == 0
        gen = run_here("generate", "a lamp", "--n", "2", "--pool", str(pool), **KEYS)
        assert gen.code == 0, gen.stderr
        assert sim.stats.runs_per_prompt["a lamp"] == 2  # generate --n 2 over the pool
    manifest = gi.read_manifest(out / "manifest.jsonl")
    fingerprints = collections.Counter(e.key_fingerprint for e in manifest)
    assert set(fingerprints) == {LANE_A.split(":")[1], LANE_B.split(":")[1]}, fingerprints
    assert all(e.provider == "runbase" for e in manifest)
    on_a = fingerprints[LANE_A.split(":")[1]]
    lines = done.stdout.splitlines()
    # Lane a has a price (4 a medium image), lane b none: the total is unknown.
    assert "spend: unknown in all" in lines
    assert f"  a ({LANE_A}): {on_a * 4} price units for {on_a} run(s)" in lines
    # Each manifest line costs its own lane's price: a's 4 (the user's unit); b has none.
    for e in manifest:
        on_lane_a = e.key_fingerprint == LANE_A.split(":")[1]
        assert (e.cost, e.cost_unit) == ((4, "price units") if on_lane_a else (None, None)), e
    assert any(line.startswith(f"  b ({LANE_B}): unknown for ") for line in lines)
    assert KEY_A not in done.stdout + done.stderr and KEY_B not in done.stdout + done.stderr


def test_dry_run_over_a_pool_says_the_most_each_lane_would_cost(tmp_path: Path) -> None:
    with simulator_thread(two_keys()) as sim:
        pool = pool_file(tmp_path / "pool.toml", sim)
        capped = pool_file(tmp_path / "capped.toml", sim, lanes="a", extra="spend_cap = 100")
        prompts = tmp_path / "p.jsonl"
        prompts.write_text('{"prompt": "a"}\n{"prompt": "b", "quality": "high"}\n{"prompt": "c"}\n')
        out = tmp_path / "out"
        done = run_here(
            "batch", str(prompts), "--out", str(out), "--pool", str(pool), "--dry-run", **KEYS
        )
        cap = run_here(
            "batch", str(prompts), "--out", str(out), "--pool", str(capped), "--dry-run", **KEYS
        )
    assert done.code == 0, done.stderr
    assert cap.code == 0, cap.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "dry run: 3 of 3 prompts would be sent to a pool of 2 lane(s), routing earliest; "
        "nothing was sent"
    )
    # 2 medium at 4, 1 high at 11: prices the user gave, in their own unit
    assert f"  a ({LANE_A}): 19 price units" in lines
    assert f"  b ({LANE_B}): unknown (no price given)" in lines
    assert "spend cap" not in done.stdout
    assert (
        "spend cap: 100 price units (no create goes out that could pass it)"
        in cap.stdout.splitlines()
    )
    assert sim.stats.requests == 0


def test_a_rerun_with_another_key_never_creates_the_first_keys_runs_again(
    tmp_path: Path,
) -> None:
    # The user's report: a batch on key A stopped part-way, rerun with key B only,
    # turned A's runs into RunNotFoundError and created them again (9 paid twice).
    # The killed batch is a real process; the reruns run in this process (run_here).
    n = 40
    with simulator_thread(two_keys(time_scale=0.03)) as sim:
        url = sim.base_url("runbase")
        prompts = prompt_file(tmp_path / "p.txt", n)
        out = tmp_path / "out"
        single = ["batch", str(prompts), "--out", str(out), "--provider", "runbase"]
        single += ["--base-url", url, "--rate-limit", RATE]
        asyncio.run(kill_a_batch(single, out, after=5, key=KEY_A))
        state: dict[str, str] = {}
        for record in journal_records(out):
            if record["record"] in ("intent", "created"):
                state[str(record["key"])] = str(record["record"])
            elif record["record"] == "finished":
                entry = record["entry"]
                assert isinstance(entry, dict)
                state[str(entry["key"])] = "finished"
        on_a = collections.Counter(state.values())["created"]
        # Creates on the wire at the kill stay of unknown fate: never sent again.
        unknown = collections.Counter(state.values())["intent"]
        assert on_a > 0, "no run of key A was in flight at the stop"
        creates_before = sim.stats.creates

        # Rerun with key B only: A's runs are reported and left alone, never created again.
        with_b = run_here(*single, RUNBASE_API_KEY=KEY_B)
        assert sim.stats.duplicates == 0
        notice = f"{LANE_A} is not in this job's lanes: its {on_a} run(s) are left alone"
        assert notice in with_b.stderr, with_b.stderr
        assert "add that key back to resume them" in with_b.stderr
        assert notice in with_b.stdout  # and again in the summary at the end
        assert with_b.code == 1  # those prompts are not done
        assert "RunNotFoundError" not in with_b.stdout + with_b.stderr
        manifest = {e.key: e for e in gi.read_manifest(out / "manifest.jsonl")}
        left = [e for e in manifest.values() if e.status == "pending"]
        assert len(left) == on_a and all(LANE_A in (e.error or "") for e in left)
        sent_by_b = sim.stats.creates - creates_before

        # The dry run says the same, before anything is sent.
        dry = run_here(*single, "--dry-run", RUNBASE_API_KEY=KEY_B)
        assert dry.code == 0 and notice in dry.stdout, dry.stdout

        # Rerun with A and B: A's runs are resumed through A, nothing is created.
        pool = pool_file(tmp_path / "pool.toml", sim)
        both = run_here("batch", str(prompts), "--out", str(out), "--pool", str(pool), **KEYS)
        assert both.code == (1 if unknown else 0), both.stderr
        assert f"this run: 0 creates sent, {on_a} earlier runs re-attached" in both.stdout
        assert "is not in this job's lanes" not in both.stderr
    assert sim.stats.duplicates == 0
    assert sim.stats.creates == creates_before + sent_by_b
    final = {e.key: e for e in gi.read_manifest(out / "manifest.jsonl")}
    assert len(final) == n
    for entry in left:
        resumed = final[entry.key]
        assert resumed.status == "succeeded" and resumed.run_id == entry.run_id
        assert resumed.key_fingerprint == LANE_A.split(":")[1]


def test_the_state_file_is_one_per_key(tmp_path: Path) -> None:
    a = gi.Lane("runbase", KEY_A)
    b = gi.Lane("runbase", KEY_B)
    assert state_file("runbase", None, a.fingerprint) != state_file("runbase", None, b.fingerprint)
    assert a.fingerprint in state_file("runbase", None, a.fingerprint).name
    assert KEY_A not in str(state_file("runbase", None, a.fingerprint))
    assert pool_state_file(Pool([a])) == state_file("runbase", a.base_url, a.fingerprint)
    # In a pool of several, the session makes pool.json into one file per key.
    assert pool_state_file(Pool([a, b])).name == "pool.json"


def test_each_key_learns_into_a_state_file_of_its_own(tmp_path: Path) -> None:
    # Issue 19: a slow rate learned on one key slowed the next job on another.
    cache = tmp_path / "cache"
    with simulator_thread(two_keys()) as sim:
        url = sim.base_url("runbase")
        prompts = prompt_file(tmp_path / "p.txt", 3)
        args = ["batch", str(prompts), "--provider", "runbase"]
        args += ["--base-url", sim.base_url("runbase"), "--rate-limit", RATE]
        for key, out in ((KEY_A, "a"), (KEY_B, "b")):
            done = run_here(
                *args, "--out", str(tmp_path / out), RUNBASE_API_KEY=key,
                XDG_CACHE_HOME=str(cache),
            )  # fmt: skip
            assert done.code == 0, done.stderr
        pool = pool_file(tmp_path / "pool.toml", sim)
        both = run_here(
            "batch", str(prompts), "--out", str(tmp_path / "ab"), "--pool", str(pool),
            XDG_CACHE_HOME=str(cache), **KEYS,
        )  # fmt: skip
        assert both.code == 0, both.stderr
    names = sorted(p.name for p in (cache / "gptimage-async" / "state").iterdir())
    a, b = gi.Lane("runbase", KEY_A).fingerprint, gi.Lane("runbase", KEY_B).fingerprint
    assert state_file("runbase", url, a).name in names
    assert state_file("runbase", url, b).name in names
    lanes = [gi.Lane("runbase", key, base_url=url) for key in (KEY_A, KEY_B)]
    for lane in lanes:  # one file per lane, keyed by provider, key and base URL
        assert lane_state_file(Path("pool.json"), lane).name in names
    assert not any(KEY_A in name or KEY_B in name for name in names)


def test_generate_prints_the_spend_per_lane_and_in_all(tmp_path: Path) -> None:
    with simulator_thread(two_keys()) as sim:
        priced = pool_file(tmp_path / "a.toml", sim, lanes="a")
        done = run_here("generate", "a lamp", "--n", "3", "--pool", str(priced), **KEYS)
        both = run_here("generate", "a chair", "--n", "4", "--pool", str(pool_file(
            tmp_path / "ab.toml", sim)), **KEYS)  # fmt: skip
    assert done.code == 0 and both.code == 0, done.stderr + both.stderr
    # Standard output is the URLs, one a line, for scripts; the spend goes to stderr.
    assert len(done.stdout.splitlines()) == 3
    assert all(line.startswith("http") for line in done.stdout.splitlines())
    lines = done.stderr.splitlines()
    assert "spend: 12 price units in all" in lines  # 3 medium images at 4
    assert f"  a ({LANE_A}): 12 price units for 3 run(s)" in lines
    # Over both lanes: lane b has no price, so the total is unknown; each lane its line.
    lines = both.stderr.splitlines()
    on_a = [line for line in lines if line.startswith(f"  a ({LANE_A}): ")]
    on_b = [line for line in lines if line.startswith(f"  b ({LANE_B}): ")]
    assert len(on_a) == len(on_b) == 1
    runs_a, runs_b = (int(line.split(" for ")[1].split()[0]) for line in (*on_a, *on_b))
    assert runs_a + runs_b == 4
    assert on_a == [f"  a ({LANE_A}): {4 * runs_a} price units for {runs_a} run(s)"]
    assert (
        "spend: unknown in all" if runs_b else f"spend: {4 * runs_a} price units in all"
    ) in lines
    assert KEY_A not in done.stderr + both.stderr and KEY_B not in done.stderr + both.stderr
