"""A fake clock for the running event loop, so timing tests never sleep.

Modelled on aiolimiter's test helper ``MockLoopTime``: ``loop.time`` is
patched, so everything that reads the loop's clock (the limiter, the
scheduler, anyio's cancel scopes, ``call_at`` / ``call_later`` timers) sees
fake time. Time moves only when the test says so:

* ``await clock.advance(seconds)`` moves to ``now + seconds``, stopping at
  each timer due on the way so callbacks run at their own due times;
* ``await clock.run(awaitable)`` jumps straight to the next due timer
  whenever nothing else can run, until the awaitable is done: a wait of an
  hour costs no wall time.

>>> async def test_pacing(fake_clock):                    # doctest: +SKIP
...     limiter = RateLimiter(RateLimit(10, 1.0))
...     granted = await fake_clock.run(limiter.acquire())

Auto-advance assumes the test waits on timers only, not on sockets: a real
HTTP request in flight while ``run`` jumps ahead would see its timeouts
fire. Tests that talk to a server move time with ``advance`` and wait for
I/O with ``wait_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from unittest import mock

__all__ = ["FakeClock", "fake_loop_clock"]

T = TypeVar("T")

#: Passes of the event loop ``settle`` allows before deciding the loop spins.
MAX_SETTLE_PASSES = 10_000
#: ``run`` gives up after this much fake time (seconds): a wait this long is a hang.
DEFAULT_RUN_LIMIT = 24 * 3600.0


class FakeClock:
    """Fake time for one running event loop (seconds; starts at ``start``, default 0.0).

    Patch with ``with FakeClock(loop) as clock:`` or the ``fake_clock`` fixture.
    """

    __slots__ = ("_call_at", "_loop", "_patches", "now")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, start: float = 0.0) -> None:
        # The loop's private queues are how "nothing else can run" and "the
        # next timer is due at" are read; every CPython loop has them.
        if not hasattr(loop, "_ready") or not hasattr(loop, "_scheduled"):
            raise TypeError(f"{type(loop).__name__} is not a CPython BaseEventLoop")
        self._loop: Any = loop
        self.now = float(start)
        self._call_at = loop.call_at
        self._patches: list[Any] = [
            mock.patch.object(loop, "time", self.time),
            mock.patch.object(loop, "call_at", self.call_at),  # call_later goes through it
        ]

    def time(self) -> float:
        """The fake loop time, in seconds."""
        return self.now

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        """``loop.call_at``, except the callback never sees a time before ``when``.

        The loop runs timers up to a clock resolution early. With real time
        that passes; with fake time standing still, code that finds itself
        woken "before" its due time and re-arms for it would spin forever.
        """

        def fire() -> None:
            self.now = max(self.now, when)
            callback(*args)

        handle: asyncio.TimerHandle = self._call_at(when, fire, context=context)
        return handle

    def __enter__(self) -> FakeClock:
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *_: object) -> None:
        for patch in reversed(self._patches):
            patch.stop()

    def _next_timer(self) -> float | None:
        """Due time of the earliest live timer, or ``None``."""
        scheduled = self._loop._scheduled
        live = [handle.when() for handle in scheduled if not handle.cancelled()]
        return min(live) if live else None

    def timer_pending(self) -> bool:
        """Whether a timer is set: some task sleeps, rather than waiting on a thread or a socket."""
        return self._next_timer() is not None

    async def settle(self) -> None:
        """Let the loop run everything that is ready or due now, without moving time."""
        loop = self._loop
        for _ in range(MAX_SETTLE_PASSES):
            due = self._next_timer()
            if not loop._ready and (due is None or due > self.now):
                return
            await asyncio.sleep(0)
        raise AssertionError(f"the event loop never went idle; ready: {list(loop._ready)[:3]}")

    async def wait_for(self, predicate: Callable[[], bool], *, real_timeout: float = 10.0) -> None:
        """Run the loop, time standing still, until ``predicate()`` holds (sockets deliver).

        ``real_timeout`` (seconds of wall time, default 10.0) turns a hang into a failure.
        """
        give_up = time.monotonic() + real_timeout  # the real clock: the loop's stands still
        while not predicate():
            if time.monotonic() > give_up:
                raise AssertionError(f"not true after {real_timeout:g} real seconds")
            await asyncio.sleep(0)
        await self.settle()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing each timer at its own due time."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        target = self.now + seconds
        await self.settle()
        while (due := self._next_timer()) is not None and due <= target:
            self.now = max(self.now, due)
            await self.settle()
        self.now = target
        await self.settle()

    async def advance_to(self, when: float) -> None:
        """Move time forward to loop time ``when`` (seconds)."""
        await self.advance(max(0.0, when - self.now))

    async def run(self, awaitable: Awaitable[T], *, limit: float = DEFAULT_RUN_LIMIT) -> T:
        """Await ``awaitable``, jumping to the next timer whenever the loop is idle.

        Raises ``AssertionError`` if the loop goes idle with no timer left (a
        deadlock) or past ``limit`` seconds of fake time.
        """
        task = asyncio.ensure_future(awaitable)
        end = self.now + limit
        try:
            while True:
                await self.settle()
                if task.done():
                    return task.result()
                due = self._next_timer()
                if due is None:
                    raise AssertionError("deadlock: the awaitable waits but no timer is set")
                if due > end:
                    raise AssertionError(f"still waiting after {limit:g} fake seconds")
                self.now = max(self.now, due)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@contextlib.contextmanager
def fake_loop_clock(start: float = 0.0) -> Iterator[FakeClock]:
    """Patch the running loop's clock for the ``with`` block (call inside a coroutine)."""
    with FakeClock(asyncio.get_running_loop(), start=start) as clock:
        yield clock
