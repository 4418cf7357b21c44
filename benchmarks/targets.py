"""The issues' targets, and each one judged on what the run measured."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._format import efficiency_text, is_ours, ms, pct
from .fleet_targets import fleet_targets
from .pool_targets import pool_targets
from .results import Results
from .scenarios import Bulk, Idle, Steady, mean, percentile

__all__ = ["ADAPT_RUNS", "COLD_RUNS", "FIRST_RUNS", "Target", "targets"]

#: The issues' targets (issue 13 raised them: bulk at 0.95 of the physical limit).
EFFICIENCY_STATED = 0.95
EFFICIENCY_UNKNOWN = 0.90
SHARE_429_STATED = 0.01
SHARE_429_UNKNOWN = 0.05
IDLE_DELAY_SHARE = 0.03
#: Issue 22: the first ``COLD_RUNS`` single runs of a cold session, same measure.
IDLE_COLD_SHARE = 0.04
CPU_THROUGHPUT_SHARE = 0.90
BYTES_PER_RUN = 2048
LATENESS_P99 = 0.020
COLD_POLLS = 1.25
DRIFT_POLLS = 1.15
WARM_POLLS = 1.10
#: After runs get 3x shorter, the detection delay in seconds should not grow (by
#: more than this factor). Its share of the run must grow: on an idle budget the
#: delay's floor is about half a slot of the limiter (25 ms here, 0.5 s in real
#: time), whatever the run's length. A model that did not follow would start
#: polling at the old 2% quantile, after every new run had ended.
SPEEDUP_DELAY = 1.5

#: Single runs after which our duration model is warm (it needs 4 finished runs).
COLD_RUNS = 10
#: The first runs of a session, whose polls per run measure a cold (or warm) start.
FIRST_RUNS = 25
#: Runs after a change of speed within which the poller must have adapted.
ADAPT_RUNS = 30
#: Issue 22, steady arrivals. By share of the budget (the issue's rows): the most mean
#: detection delay / run time at 1/4 (4 requests per run), with the most 429s there;
#: at 1/2 and 3/4 no delay target, only throughput kept (at 3/4 no client can keep
#: more than 0.67: each run needs 2 requests and has 1.33). By share of the key's run
#: capacity (a create and one poll per run; 1/2 of it is 1/4 of the budget): the
#: most delay at 1/2 and 3/4, with throughput kept. Kept is judged against what any
#: client can keep (``Steady.kept_bound``). And how much later four processes on one
#: key may detect than one process on the same load.
STEADY_DELAY = {0.25: 0.05}
STEADY_KEPT_ONLY = (0.5, 0.75)
STEADY_CAPACITY_DELAY = {0.5: 0.08, 0.75: 0.15}
STEADY_429 = 0.01
STEADY_KEPT = 0.95
STEADY_FLEET_DELAY = 1.25


@dataclass(slots=True)
class Target:
    """One target, what each client achieved, and whether ours met it."""

    key: str
    figure: str
    goal: str
    ours: str
    baseline: str
    met: bool
    why: str = ""


def _warm(row: Idle) -> str:
    if row.runs <= 2 * COLD_RUNS:
        return ""
    cold = mean(row.delays[:COLD_RUNS]) / mean(row.durations[:COLD_RUNS])
    warm = mean(row.delays[COLD_RUNS:]) / mean(row.durations[COLD_RUNS:])
    return (
        f"; the first {COLD_RUNS} runs average {pct(cold)} of their duration, the rest {pct(warm)}"
    )


def targets(results: Results) -> list[Target]:
    """Each target the run has figures for, judged on our client's figures."""
    out: list[Target] = []
    ours = [r for r in results.bulk if is_ours(r)]
    theirs = [r for r in results.bulk if not is_ours(r)]

    def best(rows: list[Bulk]) -> str:
        if not rows:
            return "-"
        pick = max(rows, key=lambda r: r.efficiency)
        return f"{efficiency_text(pick)} best ({pick.client.removeprefix('hand-written, ')})"

    for label, rows, goal_eff, goal_429 in (
        ("stated", [r for r in ours if r.belief == "stated"], EFFICIENCY_STATED, SHARE_429_STATED),
        (
            "unknown",
            [r for r in ours if r.belief != "stated"],
            EFFICIENCY_UNKNOWN,
            SHARE_429_UNKNOWN,
        ),
    ):
        if not rows:
            continue
        limits = {r.real_limit for r in rows}
        peers = [r for r in theirs if r.real_limit in limits]
        worst = min(rows, key=lambda r: r.efficiency)
        out.append(
            Target(
                "efficiency",
                f"1. bulk efficiency, limit {label}",
                f">= {goal_eff:.2f}",
                ", ".join(efficiency_text(r) for r in rows),
                best(peers),
                worst.efficiency >= goal_eff,
                f"worst row: budget used {pct(worst.budget_used)}, 2 / requests per result "
                f"{worst.economy:.2f}, {worst.rate_limited} 429s",
            )
        )
        worst = max(rows, key=lambda r: r.share_429)
        out.append(
            Target(
                "share_429",
                f"2. 429 share, limit {label}",
                f"<= {pct(goal_429, 0)}",
                ", ".join(pct(r.share_429) for r in rows),
                "lowest " + (pct(min(r.share_429 for r in peers)) if peers else "-"),
                worst.share_429 <= goal_429,
                f"worst row: {worst.rate_limited} of {worst.requests} requests",
            )
        )
    out += _learning_targets(results)
    out += _steady_targets(results)
    out += pool_targets(results.pool)
    out += fleet_targets(results.fleet_rows)
    idle = {r.client: r for r in results.idle}
    if "gptimage-async" in idle:
        ours_idle = idle["gptimage-async"]
        share = mean(ours_idle.delays) / mean(ours_idle.durations)
        other = idle.get("hand-written")
        out.append(
            Target(
                "idle_delay",
                "3. detection delay, single runs, idle budget",
                f"mean <= {pct(IDLE_DELAY_SHARE, 0)} of run",
                f"{pct(share)} ({ms(mean(ours_idle.delays))})",
                "-" if other is None else pct(mean(other.delays) / mean(other.durations)),
                share <= IDLE_DELAY_SHARE,
                f"{ours_idle.requests / ours_idle.runs:.1f} requests per run, p99 delay "
                f"{ms(percentile(ours_idle.delays, 99))}" + _warm(ours_idle),
            )
        )
        if ours_idle.runs > 2 * COLD_RUNS:
            cold = ours_idle.delay_share(0, COLD_RUNS)
            out.append(
                Target(
                    "idle_cold",
                    f"3. detection delay, first {COLD_RUNS} single runs of a cold session",
                    f"mean <= {pct(IDLE_COLD_SHARE, 0)} of run",
                    f"{pct(cold)} ({ms(mean(ours_idle.delays[:COLD_RUNS]))})",
                    "-" if other is None else pct(other.delay_share(0, COLD_RUNS)),
                    cold <= IDLE_COLD_SHARE,
                    f"the model is ready after 4 runs; runs {COLD_RUNS} and later: "
                    f"{pct(ours_idle.delay_share(COLD_RUNS))}",
                )
            )
    ours_cpu = [r for r in results.cpu if is_ours(r)]
    bare_cpu = [r for r in results.cpu if not is_ours(r)]
    if ours_cpu and bare_cpu:
        throughput = max(r.per_second for r in ours_cpu) / max(r.per_second for r in bare_cpu)
        cpu_ratio = min(r.cpu_per_exchange for r in bare_cpu) / min(
            r.cpu_per_exchange for r in ours_cpu
        )
        out.append(
            Target(
                "cpu",
                "4. throughput vs a bare aiohttp loop",
                f">= {pct(CPU_THROUGHPUT_SHARE, 0)}",
                f"{pct(throughput, 0)} (CPU: {pct(cpu_ratio, 0)})",
                "100% (by definition)",
                throughput >= CPU_THROUGHPUT_SHARE,
                f"best rounds: {min(r.cpu_per_exchange for r in ours_cpu) * 1e6:.0f} us vs "
                f"{min(r.cpu_per_exchange for r in bare_cpu) * 1e6:.0f} us of client CPU "
                "per exchange",
            )
        )
    flight = results.in_flight
    if flight is not None:
        per_run = flight.traced / flight.runs
        out.append(
            Target(
                "memory",
                f"5. memory per in-flight run ({flight.runs:,} in flight)",
                f"<= {BYTES_PER_RUN / 1024:.0f} KB",
                f"{per_run:,.0f} B live heap; {flight.rss / flight.runs:,.0f} B RSS growth",
                "-",
                per_run <= BYTES_PER_RUN,
                "judged on the live heap (tracemalloc); RSS growth shown for reference",
            )
        )
        p99 = percentile(flight.lateness, 99)
        out.append(
            Target(
                "lateness",
                f"6. scheduler lateness p99 ({flight.runs:,} in flight)",
                f"<= {ms(LATENESS_P99)}",
                ms(p99) if flight.lateness else "no polls due",
                "-",
                bool(flight.lateness) and p99 <= LATENESS_P99,
                f"{len(flight.lateness)} planned polls in {flight.window:g} s; event-loop lag "
                f"p99 {ms(percentile(flight.loop_lag, 99))}; full collections in the window: "
                f"{', '.join(ms(p) for p in flight.full_collections) or 'none'}",
            )
        )
    return out


