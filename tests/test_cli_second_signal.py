"""A second Ctrl-C quits at once; a third does nothing worse; SIGHUP is SIGTERM.

Real ``gptimage-async`` processes and real signals, against a simulator that
holds every answer for 30 s, so creates sit on the wire when the signals come.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import termios
import time
from pathlib import Path

import pytest

from gptimage_async.simulator import Faults, Simulator, SimulatorConfig

from .test_cli import KEY, RATE, command, environment, prompt_file, run_main
from .test_cli_signals import key_states, start
from .test_sync_signals import until as until_sim


def kill(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Send ``sig`` to a child that may have just exited; never reap it here.

    ``Process.send_signal`` polls the child first (``Popen.poll``), and a poll of
    one that exited reaps it under asyncio's child watcher, which then reports
    exit code 255 ("Unknown child process"): the exit code the test checks.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)


#: Every answer held 30 s: creates stay on the wire until the signals.
SLOW = SimulatorConfig(
    time_scale=1.0, rate_limit=None, seed=9, faults=Faults(slow=1.0, slow_seconds=30.0)
)
NOISE = ("Unclosed client session", "Traceback", "Task was destroyed", "Unclosed connector")


async def read_until(proc: asyncio.subprocess.Process, word: bytes) -> bytes:
    assert proc.stderr is not None
    seen = b""
    while word not in seen.lower():
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        if not line:
            break
        seen += line
    return seen


# 2: the second signal quits; 5: three more reach a process already quitting (or gone),
# which covers what 3 (one more) would.
@pytest.mark.parametrize("signals", [2, 5])
async def test_a_second_signal_quits_a_batch_at_once(tmp_path: Path, signals: int) -> None:
    async with Simulator(SLOW) as sim:
        prompts = prompt_file(tmp_path / "p.txt", 12)
        out = tmp_path / "out"
        args = ["batch", str(prompts), "--out", str(out), "--progress", "log"]
        args += ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        proc = await start(*args, "--rate-limit", RATE)
        await until_sim(lambda: key_states(out)["intent"] >= 4, proc, sim=sim)
        sent = key_states(out)["intent"]  # creates on the wire (the simulator holds them)
        proc.send_signal(signal.SIGINT)
        first = await read_until(proc, b"interrupt")
        signalled = time.monotonic()
        # Back to back: the later ones reach a process that is quitting, or gone.
        for _ in range(signals - 1):
            kill(proc, signal.SIGINT)
        _, rest = await asyncio.wait_for(proc.communicate(), 10)
        took = time.monotonic() - signalled
        stderr = (first + rest).decode()
        assert proc.returncode == 130, stderr
        assert took < 3, f"the second Ctrl-C took {took:.1f}s to quit"
        assert "interrupted at once" in stderr and "unknown" in stderr
        for noise in NOISE:
            assert noise not in stderr, stderr

        # The creates on the wire are in the journal with an unknown fate: listed, not resent.
        states = key_states(out)
        assert states["intent"] == sent and sum(states.values()) == sent, states
        listed = run_main("unknown", str(out))  # reads the journal: no process needed
        assert f"{sent} prompt(s)" in listed.stdout, listed.stdout


async def test_a_second_signal_quits_generate_at_once(tmp_path: Path) -> None:
    async with Simulator(SLOW) as sim:
        args = ["generate", "a lamp", "--n", "2", "--out", str(tmp_path / "o")]
        args += ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        proc = await start(*args, "--rate-limit", RATE)
        # Both requests read by the simulator (so written): it holds them 30 s.
        await until_sim(lambda: sim.stats.create_requests == 2, proc, sim=sim)
        proc.send_signal(signal.SIGINT)
        # generate says nothing until it ends: no line to wait for; the first signal's
        # handling gets this long before the next ones come.
        await asyncio.sleep(0.2)
        signalled = time.monotonic()
        kill(proc, signal.SIGINT)
        kill(proc, signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        took = time.monotonic() - signalled
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    assert took < 3, f"the second Ctrl-C took {took:.1f}s to quit"
    assert "2 create(s) were on the wire" in stderr
    for noise in NOISE:
        assert noise not in stderr, stderr


async def test_sighup_stops_a_batch_as_sigterm_does(tmp_path: Path) -> None:
    # Answers held 1 s: the creates on the wire at the hang-up are answered and journaled.
    config = SimulatorConfig(
        time_scale=1.0, rate_limit=None, seed=9, faults=Faults(slow=1.0, slow_seconds=1.0)
    )
    async with Simulator(config) as sim:
        prompts = prompt_file(tmp_path / "p.txt", 12)
        out = tmp_path / "out"
        args = ["batch", str(prompts), "--out", str(out), "--progress", "log"]
        args += ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        proc = await start(*args, "--rate-limit", RATE)
        await until_sim(lambda: key_states(out)["intent"] >= 4, proc, sim=sim)
        proc.send_signal(signal.SIGHUP)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        stderr = err.decode()
        assert proc.returncode == 130, stderr
        assert "interrupted:" in stderr
        states = key_states(out)
        # Every create sent was answered and journaled: none left of unknown fate.
        assert states["intent"] == 0, states
        assert states["created"] + states["finished"] == sim.stats.creates > 0
        assert (out / "manifest.jsonl").is_file()


async def test_a_terminal_that_hangs_up_stops_a_batch_cleanly(tmp_path: Path) -> None:
    """A real hang-up: the batch's controlling terminal (a pty) goes away mid-batch."""
    config = SimulatorConfig(
        time_scale=1.0, rate_limit=None, seed=9, faults=Faults(slow=1.0, slow_seconds=1.0)
    )
    master, slave = os.openpty()

    def own_terminal() -> None:  # in the child: a new session whose terminal is the pty
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    async with Simulator(config) as sim:
        prompts = prompt_file(tmp_path / "p.txt", 12)
        out = tmp_path / "out"
        args = ["batch", str(prompts), "--out", str(out), "--progress", "live"]
        args += ["--provider", "runbase", "--base-url", sim.base_url("runbase")]
        proc = await asyncio.create_subprocess_exec(
            *command(*args, "--rate-limit", RATE),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=environment(RUNBASE_API_KEY=KEY),
            preexec_fn=own_terminal,
        )
        os.close(slave)
        try:
            await until_sim(lambda: key_states(out)["intent"] >= 4, proc, sim=sim)
        finally:
            os.close(master)  # the terminal hangs up: the kernel sends SIGHUP
        code = await asyncio.wait_for(proc.wait(), 30)
        assert code == 130
        states = key_states(out)
        assert states["intent"] == 0, states  # every create sent was answered and journaled
        assert states["created"] + states["finished"] == sim.stats.creates > 0
        assert (out / "manifest.jsonl").is_file()
