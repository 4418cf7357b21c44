"""A pool of lanes: several keys and sellers behind one session (issue 19).

The parts that need no network, each a small module (pure but for ``_line``):

* ``_lanes``: ``Lane`` (provider, key, base URL, rate belief, prices, label)
  and ``Pool`` (lanes, routing, spend cap), checked before anything is sent;
* ``_routing``: which lane a ready create goes to (``route``);
* ``_failover``: what an error does to its lane and to its create
  (``failover``, ``LaneHealth``, ``cannot_connect``);
* ``_accepts``: which lanes accept a request (``refusals``, ``check_request``);
* ``_spend``: reserve / commit / release / refund with a cap (``SpendLedger``);
* ``_pool_file``: the CLI's pool file (``load_pool_file``);
* ``_line``: the creates waiting for a lane, first come first routed (``CreateLine``).

Each module's docstring states its rules; ``docs/pool.md`` shows them together.
"""

from __future__ import annotations

from ._accepts import check_request, refusals
from ._failover import (
    CLOSED_TTL,
    CLOSING_ERRORS,
    COOL_BASE,
    COOL_JITTER_FLOOR,
    COOL_MAX,
    UNREACHABLE_AFTER,
    CreateMove,
    Failover,
    HealthPolicy,
    LaneAction,
    LaneHealth,
    LaneState,
    cannot_connect,
    failover,
)
from ._lanes import (
    DEFAULT_PRICES,
    DEFAULT_QUALITY,
    FINGERPRINT_DIGITS,
    OLD_FINGERPRINT_DIGITS,
    REFUNDS_FAILED_RUNS,
    ROUTINGS,
    Lane,
    Pool,
    Routing,
    lane_fingerprint,
    lane_state_file,
    same_lane,
)
from ._pool_file import POOL_FILE_FIELDS, load_pool_file, parse_pool, parse_rate
from ._routing import (
    ATTEMPT_MET,
    CHEAP_HORIZON,
    CHEAP_HORIZON_SHARE,
    Exhausted,
    Go,
    LaneView,
    Route,
    Wait,
    lane_view,
    route,
    tell_met,
    what_it_met,
)
from ._spend import CreateSpend, LaneSpend, PoolStats, SpendLedger, SpendSnapshot, SpendToken

__all__ = [
    "ATTEMPT_MET",
    "CHEAP_HORIZON",
    "CHEAP_HORIZON_SHARE",
    "CLOSED_TTL",
    "CLOSING_ERRORS",
    "COOL_BASE",
    "COOL_JITTER_FLOOR",
    "COOL_MAX",
    "DEFAULT_PRICES",
    "DEFAULT_QUALITY",
    "FINGERPRINT_DIGITS",
    "OLD_FINGERPRINT_DIGITS",
    "POOL_FILE_FIELDS",
    "REFUNDS_FAILED_RUNS",
    "ROUTINGS",
    "CreateMove",
    "CreateSpend",
    "Exhausted",
    "Failover",
    "Go",
    "HealthPolicy",
    "Lane",
    "LaneAction",
    "LaneHealth",
    "LaneSpend",
    "LaneState",
    "LaneView",
    "Pool",
    "PoolStats",
    "Route",
    "Routing",
    "SpendLedger",
    "SpendSnapshot",
    "SpendToken",
    "UNREACHABLE_AFTER",
    "Wait",
    "cannot_connect",
    "check_request",
    "failover",
    "lane_fingerprint",
    "lane_state_file",
    "lane_view",
    "load_pool_file",
    "parse_pool",
    "parse_rate",
    "refusals",
    "route",
    "same_lane",
    "tell_met",
    "what_it_met",
]
