"""Runs' outcomes and durations: failure rates, distributions, the clock, the seed."""

from __future__ import annotations

import math

import aiohttp
import pytest

from .wire import (
    ManualClock,
    aio_create,
    aio_wait,
    make,
    rb_create,
    rb_get,
    request,
    task_id_of,
    urls_at,
)

# -- run outcomes and durations ---------------------------------------------------------


@pytest.mark.parametrize("variants", [False, True])
async def test_failure_rate_runbase(session: aiohttp.ClientSession, variants: bool) -> None:
    fixed = {"duration": "fixed", "duration_median": 1.0}
    clock = ManualClock()
    async with make(failure_rate=1.0, error_variants=variants, clock=clock, **fixed) as sim:
        ids = [(await rb_create(session, sim, f"p{i}")).json()["id"] for i in range(16)]
        clock.advance(0.02)
        kinds = set()
        for run_id in ids:
            body = (await rb_get(session, sim, run_id)).json()
            assert body["status"] == "failed"
            assert "output" not in body
            error = body["error"]
            if isinstance(error, dict):
                assert set(error) == {"message", "code"}
                kinds.add("object")
            else:
                assert isinstance(error, str)
                assert error
                kinds.add("string")
            assert sim.runs[run_id].will_fail
            assert sim.runs[run_id].urls == ()
        # The documented error body is an object; the string form is a variant.
        assert kinds == ({"object", "string"} if variants else {"object"})
        answer = await request(session, "GET", f"{sim.url}/files/{ids[0]}/0.png")
        assert answer.status == 404


async def test_failure_rate_apiinone_and_mixture(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with make(failure_rate=1.0, apiinone_status_variants=False, clock=clock) as sim:
        task_id = task_id_of((await aio_create(session, sim)).json())
        fields = await aio_wait(session, sim, task_id, clock=clock)
        assert fields["status"] == "failed"
        assert fields["error"]
        assert urls_at(fields) is None
    async with make(failure_rate=0.0) as sim:
        for i in range(20):
            await rb_create(session, sim, f"p{i}")
        assert not any(run.will_fail for run in sim.runs.values())
    async with make(failure_rate=0.5) as sim:
        for i in range(60):
            await rb_create(session, sim, f"p{i}")
        failing = sum(run.will_fail for run in sim.runs.values())
        assert 15 <= failing <= 45


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("uniform", {"duration_min": 3.0, "duration_max": 10.0}),
        ("lognormal", {"duration_median": 5.5, "duration_sigma": 1.5}),
        ("fixed", {"duration_median": 4.0}),
    ],
)
async def test_duration_distributions(
    session: aiohttp.ClientSession, mode: str, extra: dict[str, float]
) -> None:
    scale = 0.01
    async with make(duration=mode, time_scale=scale, **extra) as sim:
        for i in range(60):
            await rb_create(session, sim, f"p{i}")
        durations = [run.duration / scale for run in sim.runs.values()]
        for run in sim.runs.values():
            assert math.isclose(run.started_at - run.created_at, 0.2 * run.duration)
        assert all(3.0 - 1e-6 <= d <= 10.0 + 1e-6 for d in durations)
        if mode == "fixed":
            assert all(math.isclose(d, 4.0) for d in durations)
        elif mode == "uniform":
            assert max(durations) - min(durations) > 3.0
        else:
            # sigma 1.5 sends many draws past the bounds: they are clipped to them.
            assert sum(math.isclose(d, 3.0) for d in durations) >= 3
            assert sum(math.isclose(d, 10.0) for d in durations) >= 3


async def test_status_is_read_off_the_clock(session: aiohttp.ClientSession) -> None:
    # 10 provider seconds at 0.05: pending 0-0.1 s, processing 0.1-0.5 s, then done.
    clock = ManualClock()  # provider time moved on by hand: no waiting
    async with make(duration="fixed", duration_median=10.0, time_scale=0.05, clock=clock) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        run = sim.runs[run_id]
        assert run.state(run.created_at) == "pending"
        assert run.state(run.created_at + 0.11) == "processing"
        assert run.state(run.finishes_at) == "succeeded"
        assert (await rb_get(session, sim, run_id)).json()["status"] == "pending"
        assert run.first_seen_done_at is None
        clock.advance(0.15)
        assert (await rb_get(session, sim, run_id)).json()["status"] == "processing"
        assert run.first_seen_done_at is None
        clock.advance(0.4)
        done_at = clock()
        assert (await rb_get(session, sim, run_id)).json()["status"] == "succeeded"
        first = run.first_seen_done_at
        assert first is not None
        assert run.finishes_at <= first == done_at
        await rb_get(session, sim, run_id)
        assert run.first_seen_done_at == first  # only the first one counts


async def test_seed_makes_runs_reproducible(session: aiohttp.ClientSession) -> None:
    async def sample() -> list[tuple[str, float, bool]]:
        async with make(seed=99, failure_rate=0.3) as sim:
            for i in range(5):
                await rb_create(session, sim, f"p{i}")
            return [(r.id, round(r.duration, 9), r.will_fail) for r in sim.runs.values()]

    assert await sample() == await sample()


async def test_config_changes_apply_to_the_next_request(session: aiohttp.ClientSession) -> None:
    async with make(duration="fixed", duration_median=1.0) as sim:
        ok = (await rb_create(session, sim)).json()["id"]
        sim.config = sim.config.replace(failure_rate=1.0)
        bad = (await rb_create(session, sim)).json()["id"]
        assert not sim.runs[ok].will_fail
        assert sim.runs[bad].will_fail
