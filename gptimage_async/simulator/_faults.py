"""How injected faults look on the wire.

A reset is a real TCP reset: ``SO_LINGER`` with a zero timeout makes the
kernel send RST instead of FIN when the transport is aborted, so the client
sees ``ECONNRESET`` (``aiohttp.ClientOSError``) or an early disconnect
(``ServerDisconnectedError``), exactly as when a load balancer drops it.

A truncated answer is a well-formed HTTP 200 whose ``Content-Length`` matches
a JSON body cut in half: the transport is fine, the JSON is not, which is the
case a client's decoder (not its HTTP stack) must survive.
"""

from __future__ import annotations

import random
import socket
import struct

from aiohttp import web

from gptimage_async.simulator._config import SimulatorConfig
from gptimage_async.simulator._protocol import Dialect, Reply
from gptimage_async.simulator._runs import SimulatedRun, SimulatedRuns

__all__ = [
    "other_run_reply",
    "reset_connection",
    "roll",
    "server_error",
    "truncate",
    "with_bom",
]

_LINGER_ZERO = struct.pack("ii", 1, 0)

_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def roll(rng: random.Random, rate: float) -> bool:
    """Whether a fault with probability ``rate`` fires; rate 0 draws nothing."""
    # Not drawing for disabled faults keeps seeded runs reproducible when an
    # unrelated fault is switched on or off.
    return rate > 0.0 and rng.random() < rate


def server_error(status: int, rng: random.Random) -> Reply:
    """A 5xx as an overloaded gateway sends it: empty, HTML or plain text."""
    reason = _REASONS.get(status, "Server Error")
    style = rng.randrange(3)
    if style == 0:
        return Reply(status)
    if style == 1:
        html = f"<html><body><h1>{status} {reason}</h1></body></html>"
        return Reply(status, html.encode(), "text/html")
    return Reply(status, reason.encode(), "text/plain")


def truncate(reply: Reply) -> Reply:
    """The same answer with its body cut in half."""
    return Reply(reply.status, reply.body[: len(reply.body) // 2], reply.content_type)


def with_bom(reply: Reply) -> Reply:
    """The same answer with a UTF-8 byte order mark before its JSON."""
    return Reply(
        reply.status,
        b"\xef\xbb\xbf" + reply.body,
        reply.content_type,
        reply.headers,
        ok=reply.ok,
        terminal=reply.terminal,
    )


def reset_connection(request: web.Request) -> None:
    """Drop the request's connection with a TCP reset; nothing is sent."""
    transport = request.transport
    if transport is None:  # the client already went away
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


def other_run_reply(
    run: SimulatedRun,
    runs: SimulatedRuns,
    dialect: Dialect,
    now: float,
    config: SimulatorConfig,
    rng: random.Random,
) -> Reply:
    """The answer to a poll of ``run`` about another run of the same key (a mixed-up cache).

    The newest other run of the key and protocol; with none, ``run``'s own
    object under another id. Never marks ``run`` as seen done.
    """
    other = next(
        (
            r
            for r in reversed(runs.runs.values())
            if r is not run and r.protocol == run.protocol and r.key == run.key
        ),
        None,
    )
    if other is not None:
        reply = dialect.status(other, now, config, rng)
    else:
        reply = dialect.status(run, now, config, rng)
        wrong = f'"{run.id}-other"'.encode()
        reply.body = reply.body.replace(f'"{run.id}"'.encode(), wrong)
    reply.terminal = False
    return reply
