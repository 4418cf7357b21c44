"""Issue 19's pool rows of the Targets table: three keys and two sellers in one job.

Built from the rows ``benchmarks.pool`` measures (``scenarios.PoolRow``): the
combined job's efficiency (at two time scales), a lane closing mid-job, and
price-first routing with spare capacity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._format import pct
from .pool import MILD_CASE
from .scenarios import WINDOW, PoolRow

if TYPE_CHECKING:
    from .targets import Target

__all__ = ["POOL_CHEAP_SHARE", "POOL_EFFICIENCY", "POOL_RECOVERY_WINDOWS", "pool_targets"]

#: Issue 19, a pool of keys: efficiency against the pool's combined limit, windows
#: after a lane closes before the others run at their combined limit, and the share
#: of creates on the cheap lane under price-first routing with spare capacity.
POOL_EFFICIENCY = 0.95
POOL_RECOVERY_WINDOWS = 1
POOL_CHEAP_SHARE = 0.95


def _per_lane(row: PoolRow) -> str:
    return ", ".join(f"{lane.label} {lane.creates}" for lane in row.lanes)


def pool_targets(pool: Iterable[PoolRow]) -> list[Target]:
    """Issue 19's rows: three keys, two sellers (``benchmarks.pool``)."""
    from .targets import Target  # the table's row type; targets.py imports this module

    out: list[Target] = []
    rows = {row.case: row for row in pool}
    combined = rows.get("combined")
    if combined is not None:
        out.append(
            Target(
                "pool_efficiency",
                f"13. pool of {len(combined.lanes)} keys: efficiency vs the combined limit "
                f"({len(combined.lanes)}x one key's)",
                f">= {POOL_EFFICIENCY:.2f}",
                f"{combined.efficiency:.2f} (429s {pct(combined.share_429)}; creates "
                f"{_per_lane(combined)})",
                "- (knows one key)",
                combined.efficiency >= POOL_EFFICIENCY and not combined.capped,
                f"{combined.succeeded}/{combined.runs} results in {combined.wall:.2f} s, ideal "
                f"{combined.ideal:.2f} s; {combined.requests} requests "
                f"({2 * combined.succeeded / combined.requests:.2f} = 2 / requests per "
                f"result), {combined.rate_limited} 429s",
            )
        )
    mild = rows.get(MILD_CASE)
    if mild is not None:
        out.append(
            Target(
                "pool_efficiency_mild",
                f"13. the same pool job at time scale {mild.window / WINDOW:g} (a "
                f"{mild.window:g} s window: arrival jitter nearer its real share)",
                f">= {POOL_EFFICIENCY:.2f}",
                f"{mild.efficiency:.2f} (429s {pct(mild.share_429)}; creates {_per_lane(mild)})",
                "-",
                mild.efficiency >= POOL_EFFICIENCY and not mild.capped,
                f"{mild.succeeded}/{mild.runs} results in {mild.wall:.2f} s, ideal "
                f"{mild.ideal:.2f} s; {mild.requests} requests, {mild.rate_limited} 429s",
            )
        )
    closure = rows.get("closure")
    if closure is not None:
        recover = closure.windows_to_recover
        once = closure.resolved_once == closure.runs and not closure.resolved_twice
        # A job too short for a whole window after the closure cannot show recovery.
        measured = bool(closure.after)
        before = "-" if closure.before is None else str(closure.before)
        shown = "never" if recover is None else str(recover)
        if not measured:
            shown = "- (no whole window after it)"
        out.append(
            Target(
                "pool_closure",
                "14. one lane out of credits a third of the way in: runs resolved once / "
                "paid twice / windows to recover the remaining lanes' limit",
                f"all once / 0 / <= {POOL_RECOVERY_WINDOWS}",
                f"{closure.resolved_once}/{closure.runs} / {closure.duplicates} / {shown}",
                "-",
                once
                and closure.duplicates == 0
                and (not measured or (recover is not None and recover <= POOL_RECOVERY_WINDOWS)),
                f"closed after {closure.created_before} runs; requests the remaining lanes "
                f"admitted in the window before it: {before}, per window after it: "
                f"{closure.after} of "
                f"{closure.remaining_limit}; {closure.failed} errors "
                f"({dict(closure.errors) or 'none'})",
            )
        )
    price = rows.get("price-first")
    if price is not None:
        share = price.cheap_share
        out.append(
            Target(
                "pool_price",
                f"15. price-first with spare capacity (arrivals at {price.load:g} of the cheap "
                "lane's budget): share of creates on the cheap lane",
                f">= {pct(POOL_CHEAP_SHARE, 0)}",
                f"{pct(share)} (creates {_per_lane(price)})",
                "-",
                share >= POOL_CHEAP_SHARE,
                f"{price.resolved_once}/{price.runs} resolved, "
                f"{price.duplicates} paid twice, {price.rate_limited} 429s",
            )
        )
    return out
