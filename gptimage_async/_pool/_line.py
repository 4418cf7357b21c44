"""The line of creates waiting for a lane: first come, first routed.

Only the create at the head of the line asks the routing; the others wait
behind it, so none is overtaken for ever by later ones, and a bulk job's
last creates are its last runs. Owned by one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from .._exceptions import RunTimeoutError

__all__ = ["CreateLine", "timed_out"]


def timed_out(run_timeout: float) -> RunTimeoutError:
    """The error of a create no lane had a free slot for within ``run_timeout`` seconds."""
    return RunTimeoutError(f"no lane had a free slot within run_timeout ({run_timeout:g}s)")


class CreateLine:
    """Creates waiting for a lane, in arrival order (``len()``: how many)."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()

    def __len__(self) -> int:
        return len(self._queue)

    async def turn(self, deadline: float) -> asyncio.Future[None]:
        """Join the line; return the ticket once it is at the head (give it to ``leave``).

        Raises ``TimeoutError`` when the turn has not come by ``deadline``
        (the loop's clock, seconds); the ticket has then left the line.
        """
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(ticket)
        if self._queue[0] is ticket:
            return ticket
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(ticket)
        except BaseException:
            self.leave(ticket)
            raise
        return ticket

    def leave(self, ticket: asyncio.Future[None]) -> None:
        """Take ``ticket`` out of the line; if it was the head, the next create's turn comes."""
        queue = self._queue
        if queue and queue[0] is ticket:
            queue.popleft()
            if queue and not queue[0].done():
                queue[0].set_result(None)
        else:
            with contextlib.suppress(ValueError):  # already gone
                queue.remove(ticket)
