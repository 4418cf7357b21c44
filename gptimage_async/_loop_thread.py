"""An event loop of its own in a daemon thread, and calls into it from other threads.

``SyncSession`` runs its ``Session`` here. A call made from another thread
(one with no loop, one whose loop is running, any of many) hands a coroutine
to this loop and blocks until it ends, re-raising its error; the caller can
cancel it from its side (a Ctrl-C).

Every blocking wait goes through ``Call.wait``, the one place that takes a
Ctrl-C on the main thread (``ctrl_c_interrupts``) and that marks the loop
the waiting thread runs, if any, as blocked (``loop_blocked``): work must
not be handed to that loop while it waits, or neither would ever end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Generic, Literal, TypeVar

from ._exceptions import SessionClosedError

__all__ = ["Call", "LoopThread", "ctrl_c_interrupts", "loop_blocked", "serves_sync"]

T = TypeVar("T")

#: Seconds between checks, while a call waits, that the loop's thread still runs.
ALIVE_CHECK = 1.0

logger = logging.getLogger("gptimage_async")

#: The last work of loops stopping themselves (``LoopThread.stop_after``): the
#: loop holds its tasks weakly only.
_last_work: set[asyncio.Task[Any]] = set()


def _sigint_ignored() -> bool:
    try:
        return signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    except (AttributeError, ValueError):  # no SIGINT, or no signals here
        return False


#: SIGINT was ignored when this package was imported: as the process was
#: started, most likely (a shell starts the background jobs of a script,
#: ``python x.py &``, ignoring it), not the program's own later choice.
_SIGINT_IGNORED_AT_START = _sigint_ignored()

#: The loops a ``LoopThread`` serves (a ``SyncSession``'s): held weakly, gone with the loop.
_served: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def serves_sync(loop: asyncio.AbstractEventLoop) -> bool:
    """True for a loop a ``LoopThread`` serves: what runs there was asked for by sync code.

    A result resolved there came from a ``SyncSession``: its notebook caption
    then names the sync way to keep the files (``session.download``).
    """
    return loop in _served


#: Loops whose thread is blocked in ``Call.wait``, with how many waits each.
_blocked: dict[asyncio.AbstractEventLoop, int] = {}
_blocked_lock = threading.Lock()


def loop_blocked(loop: asyncio.AbstractEventLoop) -> bool:
    """True while the thread running ``loop`` is blocked waiting for a ``SyncSession`` call.

    Such a loop runs nothing until the call ends: work handed to it (and
    awaited by that call) would wait forever.
    """
    with _blocked_lock:
        return loop in _blocked


@contextlib.contextmanager
def _blocking() -> Iterator[None]:
    # The loop of the waiting thread, if it runs one (asyncio.run, a notebook cell).
    # The yield stays outside the ``except``: an error raised through it (a
    # Ctrl-C) would otherwise be chained to the RuntimeError ("During
    # handling of the above exception...") in every traceback.
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        yield
        return
    with _blocked_lock:
        _blocked[loop] = _blocked.get(loop, 0) + 1
    try:
        yield
    finally:
        with _blocked_lock:
            if _blocked[loop] > 1:
                _blocked[loop] -= 1
            else:
                del _blocked[loop]


@contextlib.contextmanager
def ctrl_c_interrupts() -> Iterator[None]:
    """While inside, a Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` in the main thread.

    Python's own handler does that already; but code run by ``asyncio.run``
    (an ``asyncio.Runner``) has asyncio's handler instead, which only cancels
    the main task, and that task cannot run while a blocking call holds its
    thread: the Ctrl-C would wait for the call to end. And a script started
    in the background by a shell (``python x.py &`` in a script, ``nohup``)
    ignores SIGINT from its start (POSIX asks the shell to), so a
    ``kill -INT`` did nothing, where the command line stops (see
    ``_cli._signals.catch_early``). So, on the main thread, either is
    replaced by Python's handler for the duration and put back after
    (``signal.signal`` can only be called there; other threads never
    receive a Ctrl-C). Precisely, the handler is taken when it is asyncio's
    (``asyncio.Runner``'s), or when it is ``SIG_IGN`` now and SIGINT was
    already ``SIG_IGN`` when this package was first imported
    (``_SIGINT_IGNORED_AT_START``). Any other handler is the program's own
    choice and is left alone (it runs while the call waits), as are
    ``SIG_DFL`` and a ``SIG_IGN`` set after that import in a process that
    did not start ignoring SIGINT. A process that started ignoring it and
    then sets ``SIG_IGN`` itself cannot be told apart from one that merely
    inherited it: its SIGINT is taken during the call as well.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # a sub-interpreter without signals
        yield
        return
    inherited_ignore = _SIGINT_IGNORED_AT_START and previous == signal.SIG_IGN
    if not (inherited_ignore or _is_asyncio_handler(previous)):
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

    __slots__ = ("_alive", "_cancel", "_coro", "_done", "_error", "_result", "_task")

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
        # Cancel asked for (from any thread); applied once, on the loop.
        self._cancel: Literal["no", "asked", "done"] = "no"
        try:
            loop.call_soon_threadsafe(self._start)
        except RuntimeError:  # the loop closed under a racing close()
            coro.close()
            raise SessionClosedError("the SyncSession is closed; create a new one") from None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._coro)
        self._task.add_done_callback(self._finished)
        if self._cancel == "asked":
            # Cancelled before it started (a Ctrl-C as the call was handed over): after
            # its first step, so that it runs its own clean-up (a close still closes).
            loop.call_soon(self._cancel_once)

    def _cancel_once(self) -> None:
        # Once: a second cancel would cut the clean-up the first one started.
        if self._cancel != "done" and self._task is not None:
            self._cancel = "done"
            self._task.cancel()

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

        A Ctrl-C in the main thread interrupts the wait (``KeyboardInterrupt``,
        see ``ctrl_c_interrupts``); the coroutine goes on until cancelled.
        While it waits, the loop the calling thread runs (if any) counts as
        blocked (``loop_blocked``). Raises ``TimeoutError`` after ``timeout``
        seconds (``None``: no limit).
        """
        with ctrl_c_interrupts(), _blocking():
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
        """Cancel the coroutine (from any thread); ``wait`` then raises ``CancelledError``.

        A call not started yet is cancelled once it has taken its first step.
        """
        if self._cancel == "no":
            self._cancel = "asked"
        task = self._task
        if task is not None:
            task.get_loop().call_soon_threadsafe(self._cancel_once)


class LoopThread:
    """A daemon thread serving an event loop, opened by ``opening`` and served until ``stop()``.

    The constructor blocks until ``opening`` has run on the new loop and
    re-raises its error (the thread then ends); a Ctrl-C stops that wait as
    it stops any call's (``Call.wait``), cancelling the opening. A daemon: a
    loop nobody stopped must not keep the interpreter from exiting (threads
    are joined before ``atexit`` handlers run, so one of those can still
    stop it). Work left on the loop at ``stop()`` is cancelled, as
    ``asyncio.run`` does.
    """

    __slots__ = ("_loop", "_ready", "_stop", "_thread")

    def __init__(self, opening: Coroutine[Any, Any, None], *, name: str) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()  # the loop's creation only: nothing that could take long
        if self._loop is None:
            opening.close()
            self._thread.join()
            raise RuntimeError("the SyncSession's event loop could not be started")
        try:
            self.call(opening).wait()
        except BaseException:
            # A failed opening, or a Ctrl-C: what it left running is cancelled
            # by the stop (and the opening releases what it had opened).
            self.stop()
            raise

    def _main(self) -> None:
        # Runner, not run_forever: it cancels leftovers and shuts down async
        # generators and the executor at the end. No SIGINT handler is set off
        # the main thread: a Ctrl-C reaches the caller's wait.
        try:
            with asyncio.Runner() as runner:
                runner.run(self._serve())
        finally:
            self._ready.set()  # never leave the constructor waiting

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        _served.add(self._loop)
        self._stop = asyncio.Event()
        self._ready.set()
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

    def stop_after(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the loop, then stop it; from the loop's own thread, not waiting.

        The way to close from the loop's own thread (a finalizer that a
        callback there set off), where ``call(...).wait()`` would deadlock. An
        error of ``coro`` is logged (WARNING), not raised. Off a running loop
        (its thread is already ending), ``coro`` is dropped and the loop told to stop.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or loop is not self._loop:
            coro.close()
            self.stop(join=False)
            return
        task = loop.create_task(coro)
        _last_work.add(task)

        def stop(task: asyncio.Task[None]) -> None:
            _last_work.discard(task)
            if not task.cancelled() and task.exception() is not None:
                logger.warning("closing on the loop's own thread failed: %r", task.exception())
            self.stop(join=False)

        task.add_done_callback(stop)

    @property
    def thread(self) -> threading.Thread:
        """The thread serving the loop."""
        return self._thread

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()
