"""Read-only views of a session's rate limiter and poll scheduler, for monitoring.

``session.limiter`` and ``session.scheduler`` return these, so a caller can
watch the budget and the polls without reaching the objects that act.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._budget import Limiter
    from ._scheduler import PollScheduler

__all__ = ["LimiterView", "SchedulerView"]


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
