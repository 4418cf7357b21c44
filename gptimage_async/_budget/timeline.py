"""The shared GCRA timeline in Redis: one Lua script per operation, loaded as package data.

The scripts (``lua/*.lua``) keep only the timeline (admit, pause, beat,
leave) and the compare-and-set of the fleet's belief (publish); the rules that
learn the belief run in each process (``belief.AdaptiveRate``). Every time in
Redis is on Redis's clock (``TIME``), so the hosts' clocks never matter:
``Timeline`` converts to and from the event loop's clock with an offset
measured on every reply.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .belief import BeliefState
from .evidence import Evidence
from .keys import BudgetKeys

__all__ = ["Admission", "Timeline", "script_source"]

#: The fleet's learned belief outlives its processes this long (seconds).
BELIEF_TTL = 3 * 24 * 3600.0
#: A process counts as alive this long after its last call or heartbeat (seconds).
ALIVE_FOR = 5.0
#: A create may book a slot this share of an interval ahead (polls: any distance).
CREATE_AHEAD = 0.25
#: A process's "waiting" mark outlives its next expected call by this many
#: intervals plus MARK_SLACK seconds (a dead process blocks creates no longer).
MARK_INTERVALS = 2.0
MARK_SLACK = 0.1
#: A reply sets the clock offset if its round trip was within OFFSET_SLACK
#: seconds of the shortest lately (that one is forgotten after OFFSET_FRESH s).
OFFSET_SLACK = 0.0003
OFFSET_FRESH = 10.0
#: Logs and marks are kept this many windows (at least a minute).
KEEP_WINDOWS = 8.0


@cache
def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua``, read from the installed package."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class Admission:
    """Redis's answer to ``admit``: times converted to the loop's clock (seconds)."""

    admitted: bool
    at: float
    version: int
    interval: float
    slot: str  # the slot's name in the grant log (``admit(released=...)`` takes it out)


def _time(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.6f}"


def _number(text: Any, default: float) -> float:
    if isinstance(text, bytes):
        text = text.decode()
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


class Timeline:
    """The calls a ``SharedLimiter`` makes to Redis, each one round trip of one script.

    ``client`` is a ``redis.asyncio.Redis``; ``timeout`` bounds every call
    (``TimeoutError``); ``clock`` is the event loop's ``time``. Raises
    whatever redis-py raises: the caller decides what an unreachable Redis means.
    """

    def __init__(
        self, client: Any, keys: BudgetKeys, *, me: str, window: float, timeout: float, clock: Any
    ) -> None:
        self.keys = keys
        self.me = me
        self._timeout = timeout
        self._clock = clock
        self._window = window
        self._keep = max(60.0, KEEP_WINDOWS * window)
        self.rebind(client)
        self.offset = 0.0  # Redis's clock minus the loop's (from the best reply lately)
        self._best_at = -math.inf  # when the shortest round trip lately (seconds) was seen
        self.live = 0  # processes alive at the last reply; 0: never heard from Redis
        self.pause_left = 0.0

    def rebind(self, client: Any) -> None:
        """Talk through ``client`` from now on (a new primary after a failover)."""
        self._client = client
        self._best_rtt = math.inf  # another server: another clock
        self._scripts = {
            name: client.register_script(script_source(name))
            for name in ("admit", "pause", "beat", "leave", "publish")
        }

    def to_loop(self, redis_time: float) -> float:
        return redis_time - self.offset

    def to_redis(self, loop_time: float) -> float:
        return loop_time + self.offset

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        async with asyncio.timeout(self._timeout):
            reply = await self._scripts[name](keys=keys, args=args)
        return list(reply) if reply is not None else []

    def _clock_from(self, sent: float, redis_now: Any) -> None:
        # NTP's rule: the reply with the shortest round trip bounds the offset
        # best (within half of it). The fleet's log of send times is only as
        # exact as this, and a loaded host stretches some round trips to ms.
        got = self._clock()
        rtt = got - sent
        offset = _number(redis_now, 0.0) - (sent + got) / 2.0
        if rtt < self._best_rtt or got - self._best_at > OFFSET_FRESH:
            self._best_rtt = rtt
        elif rtt > self._best_rtt + OFFSET_SLACK and abs(offset - self.offset) < rtt:
            return  # a slow reply, and no news: the clocks agree within it
        self._best_at = got
        self.offset = offset

    async def admit(
        self,
        priority: int,
        *,
        more_polls: bool,
        more: bool,
        interval: float,
        grant_ahead: float,
        catch_up: float,
        released: list[str] | None = None,
        sent_at: list[tuple[str, float]] | None = None,
    ) -> Admission:
        """Ask for a slot (see ``lua/admit.lua``); the slot's time is on the loop's clock.

        ``released``: slots booked earlier and given up; ``sent_at``: (slot,
        loop time its request went out) of slots sent since the last call.
        """
        k = self.keys
        sent = self._clock()
        released = released or []
        reply = await self._run(
            "admit",
            [k.timeline, k.belief, k.polls, k.waiting, k.grants, k.procs],
            [self.me, priority, int(more_polls), int(more), repr(interval), catch_up,
             CREATE_AHEAD, grant_ahead, MARK_INTERVALS, MARK_SLACK, ALIVE_FOR, self._keep,
             repr(self._window), len(released), *released, *self._sends(sent_at)],
        )  # fmt: skip
        self._clock_from(sent, reply[6])
        self.live = max(1, int(reply[5]))
        self.pause_left = _number(reply[4], 0.0)
        got = self._clock()
        slot = reply[7].decode() if isinstance(reply[7], bytes) else str(reply[7])
        return Admission(int(reply[0]) == 1, got + _number(reply[1], 0.0), int(reply[2]),
                         _number(reply[3], interval), slot)  # fmt: skip

    def _sends(self, sent_at: list[tuple[str, float]] | None) -> list[str]:
        """(slot, loop time) pairs as the flat (slot, Redis time) list the scripts take."""
        return [x for slot, at in sent_at or () for x in (slot, f"{self.to_redis(at):.6f}")]

    async def sent(self, sent_at: list[tuple[str, float]]) -> None:
        """Log when the requests of these slots really went out (no slot asked for now)."""
        if not sent_at:
            return
        pairs = self._sends(sent_at)
        mapping = {f"{self.me}:{pairs[i]}": float(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        async with asyncio.timeout(self._timeout):
            await self._client.zadd(self.keys.grants, mapping, xx=True)

    async def pause(self, seconds: float, *, refused_at: float | None) -> None:
        """Hold the timeline back ``seconds``; for a 429, log the refused send.

        ``refused_at``: loop time the refused request went out (``None``
        for an outage). ``evidence`` reads the logs back.
        """
        k = self.keys
        sent = self._clock()
        refused = "" if refused_at is None else f"{self.to_redis(refused_at):.6f}"
        reply = await self._run(
            "pause",
            [k.timeline, k.refusals, k.procs],
            [k.events, self.me, repr(seconds), refused, ALIVE_FOR, self._keep],
        )  # fmt: skip
        self._clock_from(sent, reply[2])
        self.pause_left = _number(reply[0], 0.0)
        self.live = max(1, int(reply[1]))

    async def evidence(self, sent_at: float, back: float) -> Evidence:
        """The fleet's logs from ``back`` seconds before ``sent_at`` (loop clock) on."""
        k = self.keys
        low = f"({self.to_redis(sent_at) - back:.6f}"
        async with asyncio.timeout(self._timeout):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zrangebyscore(k.grants, low, "+inf", withscores=True)
                pipe.zrangebyscore(k.refusals, low, "+inf", withscores=True)
                pipe.hget(k.timeline, "since")
                grants, refusals, since = await pipe.execute()
        off = self.offset
        return Evidence(
            sends=sorted(score - off for _, score in grants),
            refusals=sorted(score - off for _, score in refusals),
            since=_number(since, math.inf) - off,
        )

    async def beat(self) -> int:
        """Say this process is alive; return the fleet's belief version."""
        k = self.keys
        sent = self._clock()
        reply = await self._run("beat", [k.timeline, k.belief, k.procs],
                                [self.me, ALIVE_FOR, self._keep])  # fmt: skip
        self._clock_from(sent, reply[3])
        self.live = max(1, int(reply[0]))
        self.pause_left = _number(reply[2], 0.0)
        return int(reply[1])

    async def leave(self) -> None:
        """This process is gone: it waits for nothing and counts as no one alive."""
        k = self.keys
        await self._run("leave", [k.polls, k.waiting, k.procs], [self.me])

    async def publish(
        self, version: int, state: BeliefState
    ) -> tuple[bool, int, BeliefState | None]:
        """Write ``state`` if the fleet's belief is still at ``version``.

        Returns ``(written, version now, the fleet's belief if not written)``;
        a belief Redis no longer holds comes back as ``None``.
        """
        reply = await self._run(
            "publish",
            [self.keys.belief],
            [self.keys.events, version, int(BELIEF_TTL * 1000), repr(state.rate),
             repr(state.margin), "" if state.refused is None else repr(state.refused),
             _time(self.to_redis(state.last_cut)), _time(self.to_redis(state.last_429))],
        )  # fmt: skip
        if int(reply[0]) == 1:
            return True, int(reply[1]), None
        return False, int(reply[1]), self._state(reply[2:])

    async def read_belief(self) -> tuple[int, BeliefState | None]:
        """The fleet's belief and its version (``0, None``: Redis holds none)."""
        async with asyncio.timeout(self._timeout):
            got = await self._client.hmget(
                self.keys.belief, "ver", "rate", "margin", "refused", "cut", "l429"
            )
        return int(_number(got[0], 0.0)), self._state(got[1:])

    def _state(self, fields: list[Any]) -> BeliefState | None:
        rate = _number(fields[0], math.nan)
        if not rate > 0:
            return None
        refused = _number(fields[2], math.nan)
        return BeliefState(
            rate=rate,
            margin=_number(fields[1], 0.0),
            refused=refused if refused > 0 else None,
            last_cut=self.to_loop(_number(fields[3], -math.inf)),
            last_429=self.to_loop(_number(fields[4], -math.inf)),
        )
