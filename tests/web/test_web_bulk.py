"""``examples/bulk_script.py``: one session, many prompts, JSON lines out."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import memory_session, simulated_session

from .._clock import FakeClock
from .servers import EXAMPLES, TIME_SCALE, load_example

bulk_script = load_example("bulk_script")


async def test_every_prompt_gets_one_line_as_it_finishes(fake_clock: FakeClock) -> None:
    lines = [f"a lamp, take {i}\n" for i in range(40)] + ["\n", "x" * 40_000 + "\n"]
    out = io.StringIO()
    config = SimulatorConfig(time_scale=TIME_SCALE, seed=3)

    # The real simulator in memory, on the fake clock: the rate limit's bound
    # below is about the script's pacing, not about a loaded machine's lag.
    async def run_script() -> tuple[Simulator, Any]:
        async with memory_session(config=config) as (sim, session):
            lines_in = bulk_script.read_prompts(lines)
            return sim, await bulk_script.generate_all(session, lines_in, out)

    sim, summary = await fake_clock.run(run_script())

    rows = [msgspec.json.decode(line) for line in out.getvalue().splitlines()]
    assert (summary.succeeded, summary.failed) == (40, 1)
    assert sorted(row["index"] for row in rows) == list(range(41))  # the blank line is skipped
    done = {row["index"]: row for row in rows if "urls" in row}
    assert all(done[i]["prompt"] == f"a lamp, take {i}" for i in range(40))
    assert all(done[i]["urls"] == list(sim.runs[done[i]["run_id"]].urls) for i in range(40))
    [refused] = [row for row in rows if "error" in row]
    assert (refused["index"], refused["error"], refused["run_id"]) == (
        40,
        "InvalidRequestError",
        None,
    )
    assert sim.stats.creates == 40
    assert sim.stats.rate_limited <= max(2, 0.02 * sim.stats.requests)  # jitter on ~90 requests


def test_the_script_runs_against_the_simulator_from_the_command_line() -> None:
    prompts = "".join(f"a bowl, take {i}\n" for i in range(10))
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "bulk_script.py"), "--simulate", "--quality", "high"],
        input=prompts,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [msgspec.json.decode(line) for line in done.stdout.splitlines()]
    assert sorted(row["prompt"] for row in rows) == sorted(prompts.split("\n")[:-1])
    assert all(row["urls"] for row in rows)
    assert "10 succeeded, 0 failed" in done.stderr


async def test_an_error_from_the_prompt_source_reaches_the_caller() -> None:
    def prompts() -> Iterator[str]:
        yield "a lamp"
        raise OSError("the prompt file went away")

    async with simulated_session(config=SimulatorConfig(time_scale=TIME_SCALE)) as (_, session):
        with pytest.raises(OSError, match="went away"):
            async for _ in session.as_completed(prompts()):
                pass
