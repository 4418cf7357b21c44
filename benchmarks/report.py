"""RESULTS.md: the figures, the targets they are held to, the machine and the date."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp

import gptimage_async

from .figures import Figure
from .gallery import GalleryRow, section
from .scenarios import IN_FLIGHT_SETTLE, PROBE_SLEEP, Bulk, Cpu, Idle, InFlight, mean, percentile

__all__ = [
    "ADAPT_RUNS",
    "COLD_RUNS",
    "FIRST_RUNS",
    "Results",
    "Settings",
    "Target",
    "machine",
    "render",
    "targets",
]

#: The issues' targets (issue 13 raised them: bulk at 0.95 of the physical limit).
EFFICIENCY_STATED = 0.95
EFFICIENCY_UNKNOWN = 0.90
SHARE_429_STATED = 0.01
SHARE_429_UNKNOWN = 0.05
IDLE_DELAY_SHARE = 0.03
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

#: What the investigation behind each missed target found, by target key. The
#: computed figures next to each miss come from the run itself; these notes
#: explain the mechanism and were written against the core as of this run.
DIAGNOSIS: dict[str, str] = {
    "efficiency": (
        "Efficiency is *budget used* x *2 / requests per result*, both printed per row. "
        "(a) Limit unknown and really 2x higher: slow start doubles the belief every half "
        "window from the stated 20, so the first half window runs at half the real budget "
        "(~2.5% of a 5-window job). (b) Pacing uses 98.5-99.5% of the budget (the margin "
        "is 0.5% once a saturated window passed without a 429); a second 429 cut (jitter "
        "under load) costs a few percent for the rest of the job. (c) The tail is filled: "
        "a job's last creates go ahead of polls (`Session.tail_size()`), so polls of runs "
        "already done keep the budget busy while its last runs are going."
    ),
    "share_429": (
        "The 429s come from the limiter probing above its belief (see efficiency, (c)) and, "
        "with the real limit 2x lower, from the first windows at the default belief."
    ),
    "idle_delay": (
        "Near the floor the budget sets. A single run gets the slots of its own "
        "duration: at 40 requests per second and 335 ms runs, about 13 polls. Even pacing "
        "(one poll per 25 ms slot) leaves a mean delay of half a slot, ~12.7 ms or 3.8%; "
        "speculative polls now start near the 2% quantile, spread over the likely finish "
        "and, with at most 8 runs in flight, take spare slots saved while little was sent "
        "(never leaving fewer than 2 slots of any window free), which brings warm runs to "
        "3.4-3.5%. Under 3% (10 ms) needs polls every 20 ms wherever a run may end, "
        "150-500 ms here: ~17 polls per run where its duration's budget is ~13 (plus what "
        "was saved before it), and the sliding window forbids borrowing more. The first "
        "10 runs of a session vary most "
        "(3.4-5.1% in two runs): the model is fitted on a handful of runs."
    ),
    "cpu": (
        "Profiled this round (py-spy, ablations). Of ~190 us per exchange against the "
        "bare loop's ~70 us: ~65-80 us is the fresh connection each create opens (connect "
        "with a loopback handshake, transport setup and close, and the collection of the "
        "closed transports; the bare loop with fresh-connection POSTs costs 144-163 us). "
        "It is kept on purpose: a create on a reused keep-alive connection that the server "
        "closed can fail after it was written, and then nobody knows whether it was paid "
        "for. The rest, ~50 us: the create pipeline (shielded task, limiter wait, Run, "
        "decode) ~16 us, the transport wrapper (timer, connection slot, written-or-not "
        "tracking) ~13 us, the duration model (observe, change detector, quantiles, a "
        "refit every 32 runs) ~10 us, the scheduler and limiter (a task per poll) ~10 us, "
        "the stream ~5 us. With fresh connections kept, a library with no overhead at all "
        "would reach about 70/150, i.e. ~50% of the bare loop. A create on a pooled "
        "connection with `Expect: 100-continue` (the body goes only once the server's 100 "
        "proves the connection alive) measured 122 us, but is not built: it needs a "
        "fallback for servers that never send 100, untestable against the real providers."
    ),
    "cold": (
        "Until the duration model has seen 4 runs finish, first polls go after a few create "
        "round trips and then geometrically; in bulk every early run pays that probing."
    ),
    "drift": (
        "The change detector restarts the model a few runs after the change (the row's "
        "diagnostics count the changes), but right after it the model learns only from "
        "the new runs that have *finished*: the short ones. The long ones still in flight "
        "are not in it (they would be right-censored observations), so its 95% quantile "
        "is too low for a while and runs near the tail are polled again, each time 1.25x "
        "later. Speculative polls in the job's idle tail (longer after a slowdown) add to "
        "the figure without costing throughput."
    ),
    "speedup": (
        "With the budget idle, speculative polls find runs done before the old 5% quantile; "
        "the change detector needs a few such runs before the model restarts."
    ),
    "warm": (
        "The second session loads the first one's learned state (rate belief and recent run "
        "durations) from its state file; if none loads, it starts cold."
    ),
    "memory": (
        "The live heap per run holds the Run and its Future, the ImageRequest and prompt, "
        "the id string, the registry entry and its poll heap entries (a re-planned poll "
        "leaves a stale entry, which no longer holds the run, until its time comes), plus "
        "a share of the aiohttp state of polls in flight. RSS growth adds the allocator's "
        "high-water mark from the cold-start poll burst during submission."
    ),
    "lateness": (
        "(Measured this round with `gc.callbacks` and a timer on each event-loop iteration.) "
        "The limiter is not in it: lateness is taken as a poll leaves the heap, and "
        "`run_forever` never waits for the limiter there (a poll without a free slot waits in "
        "its own task). Two causes were. (1) The benchmark: the memory measurement just "
        "before the window (a full collection with tracemalloc on, then stopping it) held "
        "the loop 100-140 ms, and the polls due meanwhile were counted as the window opened "
        "(p99 61-80 ms in two of three runs, every sample over 10 ms within 2 ms of the "
        "start); the window now opens 1 s later. (2) Full (generation 2) collections pause "
        "the loop while they walk every object the collector tracks, and one comes every "
        "4-5 s (each generation 1 collection promotes the ~2,500 objects of the polls then "
        "in flight); a burst of due polls landing in one sets the p99 (39.8 ms with a "
        "41.8 ms pause). With 4 tracked objects per run in flight (the Run, its Future, its "
        "poll state, its heap entry: 85,000 in all) a pause took 42-80 ms; the poll state and "
        "the heap entries are no longer tracked (65,000, pauses of 26-37 ms). Most of the "
        "rest is the interpreter's own objects (about 48,000 here), which only the "
        "application can take out of the collector's walk (`gc.freeze()` after startup)."
    ),
}


@dataclass(slots=True, frozen=True)
class Settings:
    """How the run was asked for."""

    time_scale: float
    runs: int
    baseline_cap: float
    cpu_concurrency: int
    argv: str = ""


@dataclass(slots=True)
class Results:
    """Everything one invocation measured, and how it was asked to."""

    settings: Settings
    bulk: list[Bulk] = field(default_factory=list)
    drift: list[Bulk] = field(default_factory=list)
    """Bulk jobs whose run durations change mid-job, ours and the hand-written client's."""
    drift_idle: list[Idle] = field(default_factory=list)
    """Single runs whose durations change (speed up) mid-way."""
    warm: list[Bulk] = field(default_factory=list)
    """Two sessions of one job in a row: (first, second) ours, then the hand-written client's."""
    idle: list[Idle] = field(default_factory=list)
    cpu: list[Cpu] = field(default_factory=list)
    in_flight: InFlight | None = None
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    """One-minute load average at the start and at the end."""
    fleet: str = ""
    """The Markdown section of ``benchmarks.fleet`` (several processes on one key), if run."""
    gallery: GalleryRow | None = None
    """The gallery page's cost at 10,000 images, if measured."""


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
        f"; the first {COLD_RUNS} runs average {_pct(cold)} of their duration, "
        f"the rest {_pct(warm)}"
    )