def _first(rows: Iterable[Bulk]) -> str:
    return ", ".join(f"{r.polls_per_run(0, FIRST_RUNS):.2f}" for r in rows) or "-"


def _learning_targets(results: Results) -> list[Target]:
    """Cold start, drift and warm start: polls per run where the model is learning."""
    out: list[Target] = []
    cold = [r for r in results.bulk if is_ours(r) and r.belief == "stated"]
    if cold:
        worst = max(cold, key=lambda r: r.polls_per_run(0, FIRST_RUNS))
        peers = [r for r in results.bulk if not is_ours(r) and r.succeeded]
        out.append(
            Target(
                "cold",
                f"7. polls per run, first {FIRST_RUNS} runs of a cold session",
                f"<= {COLD_POLLS:.2f}",
                _first(cold),
                _first(peers[:1]),
                worst.polls_per_run(0, FIRST_RUNS) <= COLD_POLLS,
                f"worst row: runs {FIRST_RUNS}-{worst.runs} took "
                f"{worst.polls_per_run(FIRST_RUNS):.2f} polls each",
            )
        )
    slow = [r for r in results.drift if r.drift > 1.0 and r.change_at is not None]
    ours_slow = [r for r in slow if is_ours(r)]
    if ours_slow:

        def adapted(r: Bulk) -> float:
            assert r.change_at is not None
            return r.polls_per_run(r.change_at + ADAPT_RUNS)

        def changing(r: Bulk) -> float:
            assert r.change_at is not None
            return r.polls_per_run(r.change_at, r.change_at + ADAPT_RUNS)

        out.append(
            Target(
                "drift",
                f"8. polls per run after a {ours_slow[0].drift:g}x slowdown, from "
                f"{ADAPT_RUNS} runs after it",
                f"<= {DRIFT_POLLS:.2f}",
                ", ".join(f"{adapted(r):.2f}" for r in ours_slow),
                ", ".join(f"{adapted(r):.2f}" for r in slow if not is_ours(r)) or "-",
                max(adapted(r) for r in ours_slow) <= DRIFT_POLLS,
                "the "
                + ", ".join(f"{changing(r):.2f}" for r in ours_slow)
                + f" polls per run of the {ADAPT_RUNS} runs right after the change",
            )
        )
    speed = {r.client: r for r in results.drift_idle}
    mine = speed.get("gptimage-async")
    if mine is not None and mine.change_at is not None:
        after = mine.change_at + COLD_RUNS
        other_idle = speed.get("hand-written")
        before_ms = mean(mine.delays[COLD_RUNS : mine.change_at])
        before_share = mine.delay_share(COLD_RUNS, mine.change_at)
        after_ms = mean(mine.delays[after:])
        other_ms = None if other_idle is None else mean(other_idle.delays[after:])
        out.append(
            Target(
                "speedup",
                f"9. detection delay after a {1 / mine.drift:g}x speed-up, single runs, "
                f"from {COLD_RUNS} runs after it (latency stays honest)",
                f"mean <= {SPEEDUP_DELAY:g}x the delay before",
                f"{ms(after_ms)} ({pct(mine.delay_share(after))} of run) vs {ms(before_ms)} before",
                "-" if other_ms is None else f"{ms(other_ms)}",
                after_ms <= SPEEDUP_DELAY * before_ms,
                f"share of run before the change {pct(before_share)}, "
                f"the first {COLD_RUNS} after it {pct(mine.delay_share(mine.change_at, after))}",
            )
        )
    second = [r for r in results.warm if r.session == "second"]
    ours_second = [r for r in second if is_ours(r)]
    if ours_second:
        worst = max(ours_second, key=lambda r: r.polls_per_run(0, FIRST_RUNS))
        first = [r for r in results.warm if r.session == "first" and is_ours(r)]
        out.append(
            Target(
                "warm",
                f"10. polls per run, first {FIRST_RUNS} runs of a second session (warm start)",
                f"<= {WARM_POLLS:.2f}",
                _first(ours_second),
                _first(r for r in second if not is_ours(r)),
                worst.polls_per_run(0, FIRST_RUNS) <= WARM_POLLS,
                f"the first session's first {FIRST_RUNS}: {_first(first)}",
            )
        )
    return out


