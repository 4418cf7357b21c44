"""RESULTS.md's section on the pool of keys (issue 19): the jobs of ``benchmarks.pool``."""

from __future__ import annotations

from ._format import pct, table
from .pool import DEAR, PRICE_LOAD
from .results import Results

__all__ = ["pool_section"]


def _shown(count: int | None) -> str:
    return "-" if count is None else str(count)


def pool_section(results: Results) -> list[str]:
    """Issue 19: a pool of three keys on two sellers (``benchmarks.pool``)."""
    lines = [
        "## 13-15. A pool of keys and sellers",
        "",
        "One simulator serves three keys, two Runbase keys and one API in One key, each "
        "with Runbase's limit (20 requests per 10 s, creates and polls together), rejected "
        "requests counted; one `Session(lanes=[...])` over them, runs of 3-10 s. "
        "*combined*: `as_completed` over the prompts, routing `earliest`; efficiency is the "
        "ideal wall time (2 requests per result at the pool's combined limit, 3x one "
        "key's) over the measured one. *closure*: the same job; once a third of the runs "
        "exist, the API in One key's credits run out (its balance set to what it spent: "
        "402 next); the ideal counts the later runs at the two remaining lanes' limit "
        "(the closed lane still polls its runs in flight on its own budget, which "
        "flatters this efficiency by a few percent). "
        f"*price-first*: routing `cheapest`, API in One at its published 10 credits, the "
        f"Runbase lanes at {DEAR['medium']}; runs arrive evenly at {PRICE_LOAD:g} of the "
        "cheap lane's budget. Creates per lane and *paid twice* (runs created beyond the "
        "first for one prompt, over every key) are the simulator's counts.",
        "",
    ]
    lines += table(
        [
            "job",
            "routing",
            "resolved once",
            "errors",
            "wall s",
            "ideal s",
            "**efficiency**",
            "**429 share**",
            "requests",
            "paid twice",
            "creates per lane",
            "spent per lane",
        ],
        (
            [
                r.case,
                r.routing,
                f"{r.resolved_once}/{r.runs}" + (", cut off" if r.capped else ""),
                ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "0",
                f"{r.wall:.2f}",
                # Steady arrivals set price-first's pace: no efficiency to speak of.
                "-" if r.load else f"{r.ideal:.2f}",
                "-" if r.load else f"**{r.efficiency:.2f}**",
                f"**{pct(r.share_429)}**",
                str(r.requests),
                str(r.duplicates),
                ", ".join(f"{lane.label} {lane.creates}" for lane in r.lanes),
                ", ".join(
                    f"{lane.label} {'unknown' if lane.spent is None else f'{lane.spent:g}'}"
                    for lane in r.lanes
                ),
            ]
            for r in results.pool
        ),
    )
    for r in results.pool:
        if r.closed_at is not None:
            lines += [
                "",
                f"- closure: the credits ran out {r.closed_at:.2f} s in, after "
                f"{r.created_before} runs ({sum(lane.refused for lane in r.lanes)} create(s) "
                "refused 402, each moved to another lane). Requests the two remaining lanes "
                f"had admitted in the window before it: {_shown(r.before)}; per window after it "
                f"(their limit: {r.remaining_limit}): "
                f"{', '.join(map(str, r.after)) or '-'}; runs created per window: "
                f"{', '.join(map(str, r.creates_after)) or '-'}.",
            ]
        if r.case == "price-first":
            dear = [lane for lane in r.lanes if lane.creates and lane is not r.lanes[-1]]
            where = (
                ", ".join(f"{lane.creates} to {lane.label}" for lane in dear)
                if dear
                else "none: every create went to the cheap lane"
            )
            lines += [
                "",
                f"- price-first: creates that went elsewhere than the cheap lane: {where}.",
            ]
    lines += ["", "Each lane's limiter and duration model at the end of each job:", ""]
    lines += [f"- {r.case}: {r.diagnostics}" for r in results.pool]
    lines.append("")
    return lines
