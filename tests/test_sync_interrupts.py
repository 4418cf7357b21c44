"""Ctrl-C in real scripts: a second one quits at once, saying only what is true; inside a loop.

Each test runs a ``python`` subprocess against the simulator served by the
test's loop and sends it real SIGINTs, as a terminal does.
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

from gptimage_async.simulator import Faults, Simulator, SimulatorConfig

from .test_sync import SimulatorThread, sync_session
from .test_sync_signals import until

#: Two Ctrl-Cs while four creates are held on the wire by a slow provider.
SLOW_SCRIPT = textwrap.dedent(
    """
    import sys
    import gptimage_async as gi

    with gi.SyncSession(
        "runbase", api_key="sk-sim-test", base_url=sys.argv[1],
        rate_limit=gi.RateLimit(1000, per=1.0), request_timeout=120,
    ) as session:
        print("ready", flush=True)
        session.generate_many([f"a ceramic lamp, take {n}" for n in range(4)])
    """
)

#: A blocking call made from inside ``asyncio.run``: asyncio's SIGINT handler is installed.
IN_LOOP_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import signal
    import sys
    import gptimage_async as gi

    async def main():
        before = signal.getsignal(signal.SIGINT)
        with gi.SyncSession(
            "runbase", api_key="sk-sim-test", base_url=sys.argv[1],
            rate_limit=gi.RateLimit(2, per=1.0),
        ) as session:
            session.generate("a first lamp")
            # asyncio's handler is back once a call returns.
            print("restored", signal.getsignal(signal.SIGINT) is before, flush=True)
            print("ready", flush=True)
            session.generate_many([f"a ceramic lamp, take {n}" for n in range(30)])
        print("the call ran to its end", flush=True)

    asyncio.run(main())
    """
)


async def start(script: str, sim: Simulator, *, first_line: bytes) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        sim.base_url("runbase"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == first_line
    return proc


async def test_a_second_ctrl_c_quits_at_once_and_every_message_is_true() -> None:
    # Every answer held 20 s: the four creates stay on the wire (their runs exist,
    # but the client never learns their ids).
    faults = Faults(slow=1.0, slow_seconds=20.0)
    async with Simulator(SimulatorConfig(time_scale=1.0, rate_limit=None, faults=faults)) as sim:
        proc = await start(SLOW_SCRIPT, sim, first_line=b"ready\n")
        await until(lambda: sim.stats.create_requests == 4, proc, sim=sim)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(1.0)  # the first stops creating and waits for the wire
        assert proc.returncode is None
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        took = time.monotonic() - signalled
    stderr = err.decode()
    assert proc.returncode == -signal.SIGINT, stderr
    # Neither the call nor the with block's close waited for the creates on the wire.
    assert took < 5, f"quitting took {took:.1f}s\n{stderr}"
    wire = "4 create(s) still on the wire were not waited for, their fate is unknown"
    assert wire in stderr, stderr
    assert "no run is known to have been created" in stderr
    assert "no run was created" not in stderr  # four were, at the provider
    assert "closing at once: 4 create(s) on the wire were not waited for" in stderr
    # No run id was ever learned, so none is named, and no "still in flight" warning.
    assert "still in flight" not in stderr
    for run_id in sim.runs:
        assert run_id not in stderr
    assert "sk-sim-test" not in stderr


async def test_one_ctrl_c_with_a_slow_provider_names_the_runs_the_wire_answered() -> None:
    # One Ctrl-C: the creates on the wire are waited for, so their ids are known and named.
    faults = Faults(slow=1.0, slow_seconds=2.0)
    async with Simulator(SimulatorConfig(time_scale=1.0, rate_limit=None, faults=faults)) as sim:
        proc = await start(SLOW_SCRIPT, sim, first_line=b"ready\n")
        await until(lambda: sim.stats.create_requests == 4, proc, sim=sim)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr = err.decode()
    assert proc.returncode == -signal.SIGINT, stderr
    assert "not waited for" not in stderr
    assert len(sim.runs) == 4
    for run_id in sim.runs:
        assert f"  {run_id}  " in stderr  # in the note
    assert "session.runs.abandoned holds them" in stderr  # the close's WARNING names them too


async def test_ctrl_c_stops_a_blocking_call_made_inside_a_running_loop() -> None:
    # The first generate must finish (runs of 0.15-0.5 s); the interrupted call's
    # runs take 3-10 s, so they are all still going at the signal.
    async with Simulator(SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3)) as sim:
        proc = await start(IN_LOOP_SCRIPT, sim, first_line=b"restored True\n")
        sim.config = sim.config.replace(time_scale=1.0)
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        await until(lambda: sim.stats.creates >= 4, proc, sim=sim)
        sent_at_signal = sim.stats.create_requests
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        took = time.monotonic() - signalled
        await asyncio.sleep(0.6)  # time a leftover create would need to arrive
    stderr = err.decode()
    assert proc.returncode == -signal.SIGINT, stderr
    assert b"the call ran to its end" not in out
    assert took < 5, f"the stop took {took:.1f}s"
    # Two creates a second: had the call run on, all 31 would have been sent.
    assert sim.stats.create_requests - sent_at_signal <= 1
    assert sim.stats.creates < 10
    assert "runs already created (paid for" in stderr
    # Every run of the interrupted call is named; the first generate's was returned.
    named = [run_id for run_id in sim.runs if run_id in stderr]
    assert len(named) == len(sim.runs) - 1 >= 3


