"""A call cancelled before the loop started it still runs its own clean-up.

``SyncSession.close()`` hands its close to the loop's thread and waits; a
Ctrl-C right then cancels the call. Under load the loop may not have started
the call yet: the cancel was lost (the close then waited for every run in
flight, seconds, despite the Ctrl-C). Now a call cancelled early is cancelled
once it has taken its first step, so its ``finally`` (the session's shutdown)
runs. Real threads and a real event loop; no sleeps decide the outcome.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from gptimage_async._loop_thread import LoopThread


async def _nothing() -> None:
    return None


def test_a_call_cancelled_before_it_started_runs_its_clean_up_once() -> None:
    thread = LoopThread(_nothing(), name="test-cancel")
    hold, cleaned = threading.Event(), threading.Event()
    cancels: list[int] = []

    async def closing() -> None:
        try:
            await asyncio.sleep(60)  # a close waiting for runs in flight
        finally:
            cancels.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]
            await asyncio.sleep(0)  # its clean-up awaits too, uncut
            cleaned.set()

    try:
        thread.run_soon(hold.wait)  # the loop is busy: the call below cannot start yet
        call = thread.call(closing())
        call.cancel()
        call.cancel()  # a second Ctrl-C: still one cancel
        hold.set()
        with pytest.raises(asyncio.CancelledError):
            call.wait(timeout=10)
        assert cleaned.is_set() and cancels == [1]
    finally:
        hold.set()
        thread.stop()
