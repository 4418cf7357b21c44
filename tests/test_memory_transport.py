"""The in-memory transport: a real simulator's pipeline, no socket, the fake loop clock.

Every test here runs in fake time (``fake_clock``): a run of several
simulated seconds, a slow answer past the request timeout, a Retry-After,
all cost no wall time and no sleep.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, SimulatorConfig
from gptimage_async.testing import memory_session

from ._clock import FakeClock

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("provider", ["runbase", "apiinone"])
async def test_a_run_end_to_end_in_fake_time(fake_clock: FakeClock, provider: str) -> None:
    config = SimulatorConfig(time_scale=1.0, duration_min=20.0, duration_max=30.0, seed=3)
    started = time.monotonic()
    async with memory_session(provider, config=config) as (sim, session):  # type: ignore[arg-type]
        result = await fake_clock.run(session.generate("a lamp"))
    assert result.urls and sim.stats.creates == 1
    assert fake_clock.time() >= 20.0  # the run took simulated seconds...
    assert time.monotonic() - started < 5.0  # ...and no wall time to speak of


async def test_a_reset_is_a_send_error_that_may_have_been_received(fake_clock: FakeClock) -> None:
    config = SimulatorConfig(time_scale=0.01, faults=Faults(reset_after_create=1.0), seed=1)
    async with memory_session(config=config) as (sim, session):
        with pytest.raises(gi.UncertainCreateError, match="reset"):
            await fake_clock.run(session.submit("a lamp"))
    assert sim.stats.creates == 1  # it was created: uncertain, and not sent again


async def test_a_reset_before_any_work_is_still_uncertain_as_on_a_socket(
    fake_clock: FakeClock,
) -> None:
    # Over TCP the client cannot tell a reset before the work from one after it.
    config = SimulatorConfig(time_scale=0.01, faults=Faults(reset=1.0), seed=1)
    async with memory_session(config=config) as (sim, session):
        with pytest.raises(gi.UncertainCreateError):
            await fake_clock.run(session.submit("a lamp"))
    assert sim.stats.creates == 0


async def test_a_slow_answer_times_out_in_fake_time(fake_clock: FakeClock) -> None:
    config = SimulatorConfig(faults=Faults(slow=1.0, slow_seconds=500.0), seed=1)
    started = time.monotonic()
    async with memory_session(config=config, request_timeout=7.0) as (_, session):
        with pytest.raises(gi.UncertainCreateError, match="7s"):
            await fake_clock.run(session.submit("a lamp"))
    assert 7.0 <= fake_clock.time() < 500.0
    assert time.monotonic() - started < 5.0


async def test_a_rate_limit_is_waited_out_in_fake_time(fake_clock: FakeClock) -> None:
    config = SimulatorConfig(time_scale=1.0, rate_limit=2, rate_window=10.0, seed=2)
    async with memory_session(config=config, rate_limit=gi.RateLimit(100, 1.0)) as (
        sim,
        session,
    ):
        results = await fake_clock.run(session.generate_many([f"p{i}" for i in range(4)]))
    assert len(results) == 4 and sim.stats.rate_limited >= 1
    assert sim.stats.duplicates == 0


async def test_images_download_through_the_same_transport(
    fake_clock: FakeClock, tmp_path: Path
) -> None:
    config = SimulatorConfig(time_scale=0.01, images_per_run=2, seed=4)
    async with memory_session(config=config) as (sim, session):
        result = await fake_clock.run(session.generate("a lamp"))
        paths = await fake_clock.run(gi.download(result, tmp_path, transport=session.transport))
        with pytest.raises(gi.DownloadError, match="only the simulator"):
            await fake_clock.run(
                gi.download("http://elsewhere.invalid/a.png", tmp_path, transport=session.transport)
            )
    assert len(paths) == 2
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)
    assert sim.stats.file_requests == 2


async def test_a_batch_runs_in_memory(fake_clock: FakeClock, tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=0.05, seed=5)
    async with memory_session(config=config) as (sim, session):
        report = await fake_clock.run(gi.Batch(session, ["a", "b", "c"], tmp_path).run())
    assert [e.status for e in report.entries] == ["succeeded"] * 3
    assert all(e.files for e in report.entries)
    assert sim.stats.creates == 3


async def test_unknown_paths_and_methods_answer_as_the_http_server_does() -> None:
    from gptimage_async.simulator import Simulator

    sim = Simulator(SimulatorConfig())
    assert (await sim.respond("GET", "/nowhere")).status == 404
    assert (await sim.respond("GET", "/runbase/api/v1/runs")).status == 405
    missing = await sim.respond(
        "GET", "/runbase/api/v1/runs/run_x", {"Authorization": "Bearer sk-sim-test"}
    )
    assert missing.status == 404 and b"not" in missing.body.lower()


async def test_a_closed_sessions_transport_fails_a_download_cleanly(tmp_path: Path) -> None:
    from gptimage_async.simulator import Simulator

    async with Simulator(SimulatorConfig(time_scale=0.01)) as sim:
        async with gi.Session(
            "runbase", api_key="sk-sim-test", base_url=sim.base_url("runbase")
        ) as session:
            result = await session.generate("a lamp")
        with pytest.raises(gi.SessionClosedError, match="closed"):
            await gi.download(result, tmp_path, transport=session.transport)