def machine() -> str:
    """CPU model and count, OS, Python and library versions."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        model = platform.processor() or model
    return (
        f"{os.cpu_count()} x {model}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()} ({sys.implementation.name}); "
        f"aiohttp {aiohttp.__version__}; gptimage-async {gptimage_async.__version__}"
    )


# -- formatting ----------------------------------------------------------------


def _pct(x: float, digits: int = 1) -> str:
    return f"{x * 100:.{digits}f}%"


def _ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def _table(head: list[str], rows: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out.extend("| " + " | ".join(row) + " |" for row in rows)
    return out


def _limit_label(row: Bulk, default: int) -> str:
    if row.real_limit == default:
        return f"{row.real_limit}/window (default)"
    factor = "2x higher" if row.real_limit > default else "2x lower"
    return f"{row.real_limit}/window ({factor})"


def _done(row: Bulk) -> str:
    text = f"{row.succeeded}/{row.runs}"
    if row.failed:
        text += f", {row.failed} gave up"
    if row.capped:
        text += ", cut off"
    return text


def _is_ours(row: Bulk | Idle | Cpu) -> bool:
    return row.client == "gptimage-async"


def _efficiency(row: Bulk) -> str:
    """Efficiency, with a dagger when the job did not deliver every result."""
    return f"{row.efficiency:.2f}" + ("" if row.succeeded == row.runs else "\u2020")


# -- targets ---------------------------------------------------------------------


def targets(results: Results) -> list[Target]:
    """Each target the run has figures for, judged on our client's figures."""
    out: list[Target] = []
    ours = [r for r in results.bulk if _is_ours(r)]
    theirs = [r for r in results.bulk if not _is_ours(r)]

    def best(rows: list[Bulk]) -> str:
        if not rows:
            return "-"
        pick = max(rows, key=lambda r: r.efficiency)
        return f"{_efficiency(pick)} best ({pick.client.removeprefix('hand-written, ')})"

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
                ", ".join(_efficiency(r) for r in rows),
                best(peers),
                worst.efficiency >= goal_eff,
                f"worst row: budget used {_pct(worst.budget_used)}, 2 / requests per result "
                f"{worst.economy:.2f}, {worst.rate_limited} 429s",
            )
        )
        worst = max(rows, key=lambda r: r.share_429)
        out.append(
            Target(
                "share_429",
                f"2. 429 share, limit {label}",
                f"<= {_pct(goal_429, 0)}",
                ", ".join(_pct(r.share_429) for r in rows),
                "lowest " + (_pct(min(r.share_429 for r in peers)) if peers else "-"),
                worst.share_429 <= goal_429,
                f"worst row: {worst.rate_limited} of {worst.requests} requests",
            )
        )
    out += _learning_targets(results)
    idle = {r.client: r for r in results.idle}
    if "gptimage-async" in idle:
        ours_idle = idle["gptimage-async"]
        share = mean(ours_idle.delays) / mean(ours_idle.durations)
        other = idle.get("hand-written")
        out.append(
            Target(
                "idle_delay",
                "3. detection delay, single runs, idle budget",
                f"mean <= {_pct(IDLE_DELAY_SHARE, 0)} of run",
                f"{_pct(share)} ({_ms(mean(ours_idle.delays))})",
                "-" if other is None else _pct(mean(other.delays) / mean(other.durations)),
                share <= IDLE_DELAY_SHARE,
                f"{ours_idle.requests / ours_idle.runs:.1f} requests per run, p99 delay "
                f"{_ms(percentile(ours_idle.delays, 99))}" + _warm(ours_idle),
            )
        )
    ours_cpu = [r for r in results.cpu if _is_ours(r)]
    bare_cpu = [r for r in results.cpu if not _is_ours(r)]
    if ours_cpu and bare_cpu:
        throughput = max(r.per_second for r in ours_cpu) / max(r.per_second for r in bare_cpu)
        cpu_ratio = min(r.cpu_per_exchange for r in bare_cpu) / min(
            r.cpu_per_exchange for r in ours_cpu
        )
        out.append(
            Target(
                "cpu",
                "4. throughput vs a bare aiohttp loop",
                f">= {_pct(CPU_THROUGHPUT_SHARE, 0)}",
                f"{_pct(throughput, 0)} (CPU: {_pct(cpu_ratio, 0)})",
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
                f"<= {_ms(LATENESS_P99)}",
                _ms(p99) if flight.lateness else "no polls due",
                "-",
                bool(flight.lateness) and p99 <= LATENESS_P99,
                f"{len(flight.lateness)} planned polls in {flight.window:g} s; event-loop lag "
                f"p99 {_ms(percentile(flight.loop_lag, 99))}; full collections in the window: "
                f"{', '.join(_ms(p) for p in flight.full_collections) or 'none'}",
            )
        )
    return out


