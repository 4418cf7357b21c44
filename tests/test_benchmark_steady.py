"""The steady (web-app) benchmark: its arithmetic, and one tiny job on the real simulator.

No wall-clock figure is asserted: only what the scenario counts (runs created
once each, every arrival resolved, the budget share each run gets).
"""

from __future__ import annotations

import math

import pytest

from benchmarks.report import Results, Settings, render
from benchmarks.steady import WARMUP, Steady, steady_memory, steady_ours
from benchmarks.targets import targets

from ._clock import FakeClock

RATE = 2.0  # requests per second: 20 per 10 s


def steady_row(load: float, *, runs: int, created_span: float, delays: list[float]) -> Steady:
    row = Steady("gptimage-async", 1, load, runs, rate=RATE)
    row.by_run = [(2, d, 9.0) for d in delays]
    row.resolved = row.created = runs
    row.created_span = created_span
    row.requests = 3 * runs
    return row


def test_a_quarter_of_the_budget_leaves_four_requests_per_run() -> None:
    row = steady_row(0.25, runs=5, created_span=8.0, delays=[0.45] * 5)
    assert row.arrivals == pytest.approx(0.5)
    assert row.budget_per_run == pytest.approx(4.0)
    assert row.delay_share == pytest.approx(0.05)


def test_throughput_kept_falls_when_creates_lag_behind_arrivals() -> None:
    # 5 arrivals 2 s apart span 8 s: creates spread over 8 s kept pace, over 16 s did not.
    assert steady_row(0.25, runs=5, created_span=8.0, delays=[0.1] * 5).kept == 1.0
    assert steady_row(0.25, runs=5, created_span=16.0, delays=[0.1] * 5).kept == 0.5
    lost = steady_row(0.25, runs=5, created_span=8.0, delays=[0.1] * 5)
    lost.resolved = 4
    assert lost.kept == pytest.approx(0.8)


def test_the_cold_start_is_left_out_of_long_jobs_only() -> None:
    cold = [5.0] * WARMUP
    long = steady_row(0.25, runs=3 * WARMUP, created_span=1.0, delays=cold + [1.0] * 2 * WARMUP)
    assert long.delays == [1.0] * 2 * WARMUP
    short = steady_row(0.25, runs=WARMUP, created_span=1.0, delays=cold)
    assert short.delays == cold


def test_unresolved_runs_are_not_judged_and_the_report_says_none_resolved() -> None:
    row = steady_row(0.25, runs=3, created_span=1.0, delays=[math.nan] * 3)
    row.resolved = 0
    row.rate_limited = row.requests
    assert math.isnan(row.delay_share)
    results = Results(
        settings=Settings(time_scale=0.05, runs=3, baseline_cap=1.0, cpu_concurrency=1)
    )
    results.steady.append(row)
    judged = [t for t in targets(results) if t.key == "steady"]
    assert len(judged) == 1 and not judged[0].met
    text = render(results, default_limit=20, window=10.0)
    assert "## 11-12. Steady arrivals (web apps)" in text
    assert "none resolved (429s 100.0%)" in text
    assert "nan" not in text


async def test_one_process_resolves_every_arrival_once_on_the_simulator() -> None:
    row = await steady_ours(0.25, 6, time_scale=0.005)
    assert (row.runs, row.created, row.resolved, row.failed, row.capped) == (6, 6, 6, 0, False)
    assert len(row.by_run) == 6
    assert all(delay >= 0 for _, delay, _ in row.by_run)
    assert all(polls >= 1 for polls, _, _ in row.by_run)
    assert row.requests >= 12  # a create and at least one poll per run


def test_loads_are_also_shares_of_the_keys_run_capacity() -> None:
    # Run capacity: limit / window / 2 runs per second (a create and one poll each).
    half = steady_row(0.25, runs=5, created_span=8.0, delays=[0.1] * 5)
    assert half.capacity == pytest.approx(0.5) and half.kept_bound == 1.0
    three_quarters = steady_row(0.375, runs=5, created_span=8.0, delays=[0.1] * 5)
    assert three_quarters.capacity == pytest.approx(0.75)
    assert three_quarters.budget_per_run == pytest.approx(8 / 3)
    assert three_quarters.kept_bound == 1.0
    # 3/4 of the budget: 1.33 requests per run where 2 are needed.
    over = steady_row(0.75, runs=5, created_span=8.0, delays=[0.1] * 5)
    assert over.kept_bound == pytest.approx(2 / 3)


