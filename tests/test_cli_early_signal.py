"""A Ctrl-C that comes while a command starts is not lost, even where the shell ignores SIGINT.

A script's background job (``cmd &``) starts with SIGINT ignored. The command
used to take signals only once its batch was set up: one sent while it
started was dropped, and the next was taken as the first (waiting for every
create on the wire: "the second Ctrl-C hangs"). Real processes, real signals,
a real simulator holding every answer 3 s.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from gptimage_async.simulator import Faults, Simulator, SimulatorConfig

from .test_cli import KEY, RATE, command, environment, prompt_file
from .test_cli_signals import key_states

HELD = SimulatorConfig(
    time_scale=1.0, rate_limit=None, seed=9, faults=Faults(slow=1.0, slow_seconds=3.0)
)


def ignore_sigint() -> None:
    # What a non-interactive shell does for `cmd &`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def test_a_ctrl_c_while_the_batch_starts_is_not_lost(tmp_path: Path) -> None:
    async with Simulator(HELD) as sim:
        out = tmp_path / "out"
        args = ["batch", str(prompt_file(tmp_path / "p.txt", 12)), "--out", str(out), "-v"]
        args += ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        proc = await asyncio.create_subprocess_exec(
            *command(*args, "--rate-limit", RATE, "--progress", "log"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment(RUNBASE_API_KEY=KEY),
            preexec_fn=ignore_sigint,
        )
        assert proc.stderr is not None
        seen = b""
        # The event loop has started: the command is setting up, not yet sending.
        while b"using selector" not in seen.lower():
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, seen
            seen += line
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
        took = time.monotonic() - signalled
        stderr = (seen + rest).decode()
    assert proc.returncode == 130, stderr
    # Stopped at once, or (if the batch had begun) once the creates on the wire were answered.
    assert took < 10, f"took {took:.1f}s"
    states = key_states(out) if (out / "journal.jsonl").exists() else {}
    assert sum(states.values()) < 12, states  # not run to the end
    assert states.get("intent", 0) == 0, states  # whatever was sent was answered and journaled
    assert sim.stats.creates < 12
