"""A batch on a pool whose lanes cannot connect: a real CLI process, a dead loopback port."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from .test_cli import command, environment, prompt_file


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
    done = subprocess.run(
        command("batch", str(prompts), "--out", str(tmp_path / "out"), "--pool", str(pool)),
        env=environment(DEAD_A="sk-dead-cli-a", DEAD_B="sk-dead-cli-b"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "6 prompts: 0 succeeded" in out
    # No prompt can escape it: the batch stops at once, naming each lane and why.
    assert "stopped early: no lane of the pool can take it (a (" in out
    assert "every lane of the pool is closed" not in out  # connection failures cool, not close
    # Refused connects never left: nothing is of unknown fate, nothing maybe paid.
    assert "unknown fate" not in out and "maybe paid" not in out
    assert "spend:" not in out  # no run, nothing reserved
    assert "sk-dead-cli" not in out
