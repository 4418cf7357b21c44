"""Leaving a Session the hard way: any exception, Ctrl-C in a script, another event loop.

Every run the session leaves unresolved is paid for: it is named in one
WARNING and kept in ``session.runs.abandoned``, each with its run id, so a
later session can ``attach`` it. A session used from an event loop other
than its own says so with a typed error before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import TEST_KEYS, simulated_session

from .helpers import config

T = TypeVar("T")

#: Runs that outlast every test here: none finishes before the session is left.
LONG_RUNS = {"duration": "fixed", "duration_median": 1000.0}


def abandoned_ids(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The run ids named by the one WARNING a session logs when it abandons runs."""
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "still in flight" in r.getMessage()
    ]
    assert len(lines) == 1, lines
    return set(lines[0].rpartition(": ")[2].split(", "))


def assert_abandoned(session: gi.Session, sim: Simulator) -> None:
    assert session.closed
    assert len(session.runs) == 0  # none in flight any more
    abandoned = session.runs.abandoned
    assert {run.id for run in abandoned} == set(sim.runs)  # every paid run, none invented
    for run in abandoned:
        assert session.runs.get(run.id or "") is run  # reachable by id after close
        assert run.status is gi.RunStatus.ERRORED
        assert isinstance(run.error, gi.SessionClosedError)
        assert run.error.run_id == run.id


async def test_an_exception_in_the_block_names_and_keeps_the_runs_it_abandons(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gptimage_async")

    async def job() -> None:
        async with simulated_session(config=config(**LONG_RUNS)) as (sim, session):
            for i in range(4):
                await session.submit(f"lamp {i}")
            held.extend([sim, session])
            raise LookupError("the app's own bug")

    held: list[Any] = []
    with pytest.raises(LookupError, match="the app's own bug"):
        await job()
    sim, session = held
    assert_abandoned(session, sim)
    assert abandoned_ids(caplog) == set(sim.runs) and len(sim.runs) == 4


async def test_cancelling_a_generate_many_names_and_keeps_the_runs_it_abandons(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gptimage_async")
    cfg = config(rate_limit=None, **LONG_RUNS)
    rate = gi.RateLimit(100, per=1.0)
    async with Simulator(cfg) as sim:
        session = gi.Session(
            base_url=sim.base_url("runbase"), api_key=TEST_KEYS["runbase"], rate_limit=rate
        )

        async def job() -> None:
            async with session:
                await session.generate_many([f"cup {i}" for i in range(60)])

        task = asyncio.create_task(job())
        async with asyncio.timeout(30):
            await sim.until(lambda: sim.stats.creates >= 10)
        task.cancel()  # what asyncio.run does on Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 10 <= len(sim.runs) < 60
        assert sim.stats.create_requests == sim.stats.creates  # no create lost on the way
        assert_abandoned(session, sim)
        assert abandoned_ids(caplog) == set(sim.runs)


SCRIPT = textwrap.dedent(
    """
    import asyncio, os

    import gptimage_async as gi


    async def main() -> None:
        async with gi.Session(
            "runbase", base_url=os.environ["SIM_URL"], rate_limit=gi.RateLimit(50, per=1.0)
        ) as session:
            results = await session.generate_many([f"prompt {i}" for i in range(60)])
            print(len(results), "images")


    asyncio.run(main())
    """
)


async def test_ctrl_c_in_a_script_names_every_paid_run(tmp_path: Path) -> None:
    # A script as a new user writes it: no logging set up, no signal handling.
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    cfg = SimulatorConfig(time_scale=1.0, rate_limit=None, seed=3, **LONG_RUNS)  # type: ignore[arg-type]
    async with Simulator(cfg) as sim:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env |= {"RUNBASE_API_KEY": TEST_KEYS["runbase"], "SIM_URL": sim.base_url("runbase")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # A real process: wait for its tenth create on the simulator (in this
        # process), or for its end, whichever comes first.
        created = asyncio.ensure_future(sim.until(lambda: sim.stats.creates >= 10))
        ended = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait({created, ended}, timeout=60, return_when="FIRST_COMPLETED")
        ended.cancel()
        assert created in done, "the script ended before Ctrl-C (or made no 10 runs in 60 s)"
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        created = set(sim.runs)
    stderr = err.decode()
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
    assert b"images" not in out
    (line,) = [line for line in stderr.splitlines() if "still in flight" in line]
    named = set(line.rpartition(": ")[2].split(", "))
    assert named == created  # every paid run named, and only those
    assert 10 <= len(created) < 60
    assert re.search(rf"closing with {len(created)} run\(s\)", line)


def test_a_session_used_from_another_event_loop_says_so_before_sending() -> None:
    # The session and its simulator live on loop A, in a thread of their own.
    loop_a = asyncio.new_event_loop()
    thread = threading.Thread(target=loop_a.run_forever, daemon=True)
    thread.start()

    def on_a(coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), loop_a).result(timeout=60)

    stack = contextlib.AsyncExitStack()

    async def start() -> tuple[Simulator, gi.Session]:
        sim = await stack.enter_async_context(Simulator(config()))
        session = gi.Session(base_url=sim.base_url("runbase"), api_key=TEST_KEYS["runbase"])
        await stack.enter_async_context(session)
        return sim, session

    try:
        sim, session = on_a(start())

        async def from_loop_b() -> None:
            with pytest.raises(gi.WrongEventLoopError, match="another event loop"):
                await session.submit("a lamp")
            with pytest.raises(gi.WrongEventLoopError):
                await session.generate("a lamp")
            with pytest.raises(gi.WrongEventLoopError):
                session.attach("run_from_elsewhere")
            with pytest.raises(gi.WrongEventLoopError):
                await session.generate_many(["a", "b"])
            with pytest.raises(gi.WrongEventLoopError):
                async for _ in session.as_completed(["a", "b"]):
                    pass
            with pytest.raises(gi.WrongEventLoopError):
                await session.aclose()

        asyncio.run(from_loop_b())
        with pytest.raises(gi.WrongEventLoopError, match="outside any event loop"):
            session.attach("run_from_a_thread")
        assert sim.stats.requests == 0  # refused before anything was sent
        assert not session.closed and len(session.runs) == 0
        # It is a RuntimeError, as asyncio's own would have been.
        assert issubclass(gi.WrongEventLoopError, RuntimeError)
        # On its own loop the session still works.
        assert on_a(session.generate("a lamp")).urls
    finally:
        on_a(stack.aclose())
        loop_a.call_soon_threadsafe(loop_a.stop)
        thread.join(timeout=10)
        loop_a.close()
    assert session.closed
