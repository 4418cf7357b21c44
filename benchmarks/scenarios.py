"""The registry of measurements. Each scenario returns plain numbers; ``report`` judges them.

One module per idea:

- ``bulk``: figures 1-3 and 7-10, many runs against a rate-limited simulator
  (efficiency, 429 share, polls per run while the duration model learns);
- ``idle``: single runs one after the other, the budget otherwise idle;
- ``cpu``: client CPU per HTTP exchange against a bare aiohttp loop;
- ``in_flight``: memory and scheduler lateness with 10,000 runs in flight;
- ``steady``: web-app load, requests arriving steadily at a share of the
  budget, for one process, four processes sharing the key through Redis, and
  the hand-written client (issue 22);
- ``fleet`` (run by ``__main__`` apart, it needs Redis): several processes on
  one key, bulk loads.

Bulk, idle and steady scenarios run the simulator in this process, because
detection delay compares the server's ``finishes_at`` with the moment the
caller holds the result, both on one ``time.monotonic`` clock (the steady
fleet's workers read the same system-wide monotonic clock). CPU and memory
scenarios run it in a child process (``_server``), so the server's work stays
out of the client's CPU time and heap.

``pool`` (issue 19): one simulator serving three keys (two Runbase keys, one
API in One key), each limited to 20 requests per 10 s, rejected requests
counted, ours only (the hand-written client knows one key): efficiency
against the pool's combined limit, one lane out of credits a third of the
way in, and price-first routing with spare capacity (``benchmarks.pool``).
"""

from __future__ import annotations

from ._common import (
    BASELINE_CONCURRENCY,
    DEFAULT_LIMIT,
    KEY,
    SEED,
    WINDOW,
    mean,
    percentile,
)
from .bulk import Bulk, bulk_baseline, bulk_ours, bulk_warm, bulk_warm_baseline
from .cpu import CPU_CONCURRENCY, Cpu, cpu_bare, cpu_ours, cpu_pair
from .idle import Idle, idle_baseline, idle_ours
from .in_flight import IN_FLIGHT_SETTLE, IN_FLIGHT_WARMUP, PROBE_SLEEP, InFlight, in_flight
from .pool import PoolRow, pool_closure, pool_combined, pool_price_first
from .steady import (
    DURATION,
    FLEET,
    FLEET_LOAD,
    LOADS,
    WARMUP,
    Steady,
    steady_baseline,
    steady_fleet,
    steady_ours,
)

__all__ = [
    "BASELINE_CONCURRENCY",
    "CPU_CONCURRENCY",
    "DEFAULT_LIMIT",
    "DURATION",
    "FLEET",
    "FLEET_LOAD",
    "IN_FLIGHT_SETTLE",
    "IN_FLIGHT_WARMUP",
    "KEY",
    "LOADS",
    "PROBE_SLEEP",
    "SEED",
    "WARMUP",
    "WINDOW",
    "Bulk",
    "Cpu",
    "Idle",
    "InFlight",
    "PoolRow",
    "Steady",
    "bulk_baseline",
    "bulk_ours",
    "bulk_warm",
    "bulk_warm_baseline",
    "cpu_bare",
    "cpu_ours",
    "cpu_pair",
    "idle_baseline",
    "idle_ours",
    "in_flight",
    "mean",
    "percentile",
    "pool_closure",
    "pool_combined",
    "pool_price_first",
    "steady_baseline",
    "steady_fleet",
    "steady_ours",
]