def _first(rows: Iterable[Bulk]) -> str:
    return ", ".join(f"{r.polls_per_run(0, FIRST_RUNS):.2f}" for r in rows) or "-"


def _learning_targets(results: Results) -> list[Target]:
    """Cold start, drift and warm start: polls per run where the model is learning."""
    out: list[Target] = []
    cold = [r for r in results.bulk if _is_ours(r) and r.belief == "stated"]
    if cold:
        worst = max(cold, key=lambda r: r.polls_per_run(0, FIRST_RUNS))
        peers = [r for r in results.bulk if not _is_ours(r) and r.succeeded]
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
    ours_slow = [r for r in slow if _is_ours(r)]
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
                ", ".join(f"{adapted(r):.2f}" for r in slow if not _is_ours(r)) or "-",
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
                f"{_ms(after_ms)} ({_pct(mine.delay_share(after))} of run) vs "
                f"{_ms(before_ms)} before",
                "-" if other_ms is None else f"{_ms(other_ms)}",
                after_ms <= SPEEDUP_DELAY * before_ms,
                f"share of run before the change {_pct(before_share)}, "
                f"the first {COLD_RUNS} after it {_pct(mine.delay_share(mine.change_at, after))}",
            )
        )
    second = [r for r in results.warm if r.session == "second"]
    ours_second = [r for r in second if _is_ours(r)]
    if ours_second:
        worst = max(ours_second, key=lambda r: r.polls_per_run(0, FIRST_RUNS))
        first = [r for r in results.warm if r.session == "first" and _is_ours(r)]
        out.append(
            Target(
                "warm",
                f"10. polls per run, first {FIRST_RUNS} runs of a second session (warm start)",
                f"<= {WARM_POLLS:.2f}",
                _first(ours_second),
                _first(r for r in second if not _is_ours(r)),
                worst.polls_per_run(0, FIRST_RUNS) <= WARM_POLLS,
                f"the first session's first {FIRST_RUNS}: {_first(first)}",
            )
        )
    return out


