"""The fleet's belief: each process learns with ``AdaptiveRate``; Redis keeps the result.

A change is written back with a versioned compare-and-set (``lua/publish.lua``).
A write based on a stale version is refused; the writer then takes the fleet's
belief and applies its own news again on top of it (a 429 is re-judged
against the fleet's last cut, so the fleet cuts at most once per window), or
drops it (an increase judged on a belief that has moved since).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .belief import AdaptiveRate, BeliefState
from .timeline import Timeline

__all__ = ["FleetBelief"]

#: Compare-and-set attempts per change before leaving it to the next one.
CAS_TRIES = 4


class FleetBelief:
    """Keeps one process's ``AdaptiveRate`` and the fleet's belief in Redis in step.

    Every method may raise what redis-py raises (the limiter then falls back).
    """

    def __init__(
        self, belief: AdaptiveRate, timeline: Timeline, clock: Callable[[], float]
    ) -> None:
        self._belief = belief
        self._timeline = timeline
        self._clock = clock
        self._lock = asyncio.Lock()
        self.version = 0
        self._published: BeliefState | None = None

    @property
    def dirty(self) -> bool:
        """True if this process learned something the fleet has not been told."""
        return self._belief.state() != self._published

    async def publish(self, news: Callable[[AdaptiveRate], None] | None = None) -> None:
        """Apply ``news`` (e.g. a 429) to the belief, then write the belief back if it changed."""
        async with self._lock:
            for _ in range(CAS_TRIES):
                if news is not None:
                    news(self._belief)
                state = self._belief.state()
                if state == self._published:
                    return
                written, version, fleet = await self._timeline.publish(self.version, state)
                if written:
                    self.version, self._published = version, state
                    return
                self._take(version, fleet)
                if news is None:
                    return  # an increase judged on a stale belief: the fleet's wins

    async def refresh(self, seen: int | None = None) -> None:
        """Read the fleet's belief unless ``seen`` (a version a reply named) is ours."""
        if seen is not None and seen == self.version:
            return
        async with self._lock:
            version, fleet = await self._timeline.read_belief()
            if version != self.version or fleet is None:
                self._take(version, fleet)
        if fleet is None:
            await self.publish()  # Redis holds none (new, expired, restarted empty): seed it

    def _take(self, version: int, fleet: BeliefState | None) -> None:
        self.version = version
        if fleet is None:
            self._published = None
            return
        self._belief.adopt(fleet, self._clock())
        self._published = self._belief.state()