def _fraction(load: float) -> str:
    return {0.25: "1/4", 0.375: "3/8", 0.5: "1/2", 0.75: "3/4"}.get(load, f"{load:g}")


def _steady_figure(row: Steady | None) -> str:
    if row is None:
        return "-"
    if not row.judged:
        return f"none resolved (429s {pct(row.share_429)})"
    return (
        f"{pct(row.delay_share)} (429s {pct(row.share_429)}, kept {row.kept:.2f}, "
        f"{row.polls_per_run:.2f} polls/run)"
    )


def _kept_goal(row: Steady) -> float:
    return STEADY_KEPT * row.kept_bound


def _steady_why(row: Steady) -> str:
    return (
        f"at {_fraction(row.load)} of the budget ({_fraction(row.capacity)} of run capacity): "
        f"{row.budget_per_run:.2f} requests of budget per run, {row.resolved}/{row.runs} "
        f"resolved, mean delay {ms(mean(row.delays)) if row.delays else '-'}, "
        f"{row.rate_limited} 429s of {row.requests} requests"
    )


def _steady_targets(results: Results) -> list[Target]:
    """Issue 22's rows: steady arrivals by share of the budget and of run capacity, the fleet."""
    out: list[Target] = []
    one = {r.load: r for r in results.steady if r.processes == 1 and is_ours(r)}
    theirs = {r.load: r for r in results.steady if not r.client.startswith("gptimage-async")}
    for load, goal in STEADY_DELAY.items():
        row = one.get(load)
        if row is None:
            continue
        out.append(
            Target(
                "steady",
                f"11. steady arrivals at {_fraction(load)} of the budget, runs 8-10 s: "
                "mean detection delay / run time",
                f"<= {pct(goal, 0)}, 429s <= {pct(STEADY_429, 0)}",
                _steady_figure(row),
                _steady_figure(theirs.get(load)),
                row.delay_share <= goal and row.share_429 <= STEADY_429,
                _steady_why(row),
            )
        )
    for load in STEADY_KEPT_ONLY:
        row = one.get(load)
        if row is None:
            continue
        bound = (
            ""
            if row.kept_bound >= 1.0
            else f" (0.95 of the {row.kept_bound:.2f} any client can keep)"
        )
        out.append(
            Target(
                "steady_kept",
                f"11. steady arrivals at {_fraction(load)} of the budget "
                f"({row.budget_per_run:.2f} requests per run, 2 needed): throughput kept",
                f"kept >= {_kept_goal(row):.2f}{bound}; no delay target",
                _steady_figure(row),
                _steady_figure(theirs.get(load)),
                row.kept >= _kept_goal(row),
                _steady_why(row),
            )
        )
    for capacity, goal in STEADY_CAPACITY_DELAY.items():
        row = one.get(capacity / 2.0)
        if row is None:
            continue
        out.append(
            Target(
                "steady_capacity",
                f"11. steady arrivals at {_fraction(capacity)} of the key's run capacity "
                f"({_fraction(row.load)} of the budget, {row.budget_per_run:.2f} requests per "
                "run): mean detection delay / run time",
                f"<= {pct(goal, 0)}, kept >= {_kept_goal(row):.2f}",
                _steady_figure(row),
                _steady_figure(theirs.get(row.load)),
                row.delay_share <= goal and row.kept >= _kept_goal(row),
                _steady_why(row),
            )
        )
    for fleet in (r for r in results.steady if r.processes > 1):
        alone = one.get(fleet.load)
        ratio = fleet.delay_share / alone.delay_share if alone is not None else float("nan")
        out.append(
            Target(
                "steady_fleet",
                f"12. {fleet.processes} processes, one key, Redis, steady arrivals at "
                f"{_fraction(fleet.load)} of the budget in all: delay vs one process",
                f"<= {STEADY_FLEET_DELAY:g}x one process's",
                f"{pct(fleet.delay_share)} ({'-' if math.isnan(ratio) else f'{ratio:.2f}'}x; "
                f"429s {pct(fleet.share_429)}, "
                f"kept {fleet.kept:.2f})",
                "-",
                ratio <= STEADY_FLEET_DELAY,
                "one process on the same load: "
                + ("not measured" if alone is None else pct(alone.delay_share))
                + f"; {fleet.resolved}/{fleet.runs} resolved",
            )
        )
    return out
