"""Stopping a listening server without leaking the connection it accepted last.

asyncio accepts a connection in one loop turn (``sock.accept()`` in the
listening socket's reader callback) and builds its transport in a task's
first step, a turn or more later. That step attaches the transport to its
``asyncio.Server``, asserting that the server still listens. A
``Server.close()`` in between fails the assertion, which asyncio swallows
(it logs it only in debug mode): the accepted socket is left open, owned by
nothing, until the garbage collector finds it, and its ``ResourceWarning``
lands in whatever code runs then (CPython gh-109564, open as of 3.14). A
client that connects just as a server stops meets that window now and then.

So a server here stops listening only once no accepted connection waits for
that first step: the check and the close run in one step, with no await
between them, so no accept can slip in after the check.
"""

from __future__ import annotations

import asyncio
import inspect

from aiohttp import web

__all__ = ["accepts_attached", "close_runner", "close_server"]

#: Loop turns to wait at most for accepted connections to get their transport:
#: each needs one; more than a few means connections keep arriving (then close anyway).
_MAX_TURNS = 8


async def accepts_attached() -> None:
    """Return once no connection accepted on this loop waits for its transport.

    Waits one loop turn (``asyncio.sleep(0)``) at a time, at most
    ``_MAX_TURNS``. Close the server right after, with no await in between.
    """
    for _ in range(_MAX_TURNS):
        if not any(_accept_not_started(task) for task in asyncio.all_tasks()):
            return
        await asyncio.sleep(0)


def _accept_not_started(task: asyncio.Task[object]) -> bool:
    # The task asyncio's selector loops create for each accepted connection
    # (``BaseSelectorEventLoop._accept_connection2``), before its first step.
    # Another loop (uvloop) has no such task, and then nothing is waited for.
    coro = task.get_coro()
    return (
        inspect.iscoroutine(coro)
        and coro.__qualname__.endswith("._accept_connection2")
        and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
    )


async def close_server(server: asyncio.Server) -> None:
    """``server.close()``, once every connection it accepted has its transport.

    Does not wait for those connections to end (``wait_closed``): their
    handlers are the caller's to end.
    """
    await accepts_attached()
    server.close()


async def close_runner(runner: web.BaseRunner) -> None:
    """``runner.cleanup()``, with no connection left open as it stops listening.

    The sites stop listening once every accepted connection has its
    transport (see above). A connection whose protocol starts a loop turn or
    two later, after ``cleanup`` took its list of connections to close, is
    closed here too.
    """
    server = runner.server
    await accepts_attached()
    for site in list(runner.sites):
        await site.stop()  # closes its listening socket at once: no await before that
    await runner.cleanup()
    if server is None:
        return
    for _ in range(3):  # the accept's task, then its connection_made
        await asyncio.sleep(0)
    for handler in list(server.connections):
        handler.force_close()