def test_a_programs_own_sigint_handler_is_left_alone() -> None:
    # Not asyncio's: the program chose what a Ctrl-C does (say, a graceful stop).
    seen: list[int] = []

    def own(signum: int, frame: object) -> None:
        seen.append(signum)

    holder = SimulatorThread(SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3))
    previous = signal.signal(signal.SIGINT, own)
    try:
        with holder as sim, sync_session(sim) as session:

            def interrupt_once_created() -> None:
                # Woken by the simulator's loop the moment it made the run.
                with contextlib.suppress(TimeoutError):  # then the test fails below instead
                    sim.until_blocking(lambda: sim.stats.creates >= 1, timeout=60)
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

            threading.Thread(target=interrupt_once_created, daemon=True).start()
            result = session.generate("a ceramic lamp")  # not interrupted
            assert result.run_id in sim.runs
            assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]


#: A close waiting for another thread's call, whose create is held on the wire.
CLOSE_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import gptimage_async as gi

    with gi.SyncSession(
        "runbase", api_key="sk-sim-test", base_url=sys.argv[1],
        rate_limit=gi.RateLimit(1000, per=1.0), request_timeout=120,
    ) as session:
        def other():
            try:
                session.generate("a lamp from another thread")
            except gi.SessionClosedError:
                pass
        threading.Thread(target=other, daemon=True).start()
        while session.stats.requests < 1:  # its create is on the wire
            time.sleep(0.01)
        print("ready", flush=True)
    """
)


async def test_ctrl_c_while_leaving_the_with_block_quits_at_once() -> None:
    faults = Faults(slow=1.0, slow_seconds=20.0)
    async with Simulator(SimulatorConfig(time_scale=1.0, rate_limit=None, faults=faults)) as sim:
        proc = await start(CLOSE_SCRIPT, sim, first_line=b"ready\n")
        await until(lambda: sim.stats.create_requests == 1, proc, sim=sim)
        await asyncio.sleep(0.3)  # the close is waiting for the other thread's call
        assert proc.returncode is None
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        took = time.monotonic() - signalled
    stderr = err.decode()
    assert proc.returncode == -signal.SIGINT, stderr
    assert took < 5, f"quitting took {took:.1f}s\n{stderr}"
    assert stderr.count("closing at once: 1 create(s) on the wire were not waited for") == 1


#: A notebook's way: the session outlives an interrupted call, then close() waits for the wire.
CLOSE_AFTER_SCRIPT = textwrap.dedent(
    """
    import sys
    import gptimage_async as gi

    session = gi.SyncSession(
        "runbase", api_key="sk-sim-test", base_url=sys.argv[1],
        rate_limit=gi.RateLimit(1000, per=1.0), request_timeout=120,
    )
    print("ready", flush=True)
    try:
        session.generate_many([f"a ceramic lamp, take {n}" for n in range(4)])
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    session.close()
    """
)


async def test_ctrl_c_in_a_close_waiting_for_creates_on_the_wire_quits_at_once() -> None:
    faults = Faults(slow=1.0, slow_seconds=20.0)
    async with Simulator(SimulatorConfig(time_scale=1.0, rate_limit=None, faults=faults)) as sim:
        proc = await start(CLOSE_AFTER_SCRIPT, sim, first_line=b"ready\n")
        assert proc.stdout is not None
        await until(lambda: sim.stats.create_requests == 4, proc, sim=sim)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # the call stops waiting for the wire
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"interrupted\n"
        await asyncio.sleep(0.3)  # close() now waits for the four creates
        assert proc.returncode is None
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        took = time.monotonic() - signalled
    stderr = err.decode()
    assert proc.returncode == -signal.SIGINT, stderr
    assert took < 5, f"quitting took {took:.1f}s\n{stderr}"
    assert stderr.count("closing at once: 4 create(s) on the wire were not waited for") == 1
