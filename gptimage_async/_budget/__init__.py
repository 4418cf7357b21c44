"""A provider key's request budget: the belief about its limit, and the limiters that pace it.

Where each idea lives:

* ``protocol``: ``Limiter`` (what the layers above call) and the priorities.
* ``belief``: ``AdaptiveRate``, the rules that learn the key's limit (once, in Python).
* ``local``: ``RateLimiter``, the budget kept in this process (GCRA, no burst).
* ``shared``: ``SharedLimiter``, the budget shared through Redis; with
  ``queue`` (this process's waiters and leases), ``timeline`` and ``lua/``
  (the GCRA timeline in Redis), ``fleet`` (the belief's compare-and-set),
  ``fallback`` (pacing alone while Redis is away), ``heartbeat``, ``keys``
  (Redis key names, keyed hashes) and ``options`` (the ``redis=`` option).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._models import RateLimit
from .belief import AdaptiveRate
from .fleet_scouts import FleetColdStart
from .keys import base_url_id, budget_id
from .local import RateLimiter
from .options import DEFAULT_REDIS_TIMEOUT, check_redis_option, redact_url
from .protocol import (
    PRIORITY_CREATE,
    PRIORITY_LAST_CREATE,
    PRIORITY_POLL,
    Limiter,
    SharedBudget,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_REDIS_TIMEOUT",
    "PRIORITY_CREATE",
    "PRIORITY_LAST_CREATE",
    "PRIORITY_POLL",
    "AdaptiveRate",
    "FleetColdStart",
    "Limiter",
    "RateLimiter",
    "SharedBudget",
    "base_url_id",
    "budget_id",
    "check_redis_option",
    "make_limiter",
    "redact_url",
]


def make_limiter(
    belief: RateLimit,
    *,
    provider: str,
    api_key: str,
    redis: str | Redis | None,
    timeout: float = DEFAULT_REDIS_TIMEOUT,
) -> Limiter:
    """The session's limiter: a local ``RateLimiter``, or a ``SharedLimiter`` when ``redis`` is set.

    Without ``redis`` the redis package is never imported. With it, raises
    ``ConfigurationError`` if redis-py is not installed (the extra
    ``gptimage-async[redis]``) or the URL is not a ``redis://``, ``rediss://``
    or ``unix://`` URL. Call it inside the running loop (its clock is the limiter's).
    """
    if redis is None:
        return RateLimiter(belief)
    from .shared import SharedLimiter

    return SharedLimiter(belief, provider=provider, api_key=api_key, redis=redis, timeout=timeout)