# -- the document ----------------------------------------------------------------


def render(
    results: Results, *, default_limit: int, window: float, figures: Iterable[Figure] = ()
) -> str:
    """The whole RESULTS.md; ``figures`` (drawn by ``figures.draw``) are shown after the targets."""
    s = results.settings
    scale = s.time_scale
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks"
        + (f" {s.argv}" if s.argv else "")
        + "`; do not edit by hand.",
        "",
        f"- Date: {results.started:%Y-%m-%d %H:%M} UTC; the run took {results.seconds:.0f} s.",
        f"- Machine: {machine()}.",
        f"- Load average (1 min) at start / end: {results.load[0]:.2f} / {results.load[1]:.2f}"
        " (the machine may be shared: wall-clock and CPU figures are noisy).",
        f"- Time scale {scale:g}: a {window:g} s rate window lasts {window * scale:g} s and a "
        f"3-10 s run {3 * scale:g}-{10 * scale:g} s. The hand-written client's sleeps (1 s "
        "poll, 2**attempt s backoff) are scaled the same way. Delays below are compressed "
        "milliseconds; their share of the run duration is what carries over to real time.",
        "",
    ]
    judged = targets(results)
    if judged:
        lines += ["## Targets", ""]
        lines += _table(
            ["figure", "target", "gptimage-async", "hand-written", "verdict"],
            (
                [t.figure, t.goal, t.ours, t.baseline, "met" if t.met else "**missed**"]
                for t in judged
            ),
        )
        missed = [t for t in judged if not t.met]
        if missed:
            lines += ["", "### Why targets were missed", ""]
            seen: set[str] = set()
            for t in missed:
                lines.append(f"- **{t.figure}**: {t.why}.")
            for t in missed:
                if t.key not in seen:
                    seen.add(t.key)
                    lines.append(f"- *Diagnosis ({t.key})*: {DIAGNOSIS[t.key]}")
        lines.append("")
    pictures = list(figures)
    if pictures:
        lines += ["## Figures", ""]
        for figure in pictures:
            lines += [f"![{figure.title}]({figure.path})", ""]
    if results.bulk:
        lines += _bulk_section(results, default_limit, window)
    if results.bulk or results.drift or results.warm:
        lines += _learning_section(results)
    if results.bulk or results.idle:
        lines += _delay_section(results, default_limit)
    if results.cpu:
        lines += _cpu_section(results)
    if results.in_flight is not None:
        lines += _in_flight_section(results.in_flight)
    if results.gallery is not None:
        lines += section(results.gallery)
    if results.fleet:
        lines += ["", results.fleet, ""]
    return "\n".join(lines).rstrip() + "\n"


