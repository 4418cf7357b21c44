"""The creates of one blocking ``SyncSession`` call, and how a Ctrl-C stops them.

Runs on the session's loop. It uses the ``Session``'s public verbs only
(``submit`` with ``on_send``, ``tail_size``, ``limiter``), so that creates on
the wire, and so the runs paid for, are known when a stop comes.
"""

from __future__ import annotations

import asyncio
import functools

import anyio

from ._bulk import Sender
from ._exceptions import GPTImageError, SessionClosedError
from ._models import ImageRequest, Result
from ._registry import Held
from ._run import Run
from ._session import Session

__all__ = ["Job"]


class Job:
    """The creates of one blocking call. ``stop()`` sends no more of them.

    The command line's rule for Ctrl-C: creates still waiting (for the rate
    limiter, or to be sent again) are dropped; creates on the wire are let be
    answered, so that every run paid for has an id to report; waits for
    results end at once (the runs carry on at the provider). A job stopped
    before it finished raises ``CancelledError``: the caller re-raises its
    ``KeyboardInterrupt`` instead.
    """

    __slots__ = ("_at_end", "_following", "_sender", "created", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        # The bulk engine's clean stop (_bulk.Sender), as batches and the CLI use it.
        self._sender = Sender(session.submit)
        self._following: set[anyio.CancelScope] = set()
        #: Runs this call created, in the order the provider accepted them.
        self.created: list[Run] = []
        self._at_end: list[str] | None = None

    def ended(self) -> None:
        """Note each created run's state as the call ends (call on the loop, at its end).

        ``report`` then tells what the call left, as the session's views held
        it at that moment: a run ending later, while the main thread reads, is
        not reported as ended before the views know it. Only a stopped call
        is reported (a Ctrl-C stops the job first), so only its states are kept.
        """
        if self.stopping:
            self._at_end = [f"  {run.id}  {_state_at_stop(run)}" for run in self.created]

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._sender.stopping

    @property
    def on_wire(self) -> int:
        """Creates sent and not answered yet: their runs' ids are not known."""
        return self._sender.on_wire

    def stop(self) -> None:
        """Send no more creates and stop waiting for results (call on the loop)."""
        self._sender.stop()
        for scope in list(self._following):
            scope.cancel()

    async def create(self, request: ImageRequest, *, last: bool = False) -> Run | None:
        """``Session.submit``; ``None`` if the job stopped before the create was sent."""
        run = await self._sender.send(request, last=last)
        if run is not None:
            self.created.append(run)
        return run

    async def follow(self, run: Run) -> Result | None:
        """The run's result (its typed error raised); ``None`` if the job stopped first."""
        with anyio.CancelScope() as following:
            self._following.add(following)
            if self.stopping:
                following.cancel()
            try:
                result = await run
            finally:
                self._following.discard(following)
            return result
        return None

    async def submit(self, request: ImageRequest) -> Run:
        """``SyncSession.submit``: the run, once created."""
        run = await self.create(request)
        if run is None:
            raise asyncio.CancelledError
        return run

    async def generate(self, request: ImageRequest) -> Result:
        """``SyncSession.generate``: the run's result."""
        result = await self.follow(await self.submit(request))
        if result is None:
            raise asyncio.CancelledError
        return result

    async def generate_many(
        self,
        prepared: list[ImageRequest | GPTImageError],
        *,
        return_exceptions: bool,
        window: int,
    ) -> list[Result | GPTImageError]:
        """``SyncSession.generate_many``: at most ``window`` runs in flight; input order.

        Invalid requests come in as their errors. The first failure, unless
        ``return_exceptions``, stops the job (as a Ctrl-C does) and is raised.
        """
        out: list[Result | GPTImageError | None] = [
            item if isinstance(item, GPTImageError) else None for item in prepared
        ]
        todo = [(i, item) for i, item in enumerate(prepared) if isinstance(item, ImageRequest)]
        room = asyncio.Semaphore(window)
        failure: list[GPTImageError] = []
        # Runs ended and not yet returned: a job cut short leaves them in
        # session.runs.undelivered, as Session.generate_many does.
        life = self.session.lifecycle
        held = life.holding()

        async def one(index: int, request: ImageRequest, last: bool) -> None:
            run: Run | None = None
            try:
                run = await self.create(request, last=last)
                out[index] = await self.follow(run) if run is not None else None
            except GPTImageError as exc:
                out[index] = exc
                if not return_exceptions and not failure:
                    failure.append(exc)
                    self.stop()
            finally:
                if run is not None and run.done() and run.id is not None:
                    held.add(run)
                room.release()

        try:
            async with anyio.create_task_group() as tg:
                for n, (index, request) in enumerate(todo):
                    await room.acquire()
                    if self.stopping:
                        break
                    # A bulk job's last creates go ahead of polls, as Session.generate_many's.
                    tail = self.session.tail_size()
                    last = len(todo) > tail and n >= len(todo) - tail
                    tg.start_soon(one, index, request, last)
            if failure:
                raise failure[0]
            if self.stopping:
                raise asyncio.CancelledError
        except BaseException:
            # Runs still in flight at the cut: named too if they end while the session lives.
            for run in self.created:
                if run.done():  # ended after its own task let go of it
                    held.add(run)
                else:
                    run._future.add_done_callback(functools.partial(_add_to, held, run))
            life.release(held)
            raise
        life.release(held, delivered=True)
        assert all(item is not None for item in out)
        return out  # type: ignore[return-value]  # every slot filled, checked above

    def report(self, provider: str, *, cut: bool = False) -> str:
        """What a Ctrl-C leaves behind, as the command line prints it.

        ``cut``: a second Ctrl-C stopped the wait for the creates on the
        wire; how many there were is said, and that their fate is unknown.
        """
        unknown = ""
        if cut and self.on_wire:
            unknown = (
                f"; interrupted again: {self.on_wire} create(s) still on the wire were not "
                f"waited for, their fate is unknown (each may have made a run at {provider}, "
                "paid for, whose id this call never learned: check the provider's dashboard)"
            )
        if not self.created:
            known = "no run is known to have been created" if unknown else "no run was created"
            return f"interrupted: no more creates were sent; {known}{unknown}"
        lines = self._at_end
        if lines is None or cut:  # still running: as things stand now
            lines = [f"  {run.id}  {_state_at_stop(run)}" for run in self.created]
        head = (
            "interrupted: no more creates were sent; runs already created (paid for; "
            f"they may still finish at {provider}: attach() them by id){unknown}:"
        )
        return "\n".join([head, *lines])


def _add_to(held: Held, run: Run, _future: object) -> None:
    held.add(run)


def _state_at_stop(run: Run) -> str:
    if not run.done() or isinstance(run.error, SessionClosedError):
        return "in flight at the stop"
    return run.status.value