def test_the_steady_targets_by_budget_and_by_run_capacity() -> None:
    rows = {
        0.25: steady_row(0.25, runs=5, created_span=8.0, delays=[0.63] * 5),  # 7% of 9 s
        0.375: steady_row(0.375, runs=5, created_span=16 / 3, delays=[1.26] * 5),  # 14%
        0.5: steady_row(0.5, runs=5, created_span=4.2, delays=[3.0] * 5),  # kept 0.95
        0.75: steady_row(0.75, runs=5, created_span=4.0, delays=[4.0] * 5),  # kept 0.67
    }
    results = Results(
        settings=Settings(time_scale=0.05, runs=5, baseline_cap=1.0, cpu_concurrency=1)
    )
    results.steady.extend(rows.values())
    keys = [t.key for t in targets(results)]
    assert keys == ["steady", "steady_kept", "steady_kept", "steady_capacity", "steady_capacity"]
    # 1/4 of the budget: 7% misses its 5%; the same load is 1/2 of run capacity, within 8%.
    quarter = next(t for t in targets(results) if t.key == "steady")
    assert not quarter.met and "<= 5%" in quarter.goal
    capacity = [t for t in targets(results) if t.key == "steady_capacity"]
    assert ["1/2 of the key's run capacity" in capacity[0].figure, capacity[0].met] == [True, True]
    assert ["3/4 of the key's run capacity" in capacity[1].figure, capacity[1].met] == [True, True]
    # 1/2 and 3/4 of the budget: no delay target, throughput kept against what any client can.
    kept = [t for t in targets(results) if t.key == "steady_kept"]
    assert all("no delay target" in t.goal for t in kept)
    assert "kept >= 0.63" in kept[1].goal and "0.67 any client can keep" in kept[1].goal
    assert [t.met for t in kept] == [True, True]
    text = render(results, default_limit=20, window=10.0)
    assert "share of run capacity" in text and "(at most 0.67)" in text


async def test_a_quarter_of_the_budget_on_the_fake_clock(fake_clock: FakeClock) -> None:
    # Issue 22's 1/4 row on the fake loop clock (the simulator in memory, no round
    # trip, no scheduling noise), the same 6 seeds as the diagnosis: 4.5% while
    # the limiter kept 2 slots of each window from polls ahead of the pace
    # (each seed 4.3-4.8%), 4.15% with 1 (3.5-4.6%); issue 22's target is 5%.
    rows = [await fake_clock.run(steady_memory(0.25, 200, seed=s)) for s in range(1, 7)]
    assert all((r.created, r.resolved, r.failed) == (200, 200, 0) for r in rows)
    assert all(r.share_429 <= 0.01 and r.kept >= 0.99 for r in rows)
    assert sum(r.delay_share for r in rows) / len(rows) < 0.044
    # Creates kept their pace: a slot's wait (0.5 s) at most, on average.
    assert all(r.create_wait < 0.25 for r in rows)


async def test_at_half_the_budget_every_request_beyond_two_per_run_is_lag(
    fake_clock: FakeClock,
) -> None:
    # The steady_kept diagnosis: at 1/2 of the budget (exactly saturated) a slot lost
    # once the backlog formed is never won back, so kept = span / (span + lag), and
    # the lag is the requests beyond a create and a poll per run, less the ~14 that
    # fall in slots idle before the backlog forms. Most are the cold start's.
    for seed in (1, 2):
        row = await fake_clock.run(steady_memory(0.5, 200, seed=seed))
        assert (row.created, row.resolved) == (200, 200)
        extra = row.requests - 2 * row.runs
        cold = sum(polls - 1 for polls, _, _ in row.by_run[:WARMUP])
        lag = row.created_span - (row.runs - 1) / row.arrivals  # seconds behind the arrivals
        assert 15 <= cold <= extra
        assert extra - 16 <= lag * row.rate <= extra
        span = (row.runs - 1) / row.arrivals
        assert row.kept == pytest.approx(span / (span + lag))
        assert row.kept < 0.98
