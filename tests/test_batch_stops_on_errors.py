"""A batch stopped by an error no prompt can escape keeps the runs it paid for.

The spend cap reached, every lane of a pool closed, the key out of credits:
no prompt can be created any more, but the runs already created were paid
for. The batch stops creating and follows those runs to their end, saving
their images; the prompts never sent stay ``pending`` for a rerun. A Ctrl-C
(``stop()``) while it does so stops that waiting too. The simulator is a
real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

KEY_A, KEY_B = "sk-stop-a", "sk-stop-b"
FAST = gi.RateLimit(1000, 1.0)
PROMPTS = [f"a lamp, take {i}" for i in range(30)]


def lane(sim: Simulator, key: str, price: float, rate: gi.RateLimit = FAST) -> gi.Lane:
    return gi.Lane(
        "runbase",
        key,
        base_url=sim.base_url("runbase"),
        rate_limit=rate,
        prices={"medium": price, "high": 3 * price},
    )


def config(**account: object) -> SimulatorConfig:
    # Runs of 3-10 provider seconds take 0.15-0.5 s here: several are in flight at the stop.
    return SimulatorConfig(
        rate_limit=None,
        seed=7,
        api_keys=frozenset({KEY_A, KEY_B}),
        **{"time_scale": 0.05, **account},
    )  # type: ignore[arg-type]


def finished_runs_kept(report: gi.BatchReport, out: Path) -> list[gi.ManifestEntry]:
    created = [e for e in report.entries if e.run_id is not None]
    # Every created run ended here, its image saved: none is left pending for a rerun.
    assert all(e.status == "succeeded" for e in created), [(e.status, e.error) for e in created]
    assert all(e.files and (out / e.files[0]).is_file() for e in created)
    never_sent = [e for e in report.entries if e.run_id is None]
    assert {e.status for e in never_sent} <= {"pending", "failed"}
    return created


@pytest.mark.parametrize(
    ("cap", "rate"),
    # Unpaced, and paced so that creates wait for a slot with their spend reserved.
    [(40, FAST), (41.5, FAST), (40, gi.RateLimit(10, 0.5))],
)
async def test_the_spend_cap_reached_finishes_the_runs_it_paid_for(
    tmp_path: Path, cap: float, rate: gi.RateLimit
) -> None:
    async with Simulator(config()) as sim:
        lanes = [lane(sim, KEY_A, 4, rate), lane(sim, KEY_B, 5, rate)]
        async with gi.Session(lanes=lanes, spend_cap=cap) as session:
            report = await gi.Batch(session, PROMPTS, tmp_path).run()
            spend = session.stats.spend
        assert report.stopped and report.stop_reason is not None
        assert "in a row" not in report.stop_reason and "spend" in report.stop_reason.lower()
        assert report.stop_cause is gi.BatchStop.SPEND_CAP
        created = finished_runs_kept(report, tmp_path)
        assert 8 <= len(created) == sim.stats.creates
        assert spend.spent <= cap and spend.reserved == 0
        # The creates already reserved under the cap still went: it is used up to
        # less than one more image (4 or 5 a run), not stopped at its first refusal.
        assert spend.spent > cap - 5, spend
        counts = collections.Counter(e.status for e in report.entries)
        assert counts["pending"] + counts["failed"] == len(PROMPTS) - len(created)

        # The rerun, with room for the rest, sends only what was never sent.
        async with gi.Session(lanes=lanes) as session:
            again = await gi.Batch(session, PROMPTS, tmp_path).run()
        assert again.ok and again.skipped == len(created)
        assert sim.stats.creates == len(PROMPTS) and sim.stats.duplicates == 0


async def test_every_lane_out_of_credits_finishes_the_runs_it_paid_for(tmp_path: Path) -> None:
    # Each key has credits for 6 runs at the simulator's 10 a run: then 402.
    async with Simulator(config(credits=60)) as sim:
        lanes = [lane(sim, KEY_A, 10), lane(sim, KEY_B, 10)]
        async with gi.Session(lanes=lanes) as session:
            report = await gi.Batch(session, PROMPTS, tmp_path).run()
        assert report.stopped and report.stop_reason is not None
        assert "in a row" not in report.stop_reason
        assert report.stop_cause in (gi.BatchStop.NO_LANE, gi.BatchStop.KEY_REFUSED)
        created = finished_runs_kept(report, tmp_path)
        assert len(created) == sim.stats.creates == 12


async def test_a_stop_while_it_finishes_them_leaves_them_for_a_rerun(tmp_path: Path) -> None:
    async with Simulator(config(time_scale=0.15)) as sim:  # runs of 0.45-1.5 s
        lanes = [lane(sim, KEY_A, 4), lane(sim, KEY_B, 5)]
        async with gi.Session(lanes=lanes, spend_cap=40, on_exit="cancel") as session:
            batch: gi.Batch

            def on_event(event: gi.BatchEvent) -> None:
                if event.kind == "stopping" and event.message is not None:
                    batch.stop()  # as a Ctrl-C right after the cap stopped it

            batch = gi.Batch(session, PROMPTS, tmp_path, on_event=on_event)
            report = await batch.run()
        left = [e for e in report.entries if e.run_id is not None and e.status == "pending"]
        assert left, "the user's stop left the runs in flight for a rerun"
        async with gi.Session(lanes=lanes) as session:
            again = await gi.Batch(session, PROMPTS, tmp_path).run()
        assert again.attached == len(left) and again.ok
        assert sim.stats.duplicates == 0
