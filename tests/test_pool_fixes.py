"""Pool faults a fresh user found (issue 19), each against the real simulator.

Resent creates of uncertain fate under a spend cap, and the same key at two
base URLs. Every simulator is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, KeyConfig, Simulator
from tests.helpers import config as sim_config

PRICES = {"medium": 4, "high": 11}


def _lane(sim: Simulator, key: str, label: str, **options: Any) -> gi.Lane:
    return gi.Lane(
        "runbase",
        key,
        base_url=sim.base_url("runbase"),
        rate_limit=gi.RateLimit(20, sim.config.scaled(10)),
        label=label,
        **options,
    )


def _cost(sim: Simulator, prices: dict[str, dict[str, int]]) -> int:
    """What the runs the simulator made cost at the lanes' own prices."""
    return sum(prices[run.key][run.quality] for run in sim.runs.values())


# -- 1. a resent uncertain create is reserved anew; the first stays reserved -----------------


async def test_a_resend_that_does_not_fit_beside_the_maybe_paid_attempt_is_refused() -> None:
    # Every create makes its run and then answers 500: its fate is unknown.
    sim = Simulator(sim_config(faults=Faults(create_500_after_effect=1.0)))
    async with sim:
        lanes = [
            _lane(sim, "sk-fix-a", "a", prices=PRICES),
            _lane(sim, "sk-fix-b", "b", prices={"medium": 9, "high": 20}),
        ]
        async with gi.Session(
            lanes=lanes, spend_cap=4, resend_uncertain_creates=True, remember=False
        ) as session:
            with pytest.raises(gi.UncertainCreateError) as info:
                await session.generate("a lamp")
            spend = session.stats.spend
    assert isinstance(info.value.__cause__, gi.SpendCapError)
    assert "spend cap" in str(info.value)
    assert len(sim.runs) == 1  # sent once: the resend did not fit beside it
    assert spend is not None
    assert (spend.spent, spend.reserved, spend.headroom) == (0.0, 4.0, 0.0)
    assert spend.lanes[0].uncertain == 1


async def test_each_resent_attempt_is_reserved_and_the_cap_bounds_what_was_made() -> None:
    sim = Simulator(sim_config(faults=Faults(create_500_after_effect=1.0)))
    async with sim:
        lane = _lane(sim, "sk-fix-c", "c", prices=PRICES)
        async with gi.Session(
            lanes=[lane, _lane(sim, "sk-fix-d", "d", prices=PRICES)],
            spend_cap=8,
            resend_uncertain_creates=True,
            remember=False,
        ) as session:
            with pytest.raises(gi.UncertainCreateError):
                await session.generate("a lamp")
            spend = session.stats.spend
    # Two attempts fit under 8 at 4 each, both made a run; the third was refused.
    assert len(sim.runs) == 2
    assert spend is not None and (spend.spent, spend.reserved) == (0.0, 8.0)
    assert {run.key for run in sim.runs.values()} == {"sk-fix-c"}  # never moved


async def test_a_mixed_fault_job_never_makes_more_than_the_cap() -> None:
    faults = Faults(create_500_after_effect=0.4, reset_after_create=0.05, create_5xx=0.1)
    keys = {"sk-fix-e": KeyConfig(rate_limit=20), "sk-fix-f": KeyConfig(rate_limit=20)}
    prices = {"sk-fix-e": PRICES, "sk-fix-f": {"medium": 5, "high": 12}}
    sim = Simulator(sim_config(faults=faults, keys=keys, seed=2))
    async with sim:
        lanes = [_lane(sim, key, key[-1], prices=prices[key]) for key in keys]
        requests = [
            gi.ImageRequest(f"vase {i}", quality="high" if i % 3 else "medium") for i in range(40)
        ]
        async with gi.Session(
            lanes=lanes, spend_cap=150, resend_uncertain_creates=True, remember=False
        ) as session:
            results = await session.generate_many(requests, return_exceptions=True)
            spend = session.stats.spend
    assert spend is not None and spend.spent is not None and spend.reserved is not None
    made = _cost(sim, prices)
    assert sim.stats.duplicates > 0  # resends did make second runs
    assert made <= 150
    # What may have been paid (spent + maybe paid) covers what was made.
    assert made <= spend.spent + spend.reserved <= 150
    assert any(isinstance(r, gi.SpendCapError) for r in results)


# -- 2. the same key twice is refused, whatever the base URLs ---------------------------------


async def test_the_same_key_at_two_base_urls_is_refused_naming_both_labels() -> None:
    async with Simulator(sim_config()) as sim:
        first = sim.base_url("runbase")
        other = first.replace("127.0.0.1", "localhost")
        lanes = [
            gi.Lane("runbase", "sk-fix-same", base_url=first, label="x"),
            gi.Lane("runbase", "sk-fix-same", base_url=other, label="y"),
        ]
        with pytest.raises(gi.ConfigurationError) as info:
            gi.Session(lanes=lanes, remember=False)
        assert sim.stats.requests == 0
    message = str(info.value)
    assert "'x' and 'y' are the same key" in message
    assert first in message and other in message
    assert "sk-fix-same" not in message
