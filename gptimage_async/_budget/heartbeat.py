"""What keeps a process in touch with its fleet between requests: heartbeat and events.

The heartbeat says the process is alive (its share, should Redis go away, is
one over the processes alive) and notices a belief version it has not read.
The listener takes pauses and belief versions pushed by other processes
through pub/sub, so a 429 seen by one holds every process within a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["HEARTBEAT_EVERY", "heartbeat", "listen", "parse_event", "primary_of"]

#: Seconds between heartbeats (a process counts as alive ALIVE_FOR after one).
HEARTBEAT_EVERY = 1.5


async def heartbeat(beat: Callable[[], Awaitable[None]], *, every: float = HEARTBEAT_EVERY) -> None:
    """Call ``beat`` every ``every`` seconds for good (it handles its own failures)."""
    while True:
        await asyncio.sleep(every)
        await beat()
        cancel_if_swallowed()


def cancel_if_swallowed() -> None:
    """Raise ``CancelledError`` if this task was cancelled and a library turned it into
    an error (redis-py may, mid-connect): a loop that handles errors would run on for good."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def parse_event(data: object) -> tuple[str, float] | None:
    """``(kind, number)`` of a pushed event: ``p`` a pause in seconds, ``v`` a belief version."""
    if isinstance(data, bytes):
        data = data.decode("ascii", "replace")
    if not isinstance(data, str) or " " not in data:
        return None
    kind, _, value = data.partition(" ")
    try:
        return kind, float(value)
    except ValueError:
        return None


async def listen(
    client_of: Callable[[], Any],
    channel: str,
    on_event: Callable[[str, float], None],
    *,
    call_timeout: float,
    retry_every: float,
    on_error: Callable[[], None],
) -> None:
    """Subscribe to ``channel`` for good; resubscribe ``retry_every`` seconds after a drop.

    ``client_of()`` is the client to subscribe through now (it changes after a failover).
    """
    while True:
        pubsub = None
        try:
            pubsub = client_of().pubsub(ignore_subscribe_messages=True)
            async with asyncio.timeout(call_timeout):
                await pubsub.subscribe(channel)
            while True:
                message = await pubsub.get_message(timeout=1.0)
                event = parse_event(message.get("data")) if message is not None else None
                if event is not None:
                    on_event(*event)
        except asyncio.CancelledError:
            raise
        except Exception:
            cancel_if_swallowed()
            on_error()
            await asyncio.sleep(retry_every)
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


async def primary_of(client: Any, call_timeout: float) -> tuple[str, int] | None:
    """``(host, port)`` of the primary a replica follows (``ROLE``); ``None`` for a primary.

    After a failover, a plain URL may name a read-only replica: its primary is
    the one the fleet meets on. Raises what the client raises (``call_timeout`` s).
    """
    async with asyncio.timeout(call_timeout):
        role = await client.execute_command("ROLE")
    role = [r.decode() if isinstance(r, bytes) else r for r in role]
    if role[0] != "slave":
        return None
    return str(role[1]), int(role[2])
