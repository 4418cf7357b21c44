"""Waiting until the simulator has seen something, with no polling and no sleep.

A test that must act once the server holds a create ("the create is on the
wire") used to look at the counters every few milliseconds of wall time. The
pipeline instead tells its ``Watch`` after each step that changes a counter
(a request arrived, its work was done, its answer went out), and a waiter's
condition is checked right then, on the simulator's own event loop. A waiter
on another loop or thread is woken through that loop's
``call_soon_threadsafe`` or a ``threading.Event``.

One rule for a condition that raises: whichever check raises (the waiter's
first look or a later one, in the pipeline), the wait ends and the waiter
gets that exception. The request being served when it raised goes on as if
nobody were waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import numbers
import threading
from collections.abc import Callable

__all__ = ["Watch"]

_Condition = Callable[[], object]
_Wake = Callable[[BaseException | None], None]


class _Waiter:
    """One wait: its condition and how to wake it (``None``: it holds; else the error)."""

    __slots__ = ("condition", "wake")

    def __init__(self, condition: _Condition, wake: _Wake) -> None:
        self.condition = condition
        self.wake = wake


class Watch:
    """Conditions waited on, each checked whenever the simulator's state changed.

    Thread-safe: waiters may sit on any loop or thread; ``notify`` and
    ``close`` are called on the simulator's loop.
    """

    __slots__ = ("_closed", "_lock", "_waiting")

    def __init__(self) -> None:
        self._waiting: list[_Waiter] = []
        self._lock = threading.Lock()
        self._closed: str | None = None  # why waiting is over, once it is

    def notify(self) -> None:
        """Wake each waiter whose condition now holds or raises (called by the pipeline).

        Never raises: a condition's exception goes to its waiter, not to the
        request being served.
        """
        if not self._waiting:
            return
        with self._lock:
            waiting = list(self._waiting)
        for waiter in waiting:
            outcome: BaseException | None = None
            try:
                if not _holds(waiter.condition):
                    continue
            except Exception as error:
                outcome = error
            if self._drop(waiter):  # another notify (another thread) may have woken it
                waiter.wake(outcome)

    def close(self, reason: str) -> None:
        """End every wait: a condition that holds now returns, others raise ``RuntimeError``.

        Later waits check their condition once and raise the same way when it
        does not hold. Called by ``Simulator.close``; safe to call twice.
        """
        with self._lock:
            if self._closed is None:
                self._closed = reason
            waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            outcome: BaseException | None
            try:
                held = _holds(waiter.condition)
                outcome = None if held else RuntimeError(f"{reason} before the condition came true")
            except Exception as error:
                outcome = error
            waiter.wake(outcome)

    def _add(self, waiter: _Waiter) -> bool:
        with self._lock:
            if self._closed is not None:
                return False
            self._waiting.append(waiter)
            return True

    def _drop(self, waiter: _Waiter) -> bool:
        with self._lock:
            try:
                self._waiting.remove(waiter)
            except ValueError:
                return False
            return True

    def _after_close(self, condition: _Condition) -> None:
        # Nothing can change any more: the condition holds now or never.
        if not _holds(condition):
            raise RuntimeError(f"{self._closed}: the condition cannot come true any more")

    async def until(self, condition: _Condition) -> None:
        """Return once ``condition()`` is true; see ``Simulator.until`` for the rules."""
        _check_condition(condition)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def wake(outcome: BaseException | None) -> None:
            # The waiter's loop may have closed meanwhile (another thread's, torn
            # down): nobody to wake then, and the request being served must not fail.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done, outcome)

        waiter = _Waiter(condition, wake)
        # Added before the first look: a change in between is not missed.
        if not self._add(waiter):
            self._after_close(condition)
            return
        try:
            if not _holds(condition):
                await done
        finally:
            self._drop(waiter)

    def until_blocking(
        self, condition: _Condition, timeout: float | None, *, hint: str = ""
    ) -> None:
        """``until`` for a thread running no event loop (blocks it): ``Simulator.until_blocking``.

        ``hint`` ends the ``TimeoutError``'s message.
        """
        _check_condition(condition)
        limit = _checked_timeout(timeout)
        _refuse_in_a_running_loop()
        done = threading.Event()
        outcomes: list[BaseException | None] = []

        def wake(outcome: BaseException | None) -> None:
            outcomes.append(outcome)
            done.set()

        waiter = _Waiter(condition, wake)
        if not self._add(waiter):
            self._after_close(condition)
            return
        try:
            if _holds(condition):
                return
            if not done.wait(limit):
                raise TimeoutError(f"the simulator's state did not come true in {limit:g}s{hint}")
        finally:
            self._drop(waiter)
        if outcomes[0] is not None:
            raise outcomes[0]


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


def _holds(condition: _Condition) -> bool:
    try:
        result = condition()
    except StopIteration as error:
        # As a coroutine turns it into RuntimeError (PEP 479); a Future refuses
        # to carry it, and the waiter would never be woken.
        raise RuntimeError("the condition raised StopIteration") from error
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: no "coroutine was never awaited" warning later
        raise TypeError(
            "the condition returned an awaitable; until() checks a plain function "
            "returning a bool (e.g. lambda: sim.stats.creates >= 1)"
        )
    return bool(result)


def _check_condition(condition: object) -> None:
    if not callable(condition):
        raise TypeError(
            f"until() takes a function of no arguments returning a bool, "
            f"not {type(condition).__name__} (e.g. lambda: sim.stats.creates >= 1)"
        )
    if inspect.iscoroutinefunction(condition):
        raise TypeError(
            "until() checks its condition between steps of a request: pass a plain "
            "function, not an async one"
        )


def _checked_timeout(timeout: object) -> float | None:
    """Seconds to wait, or ``None`` for no limit (``None``, ``inf`` or past ``TIMEOUT_MAX``)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    seconds = float(timeout)
    if math.isnan(seconds):
        raise ValueError("timeout must be a number of seconds, not nan")
    if seconds < 0:
        raise ValueError(f"timeout must be 0 or more seconds, not {seconds:g}")
    # threading's waits refuse more (OverflowError); that long is no limit.
    return None if seconds > threading.TIMEOUT_MAX else seconds


def _refuse_in_a_running_loop() -> None:
    # As asyncio.run refuses to start inside a running loop: blocking this
    # thread would freeze its loop, and when that is the simulator's loop the
    # condition could never come true before the timeout.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "until_blocking() was called on a thread running an event loop, which it "
        "would block (the simulator's own loop could not serve meanwhile): "
        "await Simulator.until(condition) there instead"
    )
