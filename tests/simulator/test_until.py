"""``Simulator.until``: a test waits for the server's state, woken as it changes, never polling."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import aiohttp
import pytest

from gptimage_async.simulator import Simulator

from .wire import RB_KEY, ManualClock, auth, make, rb_create, rb_get


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


# -- the rules: a condition that raises, the thread it blocks, its timeout, closing ----------

HOW = ["task", "thread", "another loop"]


async def start_wait(
    sim: Simulator, condition: Callable[[], object], how: str
) -> asyncio.Future[None]:
    """Wait on ``sim`` as a task, a blocked thread or a task on another thread's loop.

    Returns once the wait has looked at its condition a first time, so a later
    change reaches it through the pipeline, not through that first look.
    """
    looked = threading.Event()

    def checked() -> object:
        looked.set()
        return condition()

    waiting: asyncio.Future[None]
    if how == "task":
        waiting = asyncio.ensure_future(sim.until(checked))
    elif how == "thread":
        waiting = asyncio.ensure_future(asyncio.to_thread(sim.until_blocking, checked, timeout=5))
    else:
        bounded = asyncio.wait_for(sim.until(checked), 5)
        waiting = asyncio.ensure_future(asyncio.to_thread(asyncio.run, bounded))
    assert await asyncio.to_thread(looked.wait, 5)
    assert not waiting.done()
    return waiting


def missing_run(sim: Simulator) -> object:
    return sim.runs["run_nope"]


def no_next(sim: Simulator) -> object:
    return next(iter(()))  # a Future cannot carry StopIteration: a RuntimeError instead


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize(
    ("fails", "error", "says"),
    [(missing_run, KeyError, "run_nope"), (no_next, RuntimeError, "StopIteration")],
)
async def test_a_condition_raising_at_a_later_check_ends_the_wait_with_its_error(
    session: aiohttp.ClientSession,
    how: str,
    fails: Callable[[Simulator], object],
    error: type[Exception],
    says: str,
) -> None:
    async with make() as sim:
        waiting = await start_wait(sim, lambda: fails(sim) if sim.stats.requests else False, how)
        answer = await rb_create(session, sim)
        with pytest.raises(error, match=says):
            async with asyncio.timeout(5):
                await waiting
        assert answer.status == 200 and sim.stats.creates == 1  # served as if nobody waited
        assert (await rb_get(session, sim, answer.json()["id"])).status == 200


async def test_a_condition_raising_at_its_first_check_or_not_a_plain_function_raises_at_once() -> (
    None
):
    sim = make()

    async def coroutine_function() -> bool:
        return True

    with pytest.raises(KeyError):
        await sim.until(lambda: sim.runs["run_nope"])
    with pytest.raises(TypeError, match="function of no arguments"):
        await sim.until(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an async one"):
        await sim.until(coroutine_function)
    with pytest.raises(TypeError, match="returned an awaitable"):
        await sim.until(lambda: coroutine_function())
    with pytest.raises(TypeError, match="not an async one"):
        await asyncio.to_thread(sim.until_blocking, coroutine_function, timeout=5)


async def test_until_blocking_on_a_thread_running_an_event_loop_is_refused_at_once() -> None:
    async with make() as sim:  # the simulator's own loop: it could never serve the create
        with pytest.raises(RuntimeError, match=r"await Simulator\.until"):
            sim.until_blocking(lambda: sim.stats.creates >= 1, timeout=5)

    async def on_another_loop() -> None:
        sim.until_blocking(lambda: True, timeout=5)

    with pytest.raises(RuntimeError, match="running an event loop"):
        await asyncio.to_thread(asyncio.run, on_another_loop())


@pytest.mark.parametrize(
    ("seconds", "error"),
    [
        (float("nan"), ValueError),
        (-1, ValueError),
        (float("-inf"), ValueError),
        ("3", TypeError),
        (True, TypeError),
    ],
)
async def test_a_bad_timeout_is_refused_before_any_wait(
    seconds: object, error: type[Exception]
) -> None:
    sim = make()
    with pytest.raises(error, match="seconds"):
        await asyncio.to_thread(sim.until_blocking, lambda: False, timeout=seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [float("inf"), None, 1e300])
async def test_an_endless_timeout_waits_with_no_limit_and_zero_looks_once(
    session: aiohttp.ClientSession, seconds: float | None
) -> None:
    async with make() as sim:
        waiting = asyncio.ensure_future(
            asyncio.to_thread(sim.until_blocking, lambda: sim.stats.creates >= 1, timeout=seconds)
        )
        await rb_create(session, sim)
        async with asyncio.timeout(5):
            await waiting
        await asyncio.to_thread(sim.until_blocking, lambda: sim.stats.creates == 1, timeout=0)
        with pytest.raises(TimeoutError, match="in 0s"):
            await asyncio.to_thread(sim.until_blocking, lambda: sim.stats.creates == 2, timeout=0)


@pytest.mark.parametrize("how", HOW)
async def test_closing_ends_the_waits_and_a_closed_simulator_refuses_new_ones(how: str) -> None:
    sim = make()
    await sim.start()
    never = await start_wait(sim, lambda: sim.stats.creates >= 1, how)
    told: list[str] = []
    held = await start_wait(sim, lambda: bool(told), "task")
    told.append("now")  # a change no request reports: looked at once more at close
    await sim.close()
    with pytest.raises(RuntimeError, match="closed"):
        async with asyncio.timeout(5):
            await never
    async with asyncio.timeout(5):
        await held
    # Nothing can change any more: the condition holds at once or never.
    await sim.until(lambda: sim.stats.creates == 0)
    with pytest.raises(RuntimeError, match="closed"):
        async with asyncio.timeout(5):
            await sim.until(lambda: sim.stats.creates >= 1)
    await asyncio.to_thread(sim.until_blocking, lambda: sim.stats.creates == 0, timeout=5)
    with pytest.raises(RuntimeError, match="cannot come true"):
        await asyncio.to_thread(sim.until_blocking, lambda: sim.stats.creates >= 1, timeout=5)


async def test_a_simulator_never_started_is_waited_on_as_respond_serves_it() -> None:
    sim = make()  # in memory, as memory_session uses it
    polled = await start_wait(sim, lambda: sim.stats.polls == 1, "task")
    await sim.respond("GET", "/runbase/api/v1/runs/run_nope", auth(RB_KEY))
    async with asyncio.timeout(5):
        await polled
    with pytest.raises(TimeoutError, match="never started"):
        await asyncio.to_thread(sim.until_blocking, lambda: sim.stats.polls == 2, timeout=0)