def _bulk_section(results: Results, default_limit: int, window: float) -> list[str]:
    s = results.settings
    lines = [
        "## 1-2. Bulk efficiency and 429 share",
        "",
        f"{s.runs} runs per job, Runbase's protocol, run durations uniform in 3-10 s. "
        "Efficiency is the ideal wall time (2 requests per result at the full real limit) "
        "over the measured one, and factors exactly into *budget used* x *2 / requests "
        "per result*; *budget used* counts the requests the server charged to its window "
        "(rejected ones too when it counts them, so a client that keeps knocking passes "
        "100%). *gptimage-async* is `session.as_completed(prompts)`; its belief is "
        f"`RateLimit({default_limit}, {window:g} x time_scale)` in every row, so it is "
        "*stated* when the real limit is the default and *unknown* otherwise. The "
        f"hand-written client gets {s.baseline_cap:g}x the job's ideal wall time and is "
        "then cut off. \u2020: the job did not deliver every result (the client gave up on "
        "some prompts, or was cut off); its efficiency then counts only the results it "
        "delivered, which flatters it. An empty window at the start admits up to "
        f"{default_limit} requests at once, so a short job can exceed 1.0.",
        "",
    ]
    rows = sorted(
        results.bulk,
        key=lambda r: (r.real_limit != default_limit, -r.real_limit, r.counted, not _is_ours(r)),
    )
    lines += _table(
        [
            "client",
            "real limit",
            "rejected counted",
            "belief",
            "results",
            "wall s",
            "ideal s",
            "**efficiency**",
            "budget used",
            "2 / req per result",
            "**429 share**",
            "requests",
            "polls per result",
        ],
        (
            [
                r.client,
                _limit_label(r, default_limit),
                "yes" if r.counted else "no",
                r.belief,
                _done(r),
                f"{r.wall:.2f}",
                f"{r.ideal:.2f}",
                f"**{_efficiency(r)}**",
                _pct(r.budget_used, 0),
                f"{r.economy:.2f}",
                f"**{_pct(r.share_429)}**",
                str(r.requests),
                f"{r.polls / r.succeeded:.2f}" if r.succeeded else "-",
            ]
            for r in rows
        ),
    )
    ours = [r for r in rows if _is_ours(r)]
    if ours:
        lines += ["", "Our limiter and duration model at the end of each job:", ""]
        for r in ours:
            rates = [rate for _, rate in r.trajectory] or [float("nan")]
            lines.append(
                f"- {_limit_label(r, default_limit)}, rejected "
                f"{'counted' if r.counted else 'not counted'}: believed limit "
                f"{rates[0] / r.rate:.2f} -> min {min(rates) / r.rate:.2f}, "
                f"max {max(rates) / r.rate:.2f}, end {rates[-1] / r.rate:.2f} x the real "
                f"limit; {r.diagnostics}"
            )
    lines.append("")
    return lines


