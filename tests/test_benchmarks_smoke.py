"""The benchmark harness runs end to end.

These are benchmarks, not timed tests: nothing here asserts a wall-clock
figure, only that the harness measures both clients and writes its table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.__main__ import main as benchmarks_main
from benchmarks.baseline import BaselineClient
from gptimage_async.simulator import Simulator, SimulatorConfig


@pytest.mark.slow  # every benchmark scenario end to end: ~13 s, ~7 s of CPU
def test_quick_run_writes_every_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # In this process: ``main`` is what ``python -m benchmarks`` runs, a new interpreter
    # would only add its start (~1 s of CPU), and the suite's ``filterwarnings = error``
    # does what ``-W error`` did. 100 runs in flight, not 300: the same section, sooner.
    out = tmp_path / "RESULTS.md"
    benchmarks_main(["--quick", "--in-flight", "100", "--output", str(out)])
    text = out.read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    for heading in (
        "## Targets",
        "## 1-2. Bulk efficiency and 429 share",
        "## 3. Requests per run and detection delay",
        "## 7-10. Learning: cold start, drift, warm start",
        "## 4. Client CPU per HTTP exchange",
        "runs in flight",
        "## Gallery page at 1,000 images",
        "## 11-12. Steady arrivals (web apps)",
        "## 13-15. A pool of keys and sellers",
    ):
        assert heading in text
    for load in ("0.25", "0.5", "0.75"):
        assert f"| gptimage-async | {load} |" in text
        assert f"| hand-written | {load} |" in text
    for client in ("gptimage-async", "hand-written, gather", "hand-written, semaphore(5)"):
        assert f"| {client} |" in text
    assert "| bare aiohttp loop |" in text
    assert "Machine:" in text
    # The pool runs in quick mode: every run of every job resolved exactly once, and
    # none was paid twice.
    for figure in ("13. pool of 3 keys", "14. one lane out of credits", "15. price-first"):
        assert f"| {figure}" in text
    for job, routing in (("combined", "earliest"), ("closure", "earliest")):
        row = next(line for line in text.splitlines() if line.startswith(f"| {job} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:4] == [routing, "30/30", "0"], row
        assert cells[9] == "0", row  # paid twice
    price = next(line for line in text.splitlines() if line.startswith("| price-first |"))
    cells = [cell.strip() for cell in price.strip("|").split("|")]
    assert cells[1:3] == ["cheapest", "30/30"] and cells[9] == "0", price
    assert "credits ran out" in text  # the closure happened, a third of the way in


def test_only_writes_the_chosen_scenarios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two of the cheapest scenarios (the pool's figures are checked in the quick run
    # above, which runs it too): --only writes those two sections and no other.
    out = tmp_path / "RESULTS.md"
    benchmarks_main(["--quick", "--only", "idle", "gallery", "--output", str(out)])
    text = out.read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "| gptimage-async | single runs |" in text
    assert "| hand-written | single runs |" in text
    assert "## Gallery page at 1,000 images" in text
    for other in ("## 1-2.", "## 4.", "runs in flight", "## 11-12.", "## 13-15."):
        assert other not in text


async def test_baseline_creates_each_prompt_once_and_polls_until_done() -> None:
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=1)
    async with (
        Simulator(config) as sim,
        BaselineClient(sim.base_url("runbase"), "sk-smoke", time_scale=0.01) as client,
    ):
        outcome = await client.gather([f"prompt {i}" for i in range(5)])
    assert [run.error for run in outcome.runs] == [None] * 5
    assert all(run.urls for run in outcome.runs)
    assert sim.stats.creates == 5
    assert sim.stats.duplicates == 0
    assert outcome.requests == sim.stats.requests
    assert outcome.polls == sum(run.polls for run in outcome.runs) == sim.stats.polls
    for run in outcome.runs:
        assert run.run_id is not None
        assert run.done_at is not None
        assert run.done_at >= sim.runs[run.run_id].finishes_at
