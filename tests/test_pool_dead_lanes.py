"""A batch whose only lane (or every lane) cannot connect ends within seconds, saying why.

A lane whose creates could not connect ``UNREACHABLE_AFTER`` times in a row is
unreachable while it cools (``_pool._failover``). A pool of several then ends
each create at once with ``PoolExhaustedError``; a session of one lane (a pool
file of one, or one key) skipped the routing and sent its creates back to the
dead lane, each waiting out ``run_timeout``. Here a dead loopback port: a
refused connect is a certain failure (the create was never written).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from .test_cli import prompt_file, run_main

#: Far below the old behaviour (creates waited out run_timeout, 8 s here, in waves).
QUICK = 5.0


def _dead_root() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    return f"http://127.0.0.1:{port}/runbase/api/v1"


def _dead_pool(path: Path, lanes: int) -> tuple[Path, dict[str, str]]:
    root = _dead_root()
    path.write_text(
        "spend_cap = 100\n"
        + "".join(
            f'[lanes.dead{i}]\nprovider = "runbase"\nkey_env = "DEAD_{i}"\nbase_url = "{root}"\n'
            f'rate_limit = "20/1"\nprices = {{ medium = 10, high = 28 }}\n'
            for i in range(lanes)
        )
    )
    return path, {f"DEAD_{i}": f"sk-dead-lane-{i}" for i in range(lanes)}


def _ended_quickly_sending_nothing(done_out: str, elapsed: float) -> None:
    assert elapsed < QUICK, f"{elapsed:.1f}s: {done_out}"
    assert "20 prompts: 0 succeeded" in done_out
    assert "stopped early: " in done_out
    # Refused connects never left: nothing of unknown fate, nothing maybe paid, no spend.
    assert "unknown fate" not in done_out and "maybe paid" not in done_out
    assert "spend:" not in done_out
    assert "RunTimeoutError" not in done_out and "run_timeout" not in done_out
    assert "sk-dead" not in done_out


@pytest.mark.parametrize("lanes", [1, 3])
def test_a_pool_whose_lanes_cannot_connect_ends_within_seconds(tmp_path: Path, lanes: int) -> None:
    pool, env = _dead_pool(tmp_path / "dead.toml", lanes)
    prompts = prompt_file(tmp_path / "p20.txt", 20)
    began = time.monotonic()
    done = run_main(
        "batch", str(prompts), "--out", str(tmp_path / "odd"), "--pool", str(pool),
        "--progress", "log", "--request-timeout", "2", "--run-timeout", "8", "--no-state",
        key=None, env=env,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.code == 1, out
    _ended_quickly_sending_nothing(out, time.monotonic() - began)
    if lanes == 1:
        # The one lane's own error, as a session of one key reports it.
        assert "stopped early: no lane can be connected to: " in out
    else:
        assert "stopped early: no lane of the pool can take it (dead0 (" in out


def test_one_key_at_an_address_that_cannot_connect_ends_within_seconds(tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path / "p20.txt", 20)
    began = time.monotonic()
    done = run_main(
        "batch", str(prompts), "--out", str(tmp_path / "odd"), "--base-url", _dead_root(),
        "--rate-limit", "20/1", "--progress", "log", "--run-timeout", "8", "--no-state",
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.code == 1, out
    _ended_quickly_sending_nothing(out, time.monotonic() - began)
    assert "stopped early: no lane can be connected to: " in out
