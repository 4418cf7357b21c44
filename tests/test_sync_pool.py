"""``SyncSession`` over a pool of keys: attach through the run's own lane (issue 19).

The simulator serves two keys from its own thread over HTTP on 127.0.0.1; a
run polled with a key other than the one that created it answers 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async.simulator import KeyConfig, Simulator

from .helpers import config
from .test_sync import SimulatorThread

KEYS = ("sk-sync-a", "sk-sync-b")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    holder = SimulatorThread(config(rate_limit=None, keys={key: KeyConfig() for key in KEYS}))
    with holder as sim:
        yield sim


def pool(sim: Simulator, **options: Any) -> gi.SyncSession:
    lanes = [
        gi.Lane(
            "runbase",
            key,
            base_url=sim.base_url("runbase"),
            rate_limit=gi.RateLimit(1000, 1.0),
            label=f"lane-{n}",
        )
        for n, key in enumerate(KEYS)
    ]
    return gi.SyncSession(lanes=lanes, remember=False, **options)


def test_attach_goes_through_the_lane_that_created_the_run(sim: Simulator) -> None:
    with pool(sim) as first:
        run = first.submit("a lamp")
        made_on, run_id = run.lane, run.id
        assert run.result(timeout=60).urls
    assert made_on is not None and run_id is not None
    with pool(sim) as later:
        # Named by what the manifest says, by label, or not at all (refused: a
        # pool of several); a lane not in the pool is refused before any request.
        asked = sim.stats.requests
        with pytest.raises(gi.ConfigurationError, match="lane="):
            later.attach(run_id)
        with pytest.raises(gi.ConfigurationError, match="not one of"):
            later.attach(run_id, lane="runbase:000000000000")
        assert sim.stats.requests == asked
        again = later.attach(run_id, lane=made_on, created_at=None)
        result = again.result(timeout=60)
        assert again.lane == made_on
        views = later.lanes
    assert result.urls and result.run_id == run_id
    assert made_on in {view.lane for view in views}
    assert all(view.state is gi.LaneState.OPEN for view in views)
    for key in KEYS:
        assert sim.stats.key(key).status_counts[404] == 0, key


def test_attach_by_label_in_a_pool(sim: Simulator) -> None:
    with pool(sim) as first:
        run = first.submit("a chair")
        label = next(view.label for view in first.lanes if view.lane == run.lane)
        run_id = run.id
        run.result(timeout=60)
    assert run_id is not None
    with pool(sim) as later:
        assert later.attach(run_id, lane=label).result(timeout=60).run_id == run_id
