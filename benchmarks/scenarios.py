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

TODO(issue 19), the ``pool`` scenario, not built: it needs the pool of keys,
which does not exist yet (a ``Session`` over several lanes). When it does,
measure against one simulator serving three keys (two Runbase keys, one API in
One key), each limited to 20 requests per 10 s, rejected requests counted,
300 runs of 3-10 s, time compressed like the others, ours only (the
hand-written client knows one key):

1. efficiency against the pool's combined limit (3x one key: ideal wall time
   = 2 requests per run over 60 requests per 10 s), target >= 0.95;
2. one lane out of credits a third of the way in (after 100 creates the
   simulator answers that key's creates 402 / 429 ``USAGE_EXCEEDED``): every
   run resolves exactly once, the simulator's ``duplicates`` is 0 (nothing
   paid twice), and the admitted requests per window are back to the two
   remaining lanes' combined limit within one window (count per window as
   ``fleet.fleet`` does);
3. price-first routing with spare capacity (a load below one lane's limit,
   API in One priced at its published 10 credits, the Runbase lanes dearer):
   >= 95% of creates on the cheap lane, counted per key on the simulator.

Rows for RESULTS.md: "pool of 3 keys: efficiency vs the combined limit",
"one lane out of credits: runs resolved once / paid twice / windows to
recover", "price-first with spare capacity: share of creates on the cheap lane".
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
from .in_flight import IN_FLIGHT_SETTLE, PROBE_SLEEP, InFlight, in_flight
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
    "steady_baseline",
    "steady_fleet",
    "steady_ours",
]
