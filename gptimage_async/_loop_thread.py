"""An event loop of its own in a daemon thread, and calls into it from other threads.

``SyncSession`` runs its ``Session`` here. A call made from another thread
(one with no loop, one whose loop is running, any of many) hands a coroutine
to this loop and blocks until it ends, re-raising its error; the caller can
cancel it from its side (a Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

from ._exceptions import SessionClosedError

__all__ = ["Call", "LoopThread", "ctrl_c_interrupts"]

T = TypeVar("T")

#: Seconds between checks, while a call waits, that the loop's thread still runs.
ALIVE_CHECK = 1.0


@contextlib.contextmanager
def ctrl_c_interrupts() -> Iterator[None]:
    """While inside, a Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` in the main thread.

    Python's own handler does that already; but code run by ``asyncio.run``
    (an ``asyncio.Runner``) has asyncio's handler instead, which only cancels
    the main task, and that task cannot run while a blocking call holds its
    thread: the Ctrl-C would wait for the call to end. So, on the main
    thread, asyncio's handler is replaced by Python's for the duration and
    put back after (``signal.signal`` can only be called there; other threads
    never receive a Ctrl-C). Any other handler is the program's own choice
    and is left alone (it runs while the call waits), as are ``SIG_IGN`` and
    ``SIG_DFL``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # a sub-interpreter without signals
        yield
        return
    if not _is_asyncio_handler(previous):
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _is_asyncio_handler(handler: object) -> bool:
    # asyncio.Runner.run installs functools.partial(runner._on_sigint, main_task=...).
    func = handler.func if isinstance(handler, functools.partial) else handler
    return isinstance(getattr(func, "__self__", None), asyncio.Runner)


class Call(Generic[T]):
    """One coroutine run on a ``LoopThread``'s loop for a caller in another thread."""

    __slots__ = ("_alive", "_coro", "_done", "_error", "_result", "_task")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        alive: Callable[[], bool],
    ) -> None:
        self._coro = coro
        self._alive = alive
        self._done = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None
        self._task: asyncio.Task[T] | None = None
        try:
            loop.call_soon_threadsafe(self._start)
        except RuntimeError:  # the loop closed under a racing close()
            coro.close()
            raise SessionClosedError("the SyncSession is closed; create a new one") from None

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._coro)
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self._error = asyncio.CancelledError()
        elif (error := task.exception()) is not None:
            self._error = error
        else:
            self._result = task.result()
        self._done.set()

    def wait(self, timeout: float | None = None) -> T:
        """Block until the coroutine ends; its result, or its error re-raised here.

        A Ctrl-C in the main thread interrupts the wait (``KeyboardInterrupt``);
        the coroutine goes on until cancelled. Raises ``TimeoutError`` after
        ``timeout`` seconds (``None``: no limit).
        """
        while not self._done.wait(ALIVE_CHECK if timeout is None else timeout):
            if timeout is not None:
                raise TimeoutError("the session's loop did not answer in time")
            if not self._alive() and not self._done.is_set():
                # A call that raced a close() and never started: not a hang.
                raise SessionClosedError("the SyncSession was closed; create a new one")
        if self._error is not None:
            error, self._error = self._error, None  # no reference cycle through the traceback
            raise error
        return self._result  # type: ignore[return-value]  # set with _done

    def cancel(self) -> None:
        """Cancel the coroutine (from any thread); ``wait`` then raises ``CancelledError``."""
        task = self._task
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)


class LoopThread:
    """A daemon thread serving an event loop, opened by ``opening`` and served until ``stop()``.

    The constructor blocks until ``opening`` has run on the new loop and
    re-raises its error (the thread then ends). A daemon: a loop nobody
    stopped must not keep the interpreter from exiting (threads are joined
    before ``atexit`` handlers run, so one of those can still stop it).
    Work left on the loop at ``stop()`` is cancelled, as ``asyncio.run`` does.
    """

    __slots__ = ("_failure", "_loop", "_ready", "_stop", "_thread")

    def __init__(self, opening: Coroutine[Any, Any, None], *, name: str) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._main, args=(opening,), name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure:
            self._thread.join()
            raise self._failure.pop()

    def _main(self, opening: Coroutine[Any, Any, None]) -> None:
        # Runner, not run_forever: it cancels leftovers and shuts down async
        # generators and the executor at the end. No SIGINT handler is set off
        # the main thread: a Ctrl-C reaches the caller's wait.
        with asyncio.Runner() as runner:
            try:
                runner.run(self._open(opening))
            except BaseException as exc:  # reported to the constructor's thread
                self._failure.append(exc)
                self._ready.set()
                return
            self._ready.set()
            runner.run(self._serve())

    async def _open(self, opening: Coroutine[Any, Any, None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await opening

    async def _serve(self) -> None:
        assert self._stop is not None
        await self._stop.wait()

    def check_thread(self) -> None:
        """Raise ``RuntimeError`` on the loop's own thread: waiting there would deadlock."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a SyncSession cannot be called from its own event loop (a callback of its "
                "runs); use the async Session there"
            )

    def call(self, coro: Coroutine[Any, Any, T]) -> Call[T]:
        """Start ``coro`` on the loop; ``wait()`` on the returned ``Call`` for its outcome."""
        try:
            self.check_thread()
        except RuntimeError:
            coro.close()
            raise
        assert self._loop is not None
        return Call(self._loop, coro, self._thread.is_alive)

    def run_soon(self, fn: Any) -> None:
        """Call ``fn()`` on the loop, soon (from any thread)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def stop(self, *, join: bool = True) -> None:
        """Stop serving, cancel what is left on the loop, and wait for the thread to end.

        ``join=False``: do not wait (the only choice on the loop's own thread).
        """
        assert self._loop is not None
        assert self._stop is not None
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._stop.set)
        if join:
            self._thread.join()

    @property
    def thread(self) -> threading.Thread:
        """The thread serving the loop."""
        return self._thread

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()
