"""A stop signal sent while the command starts (imports, reading its input) stops it.

It is recorded from the package's first import (``_early_signals``) and
replayed when the command takes signals itself: exit 130, the message a
signal later on gives, and no create sent. Before, a ``kill -INT`` to a
script's background job (SIGINT ignored) was lost, a Ctrl-C gave a traceback
from an import, and SIGTERM exited 143 in silence. Real processes, real
signals, a real simulator; "as early as possible" is the moment the process
has a handler for the signal at all (``/proc/PID/status``), else the signal
would meet the shell's or the kernel's default before Python ran a line of ours.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from gptimage_async import _early_signals
from gptimage_async._early_signals import started_as_command
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_cli import KEY, RATE, command, environment, prompt_file

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

#: ``simulate``'s exit code on Ctrl-C, as before the early record.
SIMULATE_CTRL_C = 0
CONFIG = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=5)


def ignore_sigint() -> None:
    # What a non-interactive shell does for `cmd &`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def caught(pid: int) -> int:
    """The signals process ``pid`` has a handler for (``SigCgt``), as a bit mask."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


async def start(sim: Simulator, args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command(*args, "--provider", "runbase", "--base-url", sim.base_url("runbase")),
        "--rate-limit",
        RATE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(RUNBASE_API_KEY=KEY),
        preexec_fn=ignore_sigint,
    )


async def signal_early(
    proc: asyncio.subprocess.Process, sig: signal.Signals, *, wait: float, times: int = 1
) -> tuple[int, str]:
    """Send ``sig`` once the process catches it (plus ``wait`` s); its exit code and stderr."""
    bit = 1 << (sig - 1)
    for _ in range(3000):  # 30 s at most, in 10 ms steps
        if proc.returncode is not None or caught(proc.pid) & bit:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(wait)
    for i in range(times):
        if i:  # two signals at once are one to the kernel: let the first be taken
            await asyncio.sleep(0.2)
        proc.send_signal(sig)
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


@pytest.mark.parametrize("wait", [0.0, 0.25], ids=["at-once", "after-a-moment"])
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda sig: sig.name
)
async def test_a_signal_while_a_batch_starts_stops_it_before_any_create(
    tmp_path: Path, sig: signal.Signals, wait: float
) -> None:
    async with Simulator(CONFIG) as sim:
        prompts = prompt_file(tmp_path / "p.txt", 30)
        out = tmp_path / "out"
        proc = await start(sim, ["batch", str(prompts), "--out", str(out), "--progress", "log"])
        code, stderr = await signal_early(proc, sig, wait=wait)
        creates = sim.stats.create_requests
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted: 0 done" in stderr, stderr
    assert "rerun the same command to resume" in stderr
    assert creates == 0


async def test_two_signals_while_a_batch_starts_quit_at_once(tmp_path: Path) -> None:
    async with Simulator(CONFIG) as sim:
        prompts = prompt_file(tmp_path / "p.txt", 30)
        out = tmp_path / "out"
        proc = await start(sim, ["batch", str(prompts), "--out", str(out)])
        code, stderr = await signal_early(proc, signal.SIGINT, wait=0.0, times=2)
        creates = sim.stats.create_requests
    assert code == 130, stderr
    assert "interrupted at once" in stderr, stderr
    assert "Traceback" not in stderr
    assert creates == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda sig: sig.name)
async def test_a_signal_while_generate_starts_stops_it_before_any_create(
    sig: signal.Signals,
) -> None:
    async with Simulator(CONFIG) as sim:
        proc = await start(sim, ["generate", "a lamp", "--n", "3"])
        code, stderr = await signal_early(proc, sig, wait=0.0)
        creates = sim.stats.create_requests
    assert code == 130, stderr
    assert "interrupted; no run was created" in stderr, stderr
    assert "Traceback" not in stderr
    assert creates == 0


async def test_a_command_without_signals_of_its_own_gets_them_back(tmp_path: Path) -> None:
    # `simulate` runs until Ctrl-C: the early record must not keep it from stopping.
    proc = await asyncio.create_subprocess_exec(
        *command("simulate", "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)  # serving: past the start
    assert b"http://" in line
    proc.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)  # it stops: not kept waiting
    assert proc.returncode == SIMULATE_CTRL_C, stderr.decode()


def test_only_the_command_line_records_signals() -> None:
    assert started_as_command(["/venv/bin/gptimage-async", "batch"], ["python", "x"])
    assert started_as_command(["-m"], ["python", "-X", "importtime", "-m", "gptimage_async"])
    assert not started_as_command(["-m"], ["python", "-m", "pytest"])
    assert not started_as_command(["app.py"], ["python", "app.py", "-m", "gptimage_async"])
    assert not started_as_command(["-c"], ["python", "-c", "import gptimage_async"])
    # This test process imported the package: its handlers are its own.
    assert all(
        signal.getsignal(sig) is not _early_signals._record
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    )


def loaded(pid: int, name: str) -> bool:
    """Whether process ``pid`` has mapped a shared object whose path holds ``name``."""
    return name in Path(f"/proc/{pid}/maps").read_text()


async def test_the_signal_is_taken_while_the_package_still_imports(tmp_path: Path) -> None:
    # The handler is installed by the package's first import, before aiohttp (whose C
    # parser is mapped once the package's modules import it): a process frozen the
    # moment it catches SIGTERM has not got that far, so a signal then is the hard case.
    # The process runs while this test polls it: a few tries find that window.
    async with Simulator(CONFIG) as sim:
        prompts = prompt_file(tmp_path / "p.txt", 5)
        in_imports = 0
        for attempt in range(3):
            out = tmp_path / f"out{attempt}"
            proc = await start(sim, ["batch", str(prompts), "--out", str(out)])
            bit = 1 << (signal.SIGTERM - 1)
            for _ in range(15000):  # 30 s at most
                if proc.returncode is not None or caught(proc.pid) & bit:
                    break
                await asyncio.sleep(0.002)
            proc.send_signal(signal.SIGSTOP)
            early = not loaded(proc.pid, "aiohttp")
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
            _, stderr = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 130, stderr.decode()
            assert b"interrupted: 0 done" in stderr
            in_imports += early
        creates = sim.stats.create_requests
    assert in_imports >= 1
    assert creates == 0
