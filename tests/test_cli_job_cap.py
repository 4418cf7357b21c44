"""A pool file's ``spend_cap`` is the job's, not one process's (issue 19).

"Rerun the same command" must not buy a second cap's worth: what earlier
runs into the same ``--out`` spent, or may have (runs created and not
finished, creates of unknown fate), comes off the cap. The simulator is a
real HTTP server on 127.0.0.1 serving two keys; the command line runs in
this process (these are about files and money, not signals).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import gptimage_async as gi
from gptimage_async._cli._spend import earlier_spend, spend_lines
from gptimage_async._journal import Journal
from gptimage_async._pool import Pool
from gptimage_async._pool._spend import LaneSpend, SpendSnapshot
from gptimage_async.simulator import Simulator

from .test_cli import prompt_file, simulator_thread
from .test_cli_pool import KEYS, pool_file, run_here, two_keys

# Lane a: 4 a medium image; lane b: 6 (given in the file below).
CAP = 30


def capped_pool(path: Path, sim: Simulator) -> Path:
    pool_file(path, sim, extra=f"spend_cap = {CAP}\n")
    text = path.read_text().replace(
        'key_env = "POOL_KEY_B"', 'key_env = "POOL_KEY_B"\nprices = { medium = 6, high = 15 }'
    )
    path.write_text(text)
    return path


def spent_at_simulator(out: Path) -> float:
    # What the provider charged, by the manifest's rows that have a run (all succeed here).
    return sum(e.cost or 0 for e in gi.read_manifest(out / "manifest.jsonl") if e.run_id)


def test_a_rerun_spends_what_is_left_of_the_jobs_cap_not_a_new_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prompts = prompt_file(tmp_path / "p.txt", 20)
    with simulator_thread(two_keys()) as sim:
        pool = capped_pool(tmp_path / "pool.toml", sim)
        args = ("batch", str(prompts), "--out", str(out), "--pool", str(pool), "--no-state")
        first = run_here(*args, **KEYS)
        assert first.code == 1, first.stderr  # stopped by the cap: prompts left pending
        assert "spend" in first.stdout.lower()
        spent = spent_at_simulator(out)
        assert 0 < spent <= CAP
        creates = sim.stats.creates
        # A prompt the cap refused was never sent: pending for a rerun, not failed.
        statuses = Counter(e.status for e in gi.read_manifest(out / "manifest.jsonl"))
        assert statuses["failed"] == 0 and statuses["pending"] == 20 - statuses["succeeded"]
        assert statuses["pending"] > 0

        second = run_here(*args, **KEYS)
        assert f"earlier runs into it spent {spent:g}" in second.stderr, second.stderr
        # Nothing more fits (each image costs at least 4): not one create more.
        left = CAP - spent
        assert sim.stats.creates - creates <= left // 4
        assert spent_at_simulator(out) <= CAP
        assert sim.stats.duplicates == 0


def test_earlier_spend_counts_paid_and_maybe_paid_runs(tmp_path: Path) -> None:
    a = gi.Lane("runbase", KEYS["POOL_KEY_A"], prices={"medium": 4, "high": 11})
    b = gi.Lane("runbase", KEYS["POOL_KEY_B"], prices={"medium": 6, "high": 15})
    pool = Pool([a, b], spend_cap=100)
    medium, high = gi.ImageRequest("a lamp"), gi.ImageRequest("an owl", quality="high")
    with Journal(tmp_path / "journal.jsonl") as journal:
        journal.start(provider="runbase", base_url="http://127.0.0.1:1/v1")
        # A run created through b, not finished: paid, at b's medium price.
        journal.intent("k1", line=1, request=medium, lane=f"runbase:{b.fingerprint}")
        journal.created("k1", "run-1", line=1, provider="runbase", key_fingerprint=b.fingerprint)
        # A create of unknown fate through a: maybe paid, at a's high price.
        journal.intent("k2", line=2, request=high, lane=f"runbase:{a.fingerprint}")
        # A create of unknown fate through a lane no longer in the pool: the dearest's price.
        journal.intent("k3", line=3, request=high, lane="runbase:0123456789ab")
        # Withdrawn (never sent): nothing.
        journal.intent("k4", line=4, request=medium, lane=f"runbase:{a.fingerprint}")
        journal.withdrawn("k4", line=4)
    assert earlier_spend(Journal.read(tmp_path / "journal.jsonl"), pool) == 6 + 11 + 15


def test_a_lane_without_prices_is_not_given_the_pools_unit() -> None:
    priced = LaneSpend("a", "aaaa", 3, 0, 0, 0, 12.0, 0.0, "credits")
    unpriced = LaneSpend("b", "bbbb", 0, 0, 0, 1, 0.0, None, None)
    spend = SpendSnapshot((priced, unpriced), 12.0, 0.0, None, None, (("credits", 12.0, 0.0),))
    lines = spend_lines(spend, {"aaaa": "runbase", "bbbb": "runbase"}, "credits")
    assert any(line.startswith("  a (runbase:aaaa): 12 credits for 3 run(s)") for line in lines)
    [b] = [line for line in lines if line.startswith("  b ")]
    assert "credits" not in b and ": 0 for 0 run(s)" in b, b
