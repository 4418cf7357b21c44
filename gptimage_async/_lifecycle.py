"""A session's state as its lanes see it: open or not, on which loop, idle or busy.

``Session`` makes one ``Lifecycle`` and passes it down to its lanes, so what
the layers below need of the session above (may I send, on which loop, tell
it when work starts and may have ended, keep what a bulk call has not handed
over) is one small object, and the path of a run goes down the layers only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any, Literal, Protocol

from ._exceptions import SessionClosedError, WrongEventLoopError
from ._images import ImageSource
from ._models import RunStatus
from ._registry import Held, RunRegistry

__all__ = ["Closing", "Lifecycle", "State"]

logger = logging.getLogger("gptimage_async")

State = Literal["new", "open", "closing", "closed"]


class Closing(Protocol):
    """What ``Lifecycle.shut_down`` needs of a lane (``_lane.LaneRuntime``)."""

    async def finish_creates(self) -> None: ...

    async def aclose(self) -> None: ...


class Lifecycle:
    """A session's state as its lanes see it: open or not, its loop, idle or busy.

    ``check_open`` raises ``SessionClosedError`` unless the session is open,
    and ``WrongEventLoopError`` when called from a loop other than the one
    that opened it (asyncio objects cannot cross loops). ``busy`` / ``settled``
    are told when work starts and may have ended; ``idle`` is set while no
    run is tracked and no create is on the wire.
    """

    __slots__ = ("_creating", "_held", "_runs", "idle", "loop", "owner", "state")

    def __init__(self, runs: RunRegistry, owner: ImageSource | None = None) -> None:
        self.state: State = "new"
        # The session results are fetched through (``Result.save`` / ``read``).
        self.owner = owner
        self.loop: asyncio.AbstractEventLoop | None = None
        self.idle: asyncio.Event | None = None
        self._runs = runs
        self._creating: list[Collection[object]] = []
        # Per bulk call running: its runs resolved and not yet handed to its caller.
        self._held: list[Held] = []

    def open(self) -> None:
        """Mark the session open on the running loop.

        Raises ``SessionClosedError`` unless it is new: a session opens once.
        """
        if self.state != "new":
            raise SessionClosedError(
                "this session was already opened; a closed session cannot be reused, "
                "create a new Session"
            )
        self.loop = asyncio.get_running_loop()
        self.state = "open"
        self.idle = asyncio.Event()
        self.idle.set()

    def begin_close(self) -> bool:
        """Mark the session closing; ``False`` when there is nothing to close.

        A session never opened is closed at once, one closing or closed is
        left as it is. Raises ``WrongEventLoopError`` from another loop.
        """
        if self.state in ("closing", "closed"):
            return False
        if self.state == "new":
            self.state = "closed"
            return False
        self.check_loop()
        self.state = "closing"
        return True

    def watch(self, creates: Collection[object]) -> None:
        """Count ``creates`` (a lane's attempts on the wire) as work in flight."""
        self._creating.append(creates)

    def check_loop(self) -> None:
        """Raise ``WrongEventLoopError`` unless called from the loop that opened the session."""
        if self.loop is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            where = "another event loop" if running is not None else "outside any event loop"
            raise WrongEventLoopError(
                f"this Session was opened in one event loop and used from {where}; "
                "its connections and timers belong to the first loop. Open one Session "
                "per event loop (per thread, per asyncio.run)"
            )

    def check_open(self) -> None:
        """Raise unless the session is open and this is its loop."""
        if self.state != "open":
            state = "not open yet" if self.state == "new" else "closed"
            raise SessionClosedError(f"the session is {state}; use 'async with Session(...)'")
        self.check_loop()

    def busy(self) -> None:
        if self.idle is not None:
            self.idle.clear()

    def holding(self) -> Held:
        """A new ``Held``: where a bulk call keeps its resolved runs until its caller has them.

        ``release`` it when the call ends; what it still holds then, or at
        the session's close, was never delivered: it goes to ``runs.undelivered``.
        """
        held = Held(self._runs)
        self._held.append(held)
        return held

    def release(self, held: Held, *, delivered: bool = False) -> None:
        """A bulk call ended: its runs were all ``delivered``, or the rest never will be."""
        self._held = [other for other in self._held if other is not held]
        held.release(delivered)

    def drop_creates(self) -> int:
        """Cancel the creates on the wire (quit at once); return how many there were.

        Their fate is unknown: each may have made a run, paid for, whose id
        is never learned. A WARNING says how many.
        """
        cut = [
            task
            for creates in self._creating
            for task in list(creates)
            # Not one cut already: a second quit must not count it again.
            if isinstance(task, asyncio.Task) and not task.done() and not task.cancelling()
        ]
        for task in cut:
            task.cancel()
        if cut:
            logger.warning(
                "closing at once: %d create(s) on the wire were not waited for; their fate is "
                "unknown (each may have made a run, paid for, whose id was never learned: "
                "check the provider's dashboard)",
                len(cut),
            )
        return len(cut)

    def abandon(self) -> None:
        """End every run still in flight with ``SessionClosedError``; keep and name them.

        They stay in ``runs.abandoned``, each with its run id, and one WARNING
        names them all: after a Ctrl-C it may be the only record of runs paid
        for. A WARNING also names the runs resolved whose bulk call never
        handed them over (a cut ``generate_many``), kept in ``runs.undelivered``.
        """
        for held in self._held:
            held.release()
        self._held.clear()
        undelivered = self._runs.undelivered
        if undelivered:
            logger.warning(
                "closing with %d run(s) resolved that never reached their caller (a bulk call "
                "was cut short; session.runs.undelivered holds them, results included): %s",
                len(undelivered),
                ", ".join(f"{run.run_id} ({run.status.value})" for run in undelivered),
            )
        left = list(self._runs)
        for run in left:
            run._fail(
                SessionClosedError(
                    f"the session was closed before run {run.run_id} was resolved "
                    f"(last seen {run.status.value}); it may still finish: attach() it "
                    "from another session",
                    run_id=run.run_id,
                ),
                RunStatus.ERRORED,
            )
            self._runs._abandon(run)
        if left:
            logger.warning(
                "closing with %d run(s) still in flight; they may still finish, attach() "
                "them from the next process (session.runs.abandoned holds them): %s",
                len(left),
                ", ".join(str(run.run_id) for run in left),
            )

    async def shut_down(self, lanes: Sequence[Closing], tasks: set[asyncio.Task[Any]]) -> None:
        """End the session: let creates on the wire be answered, abandon what is left, close.

        Creates already sent are let finish, so their runs get an id to report;
        then every run still in flight is abandoned (``abandon``), the bulk
        verbs' ``tasks`` are cancelled and each lane is closed. The state is
        ``"closed"`` afterwards, whatever was raised.
        """
        try:
            for lane in lanes:
                await lane.finish_creates()
        finally:
            self.abandon()
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            try:
                for lane in lanes:
                    await lane.aclose()
            finally:
                self.state = "closed"

    def settled(self) -> None:
        if self.idle is not None and not self._runs and not any(self._creating):
            self.idle.set()
