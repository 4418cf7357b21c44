"""Through a whole session: a provider whose read side lags its write side (issue 20, item 2).

The simulator answers 404 to every poll of a run for ``read_lag`` provider
seconds after its create. Runs the session created wait that out (their grace
is measured in time); nothing is created twice. Timing itself is tested on
the fake clock in ``tests/test_not_found_grace.py``.
"""

from __future__ import annotations

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, Simulator

from .conftest import PROVIDERS, on_wire, sim_config, simulated


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("lag", [8.0, 20.0, 60.0])
async def test_runs_invisible_right_after_their_create_all_succeed(
    provider: str, lag: float
) -> None:
    # In memory, on the fake clock: the first poll's timing is the session's
    # own, not a loaded machine's, so the lag is always met (over a socket, a
    # first poll later than 8 provider seconds, 40 ms here, missed it).
    config = sim_config(faults=Faults(read_lag=lag))

    async def body() -> tuple[Simulator, list[gi.Result]]:
        # A high limit: the polls of a run come milliseconds apart, as in the report.
        async with simulated(provider, config, "memory") as (sim, session):
            return sim, await session.generate_many([f"a lamp, take {i}" for i in range(6)])

    sim, results = await on_wire("memory", body())
    assert all(isinstance(r, gi.Result) and r.urls for r in results)
    assert sim.stats.faults["read_lag"] > 0, "the lag was never seen: the test proves nothing"
    assert sim.stats.creates == 6 and sim.stats.duplicates == 0
