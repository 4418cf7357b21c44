"""The idle benchmark's floor: what even an oracle poller reaches under the window.

On the fake loop clock (no round trip, no scheduling noise): a poller that
knows the durations' true range polls evenly at the densest spacing the
sliding window allows. The mean detection delay over the mean run time is
then about ``(longest - shortest) / polls / 2`` over the mean duration, with
``polls`` the window's limit less the create and any reserve: issue 22's 3%
for single runs on an idle budget is at the floor even for it.
"""

from __future__ import annotations

from benchmarks._common import DEFAULT_LIMIT
from benchmarks.idle import Idle, idle_floor, idle_memory
from benchmarks.report import Results, Settings, render
from benchmarks.targets import targets

from ._clock import FakeClock

RUNS = 40
SEEDS = range(1, 7)


def floor(reserve: int) -> float:
    """The arithmetic floor: 3-10 s runs (mean 6.5 s) polled evenly over 7 s."""
    return 7.0 / (DEFAULT_LIMIT - reserve - 1) / 2 / 6.5


async def test_an_oracle_poller_is_late_by_the_window_alone(fake_clock: FakeClock) -> None:
    shares = {}
    for reserve in (0, 2):
        rows = [await fake_clock.run(idle_floor(RUNS, seed=s, reserve=reserve)) for s in SEEDS]
        assert all(row.rate_limited == 0 and len(row.delays) == RUNS for row in rows)
        shares[reserve] = sum(row.delay_share() for row in rows) / len(rows)
        # Within sampling noise of the arithmetic (6 x 40 runs: a few tenths of a point).
        assert abs(shares[reserve] - floor(reserve)) < 0.004
    # No reserve: 19 polls over 7 s, ~2.8%; a reserve of 2 slots of each window kept
    # from speculative polls: 17 polls, ~3.2%, above issue 22's 3% before any round
    # trip. Ours keeps 1 (``SPARE_RESERVE``): 18 polls, 3.09% on 24 seeds.
    assert shares[0] < 0.03 < shares[2]


async def test_ours_is_within_a_few_tenths_of_the_oracle(fake_clock: FakeClock) -> None:
    # The same 6 seeds on the fake clock, after the first 10 runs: 3.68% while the
    # fair-share polls could go closer than the window allows (they filled it, and
    # the next run's first polls waited), 3.19% with ``_planner.window_gap``; the
    # oracle (reserve 1) measures 3.09% on 24 seeds.
    rows = [await fake_clock.run(idle_memory(RUNS, seed=s)) for s in SEEDS]
    assert all(row.rate_limited == 0 and len(row.delays) == RUNS for row in rows)
    assert sum(row.delay_share(10) for row in rows) / len(rows) < 0.034


def test_the_first_runs_of_a_cold_session_are_judged_apart() -> None:
    row = Idle("gptimage-async", 40)
    row.durations = [6.5] * 40
    row.delays = [0.39] * 10 + [0.2] * 30  # 6% late while cold, 3.1% after
    row.requests = 400
    results = Results(
        settings=Settings(time_scale=0.05, runs=40, baseline_cap=1.0, cpu_concurrency=1)
    )
    results.idle.append(row)
    judged = {t.key: t for t in targets(results)}
    assert not judged["idle_cold"].met and "6.0%" in judged["idle_cold"].ours
    assert not judged["idle_delay"].met  # 3.5% in all
    text = render(results, default_limit=20, window=10.0)
    assert "*Diagnosis (idle_cold)*" in text and "*Diagnosis (idle_delay)*" in text
    row.delays = [0.25] * 10 + [0.2] * 30  # 3.8% while cold
    assert next(t for t in targets(results) if t.key == "idle_cold").met
