"""The batch summary's words are true: the cap the user set, and only creates that left.

Two findings of the fresh-user tester (issue 19, left open): a rerun's
summary said ``(cap N)`` with N the cap *left* for that run, not the one the
pool file sets; and a create that went to a dead lane (it could not connect,
so it never left) and was then withdrawn (the cap refused it on the next
lane, or the batch stopped) was still counted in "creates sent". The
simulator is a real HTTP server on 127.0.0.1; a dead lane is a closed port.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import gptimage_async as gi
from gptimage_async.simulator import Simulator

from .test_cli import RATE, prompt_file, simulator_thread
from .test_cli_pool import KEYS, run_here, two_keys


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pool(path: Path, *, cap: float, lanes: list[tuple[str, str, str, int]]) -> Path:
    # lanes: (label, key variable, base URL, medium price)
    tables = "".join(
        f'[lanes.{label}]\nprovider = "runbase"\nkey_env = "{env}"\nbase_url = "{url}"\n'
        f'rate_limit = "{RATE}"\nprices = {{ medium = {price}, high = {price * 3} }}\n'
        for label, env, url, price in lanes
    )
    path.write_text(f"spend_cap = {cap}\n{tables}")
    return path


def _live(sim: Simulator) -> list[tuple[str, str, str, int]]:
    url = sim.base_url("runbase")
    return [("a", "POOL_KEY_A", url, 4), ("b", "POOL_KEY_B", url, 4)]


def test_a_reruns_summary_names_the_cap_the_user_set(tmp_path: Path) -> None:
    out, prompts = tmp_path / "out", prompt_file(tmp_path / "p.txt", 8)

    def spend_line(stdout: str) -> str:
        [total] = [line for line in stdout.splitlines() if line.startswith("spend:")]
        return total

    with simulator_thread(two_keys()) as sim:
        pool = _pool(tmp_path / "pool.toml", cap=20, lanes=_live(sim))
        args = ("batch", str(prompts), "--out", str(out), "--pool", str(pool), "--no-state")
        first = run_here(*args, **KEYS)
        assert (
            first.code == 1 and spend_line(first.stdout) == "spend: 20 price units in all (cap 20)"
        )
        # The user raises the job's cap to 24 and reruns: 20 were spent, 4 are left.
        _pool(tmp_path / "pool.toml", cap=24, lanes=_live(sim))
        second = run_here(*args, **KEYS)
        assert second.code == 1, second.stderr
        assert spend_line(second.stdout) == (
            "spend: 4 price units in this run "
            "(cap 24 for the job: 20 spent by earlier runs, 4 left for this run)"
        )
        # The refusal names this run's cap (4): the next line says whose it is.
        assert "past the cap of 4 " in second.stdout
        assert (
            f"(this run's cap, 4, is what earlier runs into {out} left of the job's cap of 24: "
            "they spent 20)"
        ) in second.stdout
        _pool(tmp_path / "pool.toml", cap=40, lanes=_live(sim))
        third = run_here(*args, **KEYS)
    assert third.code == 0, third.stderr
    assert spend_line(third.stdout) == (
        "spend: 8 price units in this run "
        "(cap 40 for the job: 24 spent by earlier runs, 16 left for this run)"
    )
    assert "(cap 16)" not in third.stdout and "(cap 4)" not in second.stdout


def test_creates_that_never_left_a_dead_lane_are_not_counted_as_sent(tmp_path: Path) -> None:
    # The dead lane is cheaper, so each create goes there first; it cannot connect, so
    # the create moves to the live lane, whose price the cap (3) refuses: withdrawn.
    out, prompts = tmp_path / "out", prompt_file(tmp_path / "p.txt", 6)
    with simulator_thread(two_keys()) as sim:
        dead = f"http://127.0.0.1:{_closed_port()}/v1"
        lanes = [
            ("dead", "POOL_KEY_A", dead, 1),
            ("live", "POOL_KEY_B", sim.base_url("runbase"), 5),
        ]
        pool = _pool(tmp_path / "pool.toml", cap=3, lanes=lanes)
        done = run_here(
            "batch", str(prompts), "--out", str(out), "--pool", str(pool), "--no-state", **KEYS
        )
        creates = sim.stats.creates
    assert done.code == 1 and "could take the spend past the cap" in done.stdout, done.stdout
    assert creates == 0
    assert "creates sent" not in done.stdout, done.stdout
    assert "6 prompts: 0 succeeded, 6 pending" in done.stdout


async def test_a_create_withdrawn_by_a_stop_after_a_refused_connect_is_not_sent(
    tmp_path: Path,
) -> None:
    # One lane that cannot be reached: the first attempt is refused at connect; the batch
    # stops while the creator waits to try again, so the create is withdrawn, never sent.
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    journal = tmp_path / "journal.jsonl"

    def intents() -> int:
        lines = journal.read_text().splitlines() if journal.exists() else []
        return sum(json.loads(line).get("record") == "intent" for line in lines if line)

    async with gi.Session(
        "runbase", api_key="sk-dead-lane-000", base_url=dead, remember=False
    ) as session:
        job = gi.Batch(session, ["a lamp"], tmp_path, download=False, gallery=False)
        running = asyncio.create_task(job.run())
        for _ in range(2000):
            if intents():
                break
            await asyncio.sleep(0.001)
        job.stop()
        report = await running
    assert intents() >= 1  # it was about to go on the wire (on_send), then could not connect
    assert report.submitted == 0, report
    assert [e.status for e in report.entries] == ["pending"]


def test_creates_refused_by_a_lane_and_then_withdrawn_are_counted_refused(tmp_path: Path) -> None:
    # Lane "closed" answers 401 (its key is unknown): each create sent there was answered
    # and made no run; it moves to lane "dear", which the cap refuses: withdrawn.
    out, prompts = tmp_path / "out", prompt_file(tmp_path / "p.txt", 6)
    with simulator_thread(two_keys()) as sim:
        url = sim.base_url("runbase")
        lanes = [("closed", "WRONG_KEY", url, 1), ("dear", "POOL_KEY_B", url, 5)]
        pool = _pool(tmp_path / "pool.toml", cap=3, lanes=lanes)
        keys = {**KEYS, "WRONG_KEY": "sk-not-an-account-000"}
        done = run_here(
            "batch", str(prompts), "--out", str(out), "--pool", str(pool), "--no-state", **keys
        )
        creates = sim.stats.creates
    assert done.code == 1 and creates == 0, done.stdout
    [line] = [line for line in done.stdout.splitlines() if line.startswith("this run:")]
    sent = int(line.split()[2])
    assert sent >= 1 and f"{sent} creates sent ({sent} refused: no run made)" in line, line
