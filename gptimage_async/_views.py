"""Read-only views of a session's rate limiter, poll scheduler and lanes, for monitoring.

``session.limiter``, ``session.scheduler`` and ``session.lanes`` return these,
so a caller can watch the budget, the polls and the lanes' health without
reaching the objects that act.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._pool import DEFAULT_QUALITY, LaneState

if TYPE_CHECKING:
    from ._budget import Limiter
    from ._exceptions import GPTImageError
    from ._pool import Lane, LaneHealth
    from ._scheduler import PollScheduler

__all__ = ["LaneStatus", "LimiterView", "SchedulerView", "lane_status"]


@dataclass(frozen=True, slots=True)
class LaneStatus:
    """One lane of a session as it is at one moment (``session.lanes``); frozen.

    ``label`` is the user's name for the lane (default ``lane``); ``lane`` is
    ``"provider:fingerprint"``, the name ``Run.lane``, the journal and the
    manifest give it (``fingerprint``: 12 hex digits of a keyed hash of the
    API key, never the key); ``base_url`` its API root; ``prices`` its known
    price per image by quality, in the pool's unit (a quality missing has no
    known price). ``state`` is ``LaneState.OPEN``, ``COOLING`` (after a 5xx or
    no answer, until ``cooling_until``, event-loop seconds) or ``CLOSED`` for
    new creates (``cause``: the 401, 402, 403 or ``USAGE_EXCEEDED`` error that
    closed it, until ``closed_until``; ``_pool._failover``).
    """

    label: str
    lane: str
    provider: str
    fingerprint: str
    base_url: str
    prices: Mapping[str, float]
    state: LaneState
    cause: GPTImageError | None = None
    cooling_until: float | None = None
    closed_until: float | None = None

    def price(self, quality: str | None = None) -> float | None:
        """The price of one image at ``quality`` (``None``: medium); ``None`` if unknown."""
        return self.prices.get(quality or DEFAULT_QUALITY)


def lane_status(spec: Lane, health: LaneHealth, now: float) -> LaneStatus:
    """The ``LaneStatus`` at ``now`` of the lane ``spec`` whose health is ``health``."""
    state = health.state(now)  # first: it ends a closure that has expired
    return LaneStatus(
        label=spec.label,
        lane=spec.name,
        provider=spec.provider,
        fingerprint=spec.fingerprint,
        base_url=spec.base_url,
        prices=spec.prices,
        state=state,
        cause=health.cause,
        cooling_until=health.cooling_until if state is LaneState.COOLING else None,
        closed_until=health.closed_until if state is LaneState.CLOSED else None,
    )


class LimiterView:
    """A read-only view of a session's rate limiter (``session.limiter``).

    ``rate`` is the limiter's current belief about the key's limit, in
    requests per second (it learns from 429s and from saturated windows);
    ``interval`` the seconds between two requests at the current pace;
    ``per`` the window of the belief, in seconds; ``waiting`` the requests
    queued for a slot. Values are read live, each time.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter

    @property
    def rate(self) -> float:
        """The believed limit, in requests per second."""
        return self._limiter.rate

    @property
    def interval(self) -> float:
        """Seconds between two requests at the current pace."""
        return self._limiter.interval

    @property
    def per(self) -> float:
        """The window of the belief, in seconds."""
        return self._limiter.window

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return self._limiter.waiting

    @property
    def shared(self) -> bool:
        """True when the budget is shared with other processes through Redis (``redis=``)."""
        return self._limiter.shared is not None

    @property
    def redis_errors(self) -> int:
        """Redis calls that failed (each paced locally instead, as a fallback); 0 if not shared."""
        return self._limiter.redis_errors

    def __repr__(self) -> str:
        return repr(self._limiter)


class SchedulerView:
    """A read-only view of a session's poll scheduler (``session.scheduler``).

    ``len(view)`` and ``in_flight`` are the runs being polled; the repr shows
    what the scheduler has learned of run durations.
    """

    __slots__ = ("_scheduler",)

    def __init__(self, scheduler: PollScheduler) -> None:
        self._scheduler = scheduler

    @property
    def in_flight(self) -> int:
        """Runs being polled."""
        return len(self._scheduler)

    def __len__(self) -> int:
        return len(self._scheduler)

    def __repr__(self) -> str:
        return repr(self._scheduler)
