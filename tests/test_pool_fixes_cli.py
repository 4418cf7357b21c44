"""A batch on a pool whose lanes cannot connect: the command line, a dead loopback port."""

from __future__ import annotations

import socket
from pathlib import Path

from .test_cli import prompt_file, run_main


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_batch_on_lanes_that_cannot_connect_sends_nothing_and_says_why(tmp_path: Path) -> None:
    root = f"http://127.0.0.1:{_dead_port()}"
    pool = tmp_path / "dead.toml"
    pool.write_text(
        "".join(
            f'[lanes.{name}]\nprovider = "runbase"\nkey_env = "DEAD_{name.upper()}"\n'
            f'base_url = "{root}/runbase/api/v1"\nrate_limit = "20/1"\n'
            for name in ("a", "b")
        )
    )
    prompts = prompt_file(tmp_path / "p.txt", 6)
    # In this process (run_main): about what the batch says and sends, not a process.
    done = run_main(
        "batch", str(prompts), "--out", str(tmp_path / "out"), "--pool", str(pool),
        key=None, env={"DEAD_A": "sk-dead-cli-a", "DEAD_B": "sk-dead-cli-b"},
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.code != 0, out
    assert "6 prompts: 0 succeeded" in out
    # No prompt can escape it: the batch stops at once, naming each lane and why.
    assert "stopped early: no lane of the pool can take it (a (" in out
    assert "every lane of the pool is closed" not in out  # connection failures cool, not close
    # Refused connects never left: nothing is of unknown fate, nothing maybe paid.
    assert "unknown fate" not in out and "maybe paid" not in out
    assert "spend:" not in out  # no run, nothing reserved
    assert "sk-dead-cli" not in out
