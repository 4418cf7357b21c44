"""The session's read-only views: its lanes, transport, limiter and scheduler.

``SessionViews`` is a base of ``Session``: the properties a monitoring page
or a test reads to see the session's parts as they are now. Each reads the
lanes ``Session._setup`` built and never changes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._exceptions import SessionClosedError
from ._views import LaneStatus, LimiterView, SchedulerView, lane_status

if TYPE_CHECKING:
    from ._budget import Limiter
    from ._lane import LaneRuntime
    from ._router import Router
    from ._scheduler import PollScheduler
    from ._transport import Transport

__all__ = ["SessionViews"]


class SessionViews:
    """``Session``'s monitoring properties (see ``Session``)."""

    # Set by Session._setup.
    _lanes: list[LaneRuntime]
    _router: Router
    _clock: Callable[[], float]

    @property
    def lanes(self) -> tuple[LaneStatus, ...]:
        """The session's lanes as they are now, in pool order (read-only ``LaneStatus``).

        Each has its label, ``lane`` (``"provider:fingerprint"``, as ``Run.lane``
        says), provider, API root, prices, and state: open, cooling or closed
        for new creates (with its cause). A fresh tuple each time: read it again
        to see a change. Works before ``open()`` (every lane then open).
        """
        now = self._clock()
        health = self._router.health
        return tuple(lane_status(lane.spec, health[i], now) for i, lane in enumerate(self._lanes))

    @property
    def transport(self) -> Transport:
        """The ``Transport`` every request of this session goes through.

        Pass it to ``download(..., transport=session.transport)`` so image
        downloads share the session's proxy, user agent and connections (the
        key is sent to the API's origin only). Raises ``SessionClosedError``
        before ``open()``.
        """
        transport = self._lanes[0].transport
        if transport is None:
            raise SessionClosedError("the session is not open")
        return transport

    @property
    def limiter(self) -> LimiterView:
        """A read-only view of the session's rate limiter, for monitoring.

        Raises ``SessionClosedError`` before ``open()``.
        """
        if self._limiter is None:
            raise SessionClosedError("the session is not open")
        return LimiterView(self._limiter)

    @property
    def scheduler(self) -> SchedulerView:
        """A read-only view of the session's poll scheduler, for monitoring.

        Raises ``SessionClosedError`` before ``open()``.
        """
        if self._scheduler is None:
            raise SessionClosedError("the session is not open")
        return SchedulerView(self._scheduler)

    # The first lane's parts (the benchmarks' diagnostics read them).
    @property
    def _limiter(self) -> Limiter | None:
        return self._lanes[0].limiter

    @property
    def _scheduler(self) -> PollScheduler | None:
        return self._lanes[0].scheduler

    @property
    def _transport(self) -> Transport | None:
        return self._lanes[0].transport
