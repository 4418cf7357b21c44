"""How a ``SyncSession`` closes: by ``close()`` or ``with``, when collected, at exit.

Kept apart from the ``SyncSession`` object on purpose: the collector's
finalizer (``weakref.finalize``) must reach the session's loop, thread and
calls without a strong reference to the ``SyncSession``, or it would never
be collected. So everything a close needs lives here, and the ``SyncSession``
only points to it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import warnings
from typing import Any

from ._loop_thread import LoopThread
from ._session import Session

__all__ = ["CLOSE_GRACE", "Closer"]

logger = logging.getLogger("gptimage_async")

#: Seconds ``close`` gives a loop to finish its cancelled work after a Ctrl-C.
CLOSE_GRACE = 30.0


class Closer:
    """A sync session's loop, thread and calls in progress, and the one way to close them."""

    __slots__ = ("__weakref__", "_lock", "closed", "jobs", "session", "thread")

    def __init__(self, session: Session, thread: LoopThread) -> None:
        self.session = session
        self.thread = thread
        #: The tasks of the calls that create runs, on the loop (touched there only).
        self.jobs: set[asyncio.Task[Any]] = set()
        self.closed = False
        self._lock = threading.Lock()
        # This object, not the SyncSession: a session dropped unclosed is then
        # collected (and closed by its finalizer), and one never dropped is
        # still closed when the interpreter exits.
        atexit.register(self.at_exit)

    def close(self, *, cancel: bool, at_once: bool = False) -> None:
        """Close once: wait for (or cancel) calls and runs, then stop the loop and its thread.

        ``at_once``: creates still on the wire are not waited for either (a
        second Ctrl-C asked to quit): their fate is unknown, and a WARNING
        says how many. A Ctrl-C while waiting closes at once too.
        """
        self.thread.check_thread()
        with self._lock:
            if self.closed:
                return
            self.closed = True
        atexit.unregister(self.at_exit)
        call = self.thread.call(self._closing(cancel, at_once))
        try:
            call.wait()
        except KeyboardInterrupt:
            # Stop waiting: the close goes on at once and lets the runs go. The
            # creates on the wire are cut first: the session's own close would
            # otherwise wait for them, cancelled or not.
            self.thread.run_soon(self._quit_now)
            call.cancel()
            # Its end is its cancellation (or a timeout): the Ctrl-C is what is raised.
            with contextlib.suppress(BaseException):
                call.wait(CLOSE_GRACE)
            raise
        finally:
            self.thread.stop()

    def _quit_now(self) -> None:
        for task in self.jobs:
            task.cancel()
        self.session.lifecycle.drop_creates()

    async def _closing(self, cancel: bool, at_once: bool) -> None:
        # The calls of other threads first: waited for, or cancelled (creates
        # waiting for the limiter are dropped; those on the wire are answered
        # and their runs let go by the close). A create left waiting could
        # otherwise be sent while the session shuts down.
        try:
            if cancel or at_once:
                for task in self.jobs:
                    task.cancel()
            if self.jobs:
                await asyncio.wait(list(self.jobs))
            if at_once:
                self._quit_now()
        except asyncio.CancelledError:  # a Ctrl-C during close(): quit at once
            self._quit_now()
            await self.session.aclose(cancel=True)
            raise
        await self.session.aclose(cancel=cancel or at_once)

    def at_exit(self) -> None:
        """The interpreter exits with the session unclosed: close it, letting its runs go."""
        if not self.closed:
            logger.warning(
                "a SyncSession was not closed; closing it at exit (runs in flight are let go)"
            )
            self.close(cancel=True)

    def collected(self) -> None:
        """The ``SyncSession`` was garbage-collected (or the interpreter exits) unclosed."""
        if self.closed:
            return
        warnings.warn(
            f"unclosed SyncSession {self.session.provider} {self.session.base_url}; closing it "
            "(runs in flight are let go). Use 'with SyncSession(...)' or call close()",
            ResourceWarning,
            stacklevel=2,
        )
        if threading.current_thread() is self.thread.thread:
            # Collected on its own loop (a callback dropped the last reference):
            # waiting here would deadlock, so the loop closes and then stops itself.
            with self._lock:
                self.closed = True
            atexit.unregister(self.at_exit)
            self.thread.stop_after(self._closing(cancel=True, at_once=False))
            return
        try:
            self.close(cancel=True)
        except Exception as exc:  # a finalizer must not raise; say why the close failed
            logger.warning("closing an unclosed SyncSession failed: %s", exc)
