"""``Simulator.until``: a test waits for the server's state, woken as it changes, never polling."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest

from .wire import ManualClock, make, rb_create, rb_get


async def test_until_wakes_as_the_create_arrives_and_the_run_is_made(
    session: aiohttp.ClientSession,
) -> None:
    async with make() as sim:
        await sim.until(lambda: sim.stats.creates == 0)  # already true: at once
        arrived = asyncio.ensure_future(sim.until(lambda: sim.stats.create_requests == 1))
        made = asyncio.ensure_future(sim.until(lambda: len(sim.runs) == 1))
        await asyncio.sleep(0)
        assert not arrived.done() and not made.done()  # nothing has come
        answer = await rb_create(session, sim)
        async with asyncio.timeout(10):
            await asyncio.gather(arrived, made)
        assert answer.json()["id"] in sim.runs


async def test_until_is_told_of_polls_too_and_can_be_cancelled(
    session: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    async with make(clock=clock) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        never = asyncio.ensure_future(sim.until(lambda: sim.stats.creates == 2))
        polled = asyncio.ensure_future(sim.until(lambda: sim.stats.polls == 1))
        await rb_get(session, sim, run_id)
        async with asyncio.timeout(10):
            await polled
        assert not never.done()
        never.cancel()
        with pytest.raises(asyncio.CancelledError):
            await never
        await rb_get(session, sim, run_id)  # a cancelled waiter is not woken, nor in the way
        assert sim.stats.polls == 2


async def test_until_blocking_wakes_a_thread_or_times_out(
    session: aiohttp.ClientSession,
) -> None:
    async with make() as sim:
        seen: list[str] = []

        def wait_in_a_thread() -> None:
            sim.until_blocking(lambda: sim.stats.creates >= 1, timeout=30)
            seen.append("created")
            with pytest.raises(TimeoutError):
                sim.until_blocking(lambda: sim.stats.creates >= 99, timeout=0.01)
            seen.append("timed out")

        thread = threading.Thread(target=wait_in_a_thread)
        thread.start()
        await rb_create(session, sim)
        await asyncio.to_thread(thread.join, 30)
        assert seen == ["created", "timed out"]