def _learning_section(results: Results) -> list[str]:
    lines = [
        "## 7-10. Learning: cold start, drift, warm start",
        "",
        "Polls per run are counted by the simulator, per run, in creation order (polls "
        "answered 429 are not counted). *Cold* rows are the bulk jobs above, each a fresh "
        f"session. *Drift* jobs run {results.settings.runs}-run-style bulk jobs whose run "
        "durations are multiplied mid-job (3-10 s becomes 9-30 s, or 1-3.3 s); *after* "
        f"counts from {ADAPT_RUNS} runs after the change. *Warm* jobs are the same job run "
        "twice against one simulator, by two sessions one after the other sharing a "
        "state file (ours; the hand-written client has nothing to remember). Delay share: "
        "mean detection delay over mean run duration.",
        "",
    ]
    rows: list[list[str]] = []

    def add(r: Bulk, workload: str) -> None:
        change = r.change_at
        rows.append(
            [
                r.client,
                workload,
                f"{r.succeeded}/{r.runs}",
                f"**{_efficiency(r)}**",
                f"{r.polls_per_run(0, FIRST_RUNS):.2f}",
                f"{r.polls_per_run(FIRST_RUNS):.2f}",
                "-" if change is None else f"{r.polls_per_run(change, change + ADAPT_RUNS):.2f}",
                "-" if change is None else f"{r.polls_per_run(change + ADAPT_RUNS):.2f}",
                _pct(r.delay_share(0, change)),
                "-" if change is None else _pct(r.delay_share(change + ADAPT_RUNS)),
                _pct(r.share_429),
            ]
        )

    for r in results.bulk:
        counted = "counted" if r.counted else "not counted"
        add(r, f"cold, limit {r.real_limit}, {r.belief}, rejected {counted}")
    for r in results.drift:
        add(r, f"drift x{r.drift:.3g} after {r.change_at} runs")
    for r in results.warm:
        add(r, f"{r.session} session of two")
    lines += _table(
        [
            "client",
            "workload",
            "results",
            "efficiency",
            f"polls/run first {FIRST_RUNS}",
            f"polls/run after {FIRST_RUNS}",
            f"polls/run {ADAPT_RUNS} after change",
            "polls/run after",
            "delay share before",
            "delay share after",
            "429 share",
        ],
        rows,
    )
    if results.drift_idle:
        lines += ["", "Single runs with the budget idle, sped up mid-way:", ""]
        idle_rows = []
        for i in results.drift_idle:
            at = i.change_at if i.change_at is not None else len(i.delays)
            idle_rows.append(
                [
                    i.client,
                    f"{i.runs} runs, x{i.drift:.3g} after {at}",
                    f"{i.requests / i.runs:.2f}",
                    _pct(i.delay_share(COLD_RUNS, at)),
                    _pct(i.delay_share(at, at + COLD_RUNS)),
                    f"**{_pct(i.delay_share(at + COLD_RUNS))}**",
                ]
            )
        lines += _table(
            [
                "client",
                "workload",
                "requests per run",
                "delay share before",
                f"first {COLD_RUNS} after",
                "after that",
            ],
            idle_rows,
        )
    for r in [*results.drift, *results.warm]:
        if _is_ours(r):
            lines.append("")
            lines.append(f"- {r.session or 'drift x' + format(r.drift, '.3g')}: {r.diagnostics}")
    lines.append("")
    return lines


def _delay_section(results: Results, default_limit: int) -> list[str]:
    lines = [
        "## 3. Requests per run and detection delay",
        "",
        "Delay: from the run finishing on the server (`finishes_at`) to the caller holding "
        "the result (the awaiting coroutine resumed). *Single runs* submit one run, await "
        "it, then the next, with the budget otherwise idle; the same runs are also shown "
        f"split into the first {COLD_RUNS} (our duration model is still learning: it needs "
        "4 finished runs) and the rest. *Bulk* rows are the default-limit, "
        "rejected-not-counted jobs above.",
        "",
    ]
    entries: list[tuple[str, str, int, int, int, list[float], list[float]]] = []
    for i in results.idle:
        entries.append(
            (i.client, "single runs", i.runs, i.requests, i.polls, i.delays, i.durations)
        )
    for i in results.idle:
        if i.runs > 2 * COLD_RUNS:
            # Requests are not split by run: the split rows show delays only.
            for part, sl in (
                (f"first {COLD_RUNS}", slice(None, COLD_RUNS)),
                (f"after the first {COLD_RUNS}", slice(COLD_RUNS, None)),
            ):
                entries.append(
                    (
                        i.client,
                        f"single runs, {part}",
                        len(i.delays[sl]),
                        -1,
                        -1,
                        i.delays[sl],
                        i.durations[sl],
                    )
                )
    for b in results.bulk:
        if b.real_limit == default_limit and not b.counted and b.succeeded:
            entries.append(
                (b.client, "bulk", b.succeeded, b.requests, b.polls, b.delays, b.durations)
            )
    lines += _table(
        [
            "client",
            "workload",
            "results",
            "requests per result",
            "polls per result",
            "mean delay",
            "p99 delay",
            "mean run",
            "**mean delay / mean run**",
        ],
        (
            [
                client,
                workload,
                str(n),
                f"{requests / n:.2f}" if requests >= 0 else "",
                f"{polls / n:.2f}" if polls >= 0 else "",
                _ms(mean(delays)),
                _ms(percentile(delays, 99)),
                _ms(mean(durations)),
                f"**{_pct(mean(delays) / mean(durations))}**",
            ]
            for client, workload, n, requests, polls, delays, durations in entries
            if n
        ),
    )
    lines.append("")
    return lines


