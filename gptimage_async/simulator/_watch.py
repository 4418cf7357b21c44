"""Waiting until the simulator has seen something, with no polling and no sleep.

A test that must act once the server holds a create ("the create is on the
wire") used to look at the counters every few milliseconds of wall time. The
pipeline instead tells its ``Watch`` after each step that changes a counter
(a request arrived, its work was done, its answer went out), and a waiter's
condition is checked right then, on the simulator's own event loop. A waiter
on another loop or thread is woken through that loop's
``call_soon_threadsafe`` or a ``threading.Event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

__all__ = ["Watch"]

_Predicate = Callable[[], bool]


class Watch:
    """Conditions waited on, each checked whenever the simulator's state changed."""

    __slots__ = ("_lock", "_waiting")

    def __init__(self) -> None:
        self._waiting: list[tuple[_Predicate, Callable[[], None]]] = []
        self._lock = threading.Lock()

    def notify(self) -> None:
        """Wake each waiter whose condition now holds (called by the pipeline)."""
        if not self._waiting:
            return
        with self._lock:
            waiting = list(self._waiting)
        for entry in waiting:
            predicate, wake = entry
            if _holds(predicate):
                self._drop(entry)
                wake()

    def _add(self, entry: tuple[_Predicate, Callable[[], None]]) -> None:
        with self._lock:
            self._waiting.append(entry)

    def _drop(self, entry: tuple[_Predicate, Callable[[], None]]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._waiting.remove(entry)

    async def until(self, predicate: _Predicate) -> None:
        """Return once ``predicate()`` holds (bound it with ``asyncio.timeout``)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            # The waiter's loop may have closed meanwhile (another thread's, torn
            # down): nobody to wake then, and the request being served must not fail.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set, done)

        entry = (predicate, wake)
        self._add(entry)  # before the first look: a change in between is not missed
        try:
            if not predicate():
                await done
        finally:
            self._drop(entry)

    def until_blocking(self, predicate: _Predicate, timeout: float) -> None:
        """``until`` for a thread that is not the simulator's loop: blocks it."""
        done = threading.Event()
        entry = (predicate, done.set)
        self._add(entry)
        try:
            if not predicate() and not done.wait(timeout):
                raise TimeoutError(f"the simulator's state did not come true in {timeout:g}s")
        finally:
            self._drop(entry)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _holds(predicate: _Predicate) -> bool:
    # A test's condition may read another thread's state mid-change and fail: it
    # is looked at again on the next change. The request being served goes on.
    try:
        return predicate()
    except Exception:
        return False
