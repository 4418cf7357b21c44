"""Issue 22's fleet rows of the Targets table: four processes on one key through Redis.

Built from the rows ``benchmarks.fleet`` measures (``fleet.Row``): the shared
fleet's even and skewed loads, each judged on its efficiency and 429 share.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._format import pct

if TYPE_CHECKING:
    from .fleet import Row
    from .targets import Target

__all__ = ["FLEET_429", "FLEET_EFFICIENCY", "fleet_targets"]

#: Issue 22: a fleet sharing one key through Redis, as efficient as one process
#: (issue 13's bulk target), with as few 429s.
FLEET_EFFICIENCY = 0.95
FLEET_429 = 0.01
#: Losses of the grant log named in a missed row's reason, largest first.
LOSSES_SHOWN = 3


def _kind(load: tuple[int, ...]) -> str:
    return "even" if len(set(load)) == 1 else "skewed"


def _why(row: Row) -> str:
    losses = sorted(
        ((k, v) for k, v in row.losses.items() if k != "ideal" and v > 0.0),
        key=lambda kv: -kv[1],
    )[:LOSSES_SHOWN]
    where = ", ".join(f"{k} {pct(v)}" for k, v in losses) or "no grant log"
    return (
        f"{row.resolved}/{sum(row.load)} resolved in {row.wall:.2f} s, ideal {row.ideal:.2f} s; "
        f"{row.requests} requests ({row.polls} polls, {row.rate_limited} 429s); "
        f"largest losses of the wall time (grant log): {where}"
    )


def fleet_targets(rows: Iterable[Row]) -> list[Target]:
    """One row per load of the shared fleet (``mode == "shared"``); other modes are not judged."""
    from .targets import Target  # targets imports this module

    out: list[Target] = []
    for row in rows:
        if row.mode != "shared":
            continue
        out.append(
            Target(
                "fleet",
                f"16. {len(row.load)} processes, one key, Redis, {_kind(row.load)} load "
                f"({' / '.join(map(str, row.load))} runs): efficiency, 429 share",
                f">= {FLEET_EFFICIENCY:.2f}, 429s <= {pct(FLEET_429, 0)}",
                f"{row.efficiency:.2f}, 429s {pct(row.share_429)}",
                "-",
                row.efficiency >= FLEET_EFFICIENCY
                and row.share_429 <= FLEET_429
                and row.resolved == sum(row.load),
                _why(row),
            )
        )
    return out
