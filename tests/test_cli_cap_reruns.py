"""A rerun's words are true: what its dry run would send, a cap spent, runs re-attached.

Findings of the fresh-user tester: after earlier runs spent the job's whole
cap, ``--dry-run`` still counted every prompt left as "would be sent", and
the real rerun opened a session only to stop at once, saying "cap of 0
(spent 0, reserved 0)" with no ``spend:`` line; an interrupted
``--provider simulator`` batch promised that a rerun would attach its runs in
flight, and the rerun counted as "re-attached" runs the new simulator had
never heard of. The simulator is a real HTTP server on 127.0.0.1 (in a
thread; the command line runs in this process, ``run_main``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from .test_cli import RATE, journal_records, prompt_file, run_main, simulator_thread
from .test_cli_pool import KEYS, run_here, two_keys


def _pool(path: Path, url: str, *, cap: float) -> Path:
    path.write_text(
        f"spend_cap = {cap}\n"
        f'[lanes.a]\nprovider = "runbase"\nkey_env = "POOL_KEY_A"\nbase_url = "{url}"\n'
        f'rate_limit = "{RATE}"\nprices = {{ medium = 4, high = 12 }}\n'
    )
    return path


def _first_line(stdout: str, start: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(start))


def test_a_reruns_dry_run_counts_what_the_jobs_cap_leaves(tmp_path: Path) -> None:
    out, prompts = tmp_path / "out", prompt_file(tmp_path / "p.txt", 12)
    with simulator_thread(two_keys()) as sim:
        pool = _pool(tmp_path / "pool.toml", sim.base_url("runbase"), cap=12)
        args = ("batch", str(prompts), "--out", str(out), "--pool", str(pool), "--no-state")
        first = run_here(*args, **KEYS)
        assert first.code == 1 and sim.stats.creates == 3, first.stdout  # 3 runs at 4
        # The job's cap raised to 20: 12 spent, 8 left, two more runs at 4.
        _pool(tmp_path / "pool.toml", sim.base_url("runbase"), cap=20)
        dry = run_here(*args, "--dry-run", **KEYS)
        assert dry.code == 0, dry.stderr
        assert _first_line(dry.stdout, "dry run:").startswith("dry run: 2 of 12 prompts would be")
        assert "7 past the spend cap (8 left for this run)" in dry.stdout
        assert "  a (runbase:" in dry.stdout and ": 8 price units" in dry.stdout
        assert sim.stats.creates == 3  # the dry run sent nothing
        real = run_here(*args, **KEYS)
        # What the dry run said is what the real run sent.
        assert sim.stats.creates == 5, real.stdout
        assert "this run: 2 creates sent" in real.stdout


def test_a_rerun_with_the_jobs_cap_spent_sends_nothing_and_says_so(tmp_path: Path) -> None:
    out, prompts = tmp_path / "out", prompt_file(tmp_path / "p.txt", 12)
    with simulator_thread(two_keys()) as sim:
        pool = _pool(tmp_path / "pool.toml", sim.base_url("runbase"), cap=12)
        args = ("batch", str(prompts), "--out", str(out), "--pool", str(pool), "--no-state")
        assert run_here(*args, **KEYS).code == 1 and sim.stats.creates == 3
        requests = sim.stats.requests
        dry = run_here(*args, "--dry-run", **KEYS)
        assert _first_line(dry.stdout, "dry run:").startswith("dry run: 0 of 12 prompts would be")
        assert "9 past the spend cap (0 left for this run)" in dry.stdout
        again = run_here(*args, **KEYS)
        assert sim.stats.requests == requests  # refused before anything was sent
    assert again.code == 1, again.stderr  # as a batch stopped on the cap
    assert "12 prompts: 3 already done, 9 pending (none sent)" in again.stdout
    assert (
        "spend: 0 in this run (cap 12 for the job: 12 spent by earlier runs into "
        f"{out}, 0 left for this run)"
    ) in again.stdout
    assert "stopped before sending: nothing would be sent: the job's spend cap of 12 " in (
        again.stdout
    )
    assert "cap of 0 (spent 0, reserved 0)" not in again.stdout


def _interrupt_once_a_run_is_created(out: Path, done: threading.Event) -> None:
    # The batch runs in this process: SIGINT goes to its loop's handler (a Ctrl-C).
    deadline = time.monotonic() + 30
    while not done.is_set() and time.monotonic() < deadline:
        if any(record["record"] == "created" for record in journal_records(out)):
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.005)


def test_a_simulator_batch_interrupted_says_its_runs_end_with_it(tmp_path: Path) -> None:
    out, prompts = tmp_path / "out", prompt_file(tmp_path / "p.txt", 6)
    args = ("batch", str(prompts), "--out", str(out), "--provider", "simulator")
    done = threading.Event()
    watcher = threading.Thread(target=_interrupt_once_a_run_is_created, args=(out, done))
    watcher.start()
    try:
        # Runs of 3-10 provider seconds take 0.3-1 s: some are in flight at the interrupt.
        first = run_main(*args, "--time-scale", "0.1", key=None)
    finally:
        done.set()
        watcher.join()
    assert first.code == 130, first.stderr
    left = _first_line(first.stderr, "interrupted: ")
    assert "lost with this simulator" in left and "the rerun attaches them" not in left
    in_flight = int(left.split(" run(s) left in flight")[0].rsplit(" ", 1)[1])
    assert in_flight > 0, left
    again = run_main(*args, "--time-scale", "0.01", key=None)
    # A new simulator: its runs are not there to attach (404), so none is "re-attached".
    assert ", 0 earlier runs re-attached" in again.stdout, again.stdout
    assert f"{in_flight} failed" in again.stdout, again.stdout
