"""Lifecycle: nothing outlives the session, whichever way it is left.

After every exit (normal, ``on_exit="cancel"``, an exception in the block,
the owning task cancelled, awaiting tasks cancelled) these must hold: no task
left behind, the HTTP connector closed, no file descriptor left open, no
``ResourceWarning`` or unraisable exception (the suite runs with warnings as
errors), nothing handed to the loop's exception handler, and every run
resolved exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import anyio
import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, Simulator

from .conftest import (
    PROVIDERS,
    LeakWatch,
    leak_watch,
    on_wire,
    session_for,
    sim_config,
    simulated,
)

#: Runs that outlast any of these tests (10,000 provider seconds = 50 s).
NEVER_DONE = {"duration": "fixed", "duration_median": 10_000.0}
#: Runs of 100 provider seconds = 0.5 s: still in flight when a test acts on them.
SLOWISH = {"duration": "fixed", "duration_median": 100.0}


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # not Linux: the other checks still run
        return None


@contextlib.asynccontextmanager
async def watched() -> AsyncIterator[LeakWatch]:
    """A leak watch that also counts file descriptors (sockets) across the block."""
    fds = _open_fds()
    async with leak_watch() as watch:
        yield watch
    watch.assert_clean()
    if fds is not None:
        assert _open_fds() == fds, "a socket or file was left open"


def _assert_released(session: gi.Session) -> None:
    assert session.closed
    assert len(session.runs) == 0
    assert session.transport.closed


def _assert_closed_error(run: gi.Run) -> None:
    assert run.done()
    error = run.error
    assert isinstance(error, gi.SessionClosedError), repr(error)
    assert error.run_id == run.id and run.id is not None
    assert run.id in str(error)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_normal_exit_releases_everything(provider: str) -> None:
    async with watched():
        async with Simulator(sim_config()) as sim, session_for(sim, provider) as session:
            results = await session.generate_many([f"lamp {i}" for i in range(200)])
            assert len(results) == 200
        _assert_released(session)


async def test_exit_waits_for_runs_in_flight() -> None:
    async with watched(), Simulator(sim_config(**SLOWISH)) as sim:
        async with session_for(sim, "runbase") as session:
            runs = await asyncio.gather(*(session.submit(f"chair {i}") for i in range(50)))
            assert not any(run.done() for run in runs)
        assert all(isinstance(run.outcome, gi.Result) for run in runs)
        _assert_released(session)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_exit_with_cancel_ends_runs_with_their_ids(provider: str) -> None:
    # Cut short by the exit, done soon after.
    async with watched(), Simulator(sim_config(**SLOWISH)) as sim:
        async with session_for(sim, provider, on_exit="cancel") as session:
            runs = await asyncio.gather(*(session.submit(f"table {i}") for i in range(20)))
        for run in runs:
            _assert_closed_error(run)
        _assert_released(session)
        # The runs live on at the provider: a new session can pick them up by id.
        async with session_for(sim, provider) as again:
            with anyio.fail_after(10):
                results = [await again.attach(run.id) for run in runs if run.id]
        assert [r.run_id for r in results] == [run.id for run in runs]
        assert sim.stats.creates == 20


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_exception_inside_the_block_cancels_and_propagates(provider: str) -> None:
    runs: list[gi.Run] = []
    waiters: list[asyncio.Task[gi.Result]] = []
    async with watched(), Simulator(sim_config(**NEVER_DONE)) as sim:
        session = session_for(sim, provider)

        async def block() -> None:
            async with session:
                runs.extend([await session.submit(f"sofa {i}") for i in range(20)])
                waiters.extend(asyncio.create_task(run.result()) for run in runs)
                await asyncio.sleep(0)  # one pass: each waiter is now awaiting its run
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await block()
        assert len(runs) == 20
        for run in runs:
            _assert_closed_error(run)
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(o, gi.SessionClosedError) for o in outcomes)
        _assert_released(session)


async def test_owning_task_cancelled_while_exit_waits() -> None:
    """Cancelled while ``async with`` waits for runs on exit: runs end, nothing leaks."""
    runs: list[gi.Run] = []
    entered_exit = asyncio.Event()
    async with watched(), Simulator(sim_config(**NEVER_DONE)) as sim:
        session = session_for(sim, "runbase")

        async def owner() -> None:
            async with session:
                runs.extend([await session.submit(f"stool {i}") for i in range(10)])
                entered_exit.set()

        task = asyncio.create_task(owner())
        await entered_exit.wait()
        # The owner went on, in the same step, into __aexit__: closing, it now
        # waits there for runs that never end.
        assert session.closed
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for run in runs:
            _assert_closed_error(run)
        _assert_released(session)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cancelling_awaiting_tasks_disturbs_no_run(provider: str) -> None:
    async with watched(), Simulator(sim_config(**SLOWISH)) as sim:
        async with session_for(sim, provider) as session:
            runs = await asyncio.gather(*(session.submit(f"shelf {i}") for i in range(40)))
            waiters = [asyncio.create_task(run.result()) for run in runs]
            await asyncio.sleep(0)
            assert not any(run.done() for run in runs)
            for waiter in waiters[::2]:
                waiter.cancel()
            outcomes = await asyncio.gather(*waiters, return_exceptions=True)
            cancelled = [o for o in outcomes[::2] if isinstance(o, asyncio.CancelledError)]
            assert len(cancelled) == 20
            assert all(isinstance(o, gi.Result) for o in outcomes[1::2])
            # The runs whose waiters went away still finish, and can be awaited again.
            with anyio.fail_after(10):
                again = [await run for run in runs[::2]]
            assert all(isinstance(r, gi.Result) for r in again)
            assert (await session.generate("still usable")).urls
        assert session.runs.counts()["succeeded"] == 41
        _assert_released(session)


async def test_cancelled_submits_lose_no_run() -> None:
    """Callers cancelled while their create is on the wire: every run the server made
    is tracked by the session and resolved, and none is created twice."""
    # Every answer held 20 provider seconds = 0.1 s, so the cancels land mid-create.
    config = sim_config(faults=Faults(slow=1.0, slow_seconds=20.0))
    async with watched(), Simulator(config) as sim:
        async with session_for(sim, "runbase") as session:
            submits = [asyncio.create_task(session.submit(f"bench {i}")) for i in range(30)]
            # Until the server holds some creates (real sockets: a bounded wait for I/O).
            with anyio.fail_after(10):
                await sim.until(lambda: sim.stats.create_requests > 0)
            for task in submits:
                task.cancel()
            outcomes = await asyncio.gather(*submits, return_exceptions=True)
            assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        assert sim.stats.duplicates == 0
        assert sim.stats.creates == sim.stats.create_requests
        # Every run created was tracked and resolved before the session let go.
        assert session.runs.counts()["succeeded"] == sim.stats.creates
        assert all(run.first_seen_done_at is not None for run in sim.runs.values())
        _assert_released(session)


@pytest.mark.parametrize("how", ["generate_many", "as_completed"])
async def test_cancelled_bulk_call_leaves_no_feeder_behind(how: str) -> None:
    # About tasks, not sockets: in memory on the fake clock, so "nothing more is
    # sent" is watched over fake seconds moved by hand (the sleeps below), at no
    # wall time. The socket-leak side of a close is the other tests' here.
    async def scenario() -> None:
        async with simulated("apiinone", sim_config(), "memory") as (sim, session):
            prompts = [f"rug {i}" for i in range(500)]

            async def bulk() -> None:
                if how == "generate_many":
                    await session.generate_many(prompts)
                else:
                    async with contextlib.aclosing(session.as_completed(prompts)) as stream:
                        async for _ in stream:
                            pass

            task = asyncio.create_task(bulk())
            await sim.until(lambda: sim.stats.creates >= 20)  # the job is well under way
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Creates already on the wire finish; after that nothing more is sent.
            await asyncio.sleep(0.1)
            sent = sim.stats.create_requests
            await asyncio.sleep(1.0)
            assert sim.stats.create_requests == sent < 500
        # Every run created was tracked, finished and counted.
        assert session.runs.counts()["succeeded"] == sim.stats.creates == sent
        _assert_released(session)

    async with watched():
        await on_wire("memory", scenario())


async def test_closed_session_refuses_reuse() -> None:
    async with watched(), Simulator(sim_config()) as sim:
        session = session_for(sim, "runbase")
        async with session:
            await session.generate("once")
        requests = sim.stats.requests
        for attempt in (
            session.submit("again"),
            session.generate("again"),
            session.generate_many(["again"]),
            session.open(),
        ):
            with pytest.raises(gi.SessionClosedError):
                await attempt
        with pytest.raises(gi.SessionClosedError):
            session.attach("run_123")
        with pytest.raises(gi.SessionClosedError):
            async for _ in session.as_completed(["again"]):
                pass
        with pytest.raises(gi.SessionClosedError):
            async with session:
                pass
        assert sim.stats.requests == requests, "a closed session sent something"
        await session.aclose()  # closing twice is harmless
        _assert_released(session)
