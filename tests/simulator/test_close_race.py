"""A connection that arrives just as a server stops listening is closed, never left to the GC.

asyncio builds an accepted connection's transport a loop turn after the
accept; a ``Server.close()`` in that turn leaves the socket open with no owner
(CPython gh-109564). Its ``ResourceWarning`` surfaced later, in whichever test
the garbage collector ran in. Each case below connects, lets the loop turn
``turns`` times, then closes: one of them lands in that window.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.simulator._listening import close_server

#: The window is one turn wide, a turn or two after the accept: these cover it and its sides.
TURNS = range(6)


def resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize("turns", TURNS)
async def test_the_simulator_closes_a_connection_accepted_as_it_stops(turns: int) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sim = Simulator(SimulatorConfig(rate_limit=None))
        await sim.start()
        with socket.create_connection(("127.0.0.1", sim.port)):  # the kernel completes it
            for _ in range(turns):
                await asyncio.sleep(0)
            await sim.close()
            for _ in range(5):  # whatever the accept left pending runs now
                await asyncio.sleep(0)
        gc.collect()
    assert resource_warnings(caught) == []


@pytest.mark.parametrize("turns", TURNS)
async def test_close_server_closes_a_connection_accepted_as_it_stops(turns: int) -> None:
    def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            for _ in range(turns):
                await asyncio.sleep(0)
            await close_server(server)
            for _ in range(5):
                await asyncio.sleep(0)
        gc.collect()
    assert resource_warnings(caught) == []
