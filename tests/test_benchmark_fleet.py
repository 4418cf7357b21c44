"""The fleet's rows of the Targets table (issue 22): a results object in, the rows' text out.

No process is started here: the rows are what ``benchmarks.fleet`` measures
(``fleet.Row``), built by hand; ``tests/redis/`` runs real fleets.
"""

from __future__ import annotations

from benchmarks.fleet import Row
from benchmarks.report import Results, Settings, render
from benchmarks.targets import targets


def fleet_row(
    mode: str, load: tuple[int, ...], *, wall: float, rate_limited: int, requests: int
) -> Row:
    runs = sum(load)
    row = Row(
        mode=mode,
        load=load,
        wall=wall,
        ideal=runs * 2 / 40.0,  # 2 requests a run at 20 per 0.5 s
        requests=requests,
        rate_limited=rate_limited,
        duplicates=0,
        resolved=runs,
        errors=0,
        polls=requests - runs,
    )
    row.losses = {"ideal": row.ideal / wall, "extra requests": 0.035, "start": 0.005, "tail": 0.0}
    return row


def results_with(*rows: Row) -> Results:
    results = Results(
        settings=Settings(time_scale=0.05, runs=200, baseline_cap=1.0, cpu_concurrency=1)
    )
    results.fleet_rows.extend(rows)
    return results


def test_the_shared_fleets_even_and_skewed_loads_are_judged() -> None:
    even = fleet_row("shared", (50, 50, 50, 50), wall=10.0 / 0.94, rate_limited=5, requests=415)
    skewed = fleet_row("shared", (140, 20, 20, 20), wall=10.0 / 0.98, rate_limited=1, requests=401)
    full = fleet_row("full", (50, 50, 50, 50), wall=10.0 / 0.76, rate_limited=10, requests=415)
    judged = [t for t in targets(results_with(even, full, skewed)) if t.key == "fleet"]
    # Only the shared fleet is the library's figure: "full" and "static" are the old advice.
    assert [t.figure for t in judged] == [
        "16. 4 processes, one key, Redis, even load (50 / 50 / 50 / 50 runs): "
        "efficiency, 429 share",
        "16. 4 processes, one key, Redis, skewed load (140 / 20 / 20 / 20 runs): "
        "efficiency, 429 share",
    ]
    assert [t.goal for t in judged] == [">= 0.95, 429s <= 1%"] * 2
    assert [t.ours for t in judged] == ["0.94, 429s 1.2%", "0.98, 429s 0.2%"]
    assert [t.met for t in judged] == [False, True]
    # The reason names the grant log's largest losses, largest first, never the ideal.
    assert judged[0].why == (
        "200/200 resolved in 10.64 s, ideal 10.00 s; 415 requests (215 polls, 5 429s); "
        "largest losses of the wall time (grant log): extra requests 3.5%, start 0.5%"
    )


def test_efficiency_met_with_too_many_429s_is_missed_and_said_why() -> None:
    row = fleet_row("shared", (50, 50, 50, 50), wall=10.0 / 0.96, rate_limited=6, requests=410)
    row.losses = {}  # no grant log (Redis gone at the end, say)
    (judged,) = [t for t in targets(results_with(row)) if t.key == "fleet"]
    assert judged.ours == "0.96, 429s 1.5%" and not judged.met
    assert judged.why.endswith("(grant log): no grant log")
    text = render(results_with(row), default_limit=20, window=10.0)
    assert "| 0.96, 429s 1.5% | - | **missed** |" in text
    assert f"- **{judged.figure}**: {judged.why}." in text


def test_a_fleet_that_lost_a_run_is_missed_whatever_its_pace() -> None:
    row = fleet_row("shared", (140, 20, 20, 20), wall=10.0 / 0.97, rate_limited=0, requests=400)
    row.resolved = 199
    (judged,) = [t for t in targets(results_with(row)) if t.key == "fleet"]
    assert not judged.met and judged.why.startswith("199/200 resolved")
