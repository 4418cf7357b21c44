"""Ctrl-C in a real script using ``SyncSession``: it stops creating at once, as the CLI does.

A ``python`` subprocess runs a blocking ``generate_many`` (or ``generate``)
against the simulator served by this test's loop; the test sends it SIGINT
and watches the simulator's create count stop growing, then reads the
``KeyboardInterrupt`` the script died of, with the ids of the runs already
created in its notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_sync import SimulatorThread, sync_session

SCRIPT = textwrap.dedent(
    """
    import sys
    import gptimage_async as gi

    base_url, verb, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with gi.SyncSession(
        "runbase", api_key="sk-sim-test", base_url=base_url,
        rate_limit=gi.RateLimit(1, per=1.0 / rate),
    ) as session:
        print("ready", flush=True)
        if verb == "generate_many":
            session.generate_many([f"a ceramic lamp, take {n}" for n in range(40)])
        else:
            session.generate("a ceramic lamp")
    """
)


async def start(sim: Simulator, verb: str, rate: float) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        sim.base_url("runbase"),
        verb,
        str(rate),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    return proc


async def until(
    condition: Callable[[], bool],
    proc: asyncio.subprocess.Process,
    limit: float = 60,
    *,
    sim: Simulator,
) -> None:
    """Until ``condition()`` (on ``sim``'s state) holds, woken by the simulator as it
    changes (``Simulator.until``); fails if ``proc`` ends first or after ``limit`` s."""
    holds = asyncio.ensure_future(sim.until(condition))
    ended = asyncio.ensure_future(proc.wait())
    try:
        done, _ = await asyncio.wait({holds, ended}, timeout=limit, return_when="FIRST_COMPLETED")
    finally:
        holds.cancel()
        ended.cancel()
    assert ended not in done, "the script ended before the signal"
    assert holds in done, f"not true after {limit:g} s"


async def test_ctrl_c_in_generate_many_stops_creating_at_once() -> None:
    # Runs of 3-10 s: every run created is still going at the signal.
    async with Simulator(SimulatorConfig(time_scale=1.0, rate_limit=None, seed=3)) as sim:
        # Four creates a second: the rest of the 40 wait in the client's rate limiter.
        proc = await start(sim, "generate_many", rate=4.0)
        await until(lambda: sim.stats.creates >= 3, proc, sim=sim)
        sent_at_signal = sim.stats.create_requests
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        took = time.monotonic() - signalled
        await asyncio.sleep(0.5)  # time a leftover create would need to arrive
        stderr = err.decode()
        # Python dies of an uncaught KeyboardInterrupt by SIGINT, as a shell expects.
        assert proc.returncode == -signal.SIGINT, stderr
        assert "KeyboardInterrupt" in stderr
        assert "sk-sim-test" not in stderr  # the key is never shown
        # Nothing was sent after the signal but a create that may have been on its way.
        assert sim.stats.create_requests - sent_at_signal <= 1
        assert sim.stats.creates < 40
        assert took < 5, f"the stop took {took:.1f}s"
        # Every run created (paid for) is named, still going at the provider.
        assert "runs already created (paid for" in stderr
        assert len(sim.runs) == sim.stats.creates
        for run_id in sim.runs:
            assert f"  {run_id}  in flight at the stop" in stderr
        assert sim.stats.duplicates == 0


async def test_ctrl_c_in_generate_reports_the_run_it_created() -> None:
    async with Simulator(SimulatorConfig(time_scale=1.0, rate_limit=None, seed=3)) as sim:
        proc = await start(sim, "generate", rate=100.0)
        await until(lambda: sim.stats.creates == 1, proc, sim=sim)
        await asyncio.sleep(0.05)  # the answer reaches the client
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    stderr = err.decode()
    assert proc.returncode == -signal.SIGINT, stderr
    [run_id] = sim.runs
    assert f"  {run_id}  in flight at the stop" in stderr
    assert sim.stats.create_requests == 1


def test_ctrl_c_in_a_notebook_leaves_the_session_open() -> None:
    # A notebook's "interrupt the kernel" is a SIGINT to the main thread, as here.
    holder = SimulatorThread(SimulatorConfig(time_scale=1.0, rate_limit=None, seed=3))
    # on_exit="cancel": the interrupted runs (3-10 s) are not waited for at the end of
    # the block; everything this test checks happens before it.
    with (
        holder as sim,
        sync_session(sim, rate_limit=gi.RateLimit(1, per=0.25), on_exit="cancel") as session,
    ):

        def interrupt_after_two_creates() -> None:
            # Woken by the simulator's loop the moment it made the second run.
            with contextlib.suppress(TimeoutError):  # then the test fails below instead
                sim.until_blocking(lambda: sim.stats.creates >= 2, timeout=60)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        threading.Thread(target=interrupt_after_two_creates, daemon=True).start()
        with pytest.raises(KeyboardInterrupt) as caught:
            session.generate_many([f"a ceramic lamp, take {n}" for n in range(40)])
        created = sim.stats.create_requests
        notes = "\n".join(getattr(caught.value, "__notes__", []))
        assert "runs already created (paid for" in notes
        for run_id in sim.runs:
            assert f"  {run_id}  in flight at the stop" in notes
        # The session is still open: the next cell's call works, and nothing more was sent.

        def faster() -> None:
            sim.config = sim.config.replace(time_scale=0.01)

        holder.on_loop(faster)
        assert sim.stats.create_requests == created
        assert session.generate("after the interrupt").run_id in sim.runs
        assert sim.stats.create_requests == created + 1


def test_ctrl_c_while_waiting_for_a_result_leaves_the_run_alone() -> None:
    holder = SimulatorThread(SimulatorConfig(time_scale=0.1, rate_limit=None, seed=3))
    with holder as sim, sync_session(sim) as session:
        run = session.submit("a ceramic lamp")  # 0.3-1 s

        def interrupt_soon() -> None:
            time.sleep(0.05)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        threading.Thread(target=interrupt_soon, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run.result()
        assert not run.done()  # only the wait stopped
        assert run.result().run_id == run.id
        assert run.status is gi.RunStatus.SUCCEEDED
        assert sim.stats.create_requests == 1