def _cpu_section(results: Results) -> list[str]:
    n = results.settings.cpu_concurrency
    lines = [
        "## 4. Client CPU per HTTP exchange",
        "",
        "The simulator runs in a child process with no rate limit and runs that are done "
        "as soon as they exist, so each run is one create and one poll. Both clients keep "
        f"{n} runs in flight: ours through `generate_many(..., concurrency={n})` with a "
        f"belief of 100,000 requests/s, the bare loop as {n} workers doing POST then GET "
        "with `aiohttp` and `response.json()`. Client CPU is `time.process_time()` of this "
        "process, which the simulator is not part of. "
        "Rounds alternate; the best round of each client is compared (the least disturbed "
        "by other load).",
        "",
    ]
    lines += _table(
        ["client", "exchanges", "wall s", "exchanges/s", "client CPU per exchange"],
        (
            [
                r.client,
                str(r.exchanges),
                f"{r.wall:.2f}",
                f"{r.per_second:,.0f}",
                f"{r.cpu_per_exchange * 1e6:.0f} us",
            ]
            for r in results.cpu
        ),
    )
    lines.append("")
    return lines


def _in_flight_section(flight: InFlight) -> list[str]:
    lines = [
        f"## 5-6. {flight.runs:,} runs in flight",
        "",
        "The simulator runs in a child process; runs last a day, so none finishes while we "
        "look. After a warm-up, the runs are submitted by 64 tasks calling "
        "`session.submit` and dropping the handle (the session keeps each run). Memory is "
        "what tracemalloc sees allocated during submission and still held after a full "
        "collection, and the growth of the resident set net of tracemalloc's own "
        f"bookkeeping. Then, after {IN_FLIGHT_SETTLE:g} s for the polls that fell due while "
        f"that measurement blocked the loop, for {flight.window:g} s, "
        "`session.stats.lateness` collects how late each planned poll was taken off the "
        "heap, an independent probe measures how late the event loop wakes a "
        f"{PROBE_SLEEP * 1000:g} ms sleep, and `gc.callbacks` times every full (generation "
        "2) garbage collection: it pauses the whole event loop.",
        "",
    ]
    lines += _table(
        ["figure", "value"],
        [
            ["live heap per run (tracemalloc)", f"{flight.traced / flight.runs:,.0f} B"],
            ["RSS growth per run", f"{flight.rss / flight.runs:,.0f} B"],
            ["time to submit all runs (tracemalloc on)", f"{flight.submit_seconds:.1f} s"],
            ["planned polls in the window", str(len(flight.lateness))],
            [
                "objects tracked by the garbage collector",
                f"{flight.tracked:,}",
            ],
            [
                "full collections in the window (pause each)",
                ", ".join(_ms(p) for p in flight.full_collections) or "none",
            ],
            [
                "scheduler lateness p50 / p99 / max",
                " / ".join(
                    _ms(v)
                    for v in (
                        percentile(flight.lateness, 50),
                        percentile(flight.lateness, 99),
                        max(flight.lateness, default=float("nan")),
                    )
                ),
            ],
            [
                "event-loop lag p50 / p99",
                f"{_ms(percentile(flight.loop_lag, 50))} / {_ms(percentile(flight.loop_lag, 99))}",
            ],
            ["polls sent in the window", f"{flight.polls} ({flight.polls / flight.window:,.0f}/s)"],
            ["state at the end", flight.diagnostics],
        ],
    )
    lines.append("")
    return lines
