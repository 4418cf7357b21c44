"""The Session end to end, against the simulator over loopback."""

from __future__ import annotations

import asyncio
import itertools
import logging

import aiohttp
import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, Simulator
from gptimage_async.testing import TEST_KEYS, memory_session, scaled_rate_limit, simulated_session

from ._clock import FakeClock
from .helpers import config

PROVIDERS = ["runbase", "apiinone"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_generate_returns_urls_that_serve_pngs(provider: str) -> None:
    async with simulated_session(provider, config=config()) as (sim, session):  # type: ignore[arg-type]
        result = await session.generate("a ceramic lamp", aspect_ratio="3:2", quality="high")
        assert result.urls and result.run_id
        assert result.provider == provider
        assert result.request == gi.ImageRequest("a ceramic lamp", "3:2", "high")
        assert result.elapsed is not None and result.elapsed > 0
        async with aiohttp.ClientSession() as http, http.get(result.urls[0]) as resp:
            body = await resp.read()
        assert body.startswith(b"\x89PNG\r\n\x1a\n")
        assert sim.stats.creates == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_submit_then_await_run(provider: str) -> None:
    async with simulated_session(provider, config=config()) as (sim, session):  # type: ignore[arg-type]
        run = await session.submit("a chair")
        assert run.id in sim.runs
        assert run.provider == provider
        assert run.status in (gi.RunStatus.PENDING, gi.RunStatus.RUNNING)
        assert run in session.runs and session.runs.get(run.id or "") is run
        result = await run
        assert result.run_id == run.id
        assert run.status is gi.RunStatus.SUCCEEDED and run.done()
        assert await run.result() == result  # awaiting twice is fine
        assert run not in session.runs
        assert session.runs.counts()["succeeded"] == 1


async def test_generate_many_keeps_input_order_and_mixes_errors() -> None:
    async with simulated_session(config=config(failure_rate=0.3)) as (sim, session):
        prompts = [f"prompt {i}" for i in range(40)]
        outcomes = await session.generate_many(
            [*prompts, gi.ImageRequest("a chair", aspect_ratio="2:3")], return_exceptions=True
        )
        assert len(outcomes) == 41
        failed = [o for o in outcomes if isinstance(o, gi.RunFailedError)]
        assert 0 < len(failed) < 41
        for i, outcome in enumerate(outcomes[:40]):
            if isinstance(outcome, gi.Result):
                assert outcome.request is not None and outcome.request.prompt == prompts[i]
                assert sim.runs[outcome.run_id].prompt == prompts[i]
        assert sim.stats.duplicates == 0


async def test_generate_many_raises_first_error_without_sending_invalid_batches() -> None:
    async with simulated_session(config=config()) as (sim, session):
        with pytest.raises(gi.InvalidRequestError):
            await session.generate_many(["fine", ""])
        assert sim.stats.requests == 0
        outcomes = await session.generate_many(["fine", ""], return_exceptions=True)
        assert isinstance(outcomes[0], gi.Result)
        assert isinstance(outcomes[1], gi.InvalidRequestError)
        assert sim.stats.create_requests == 1


async def test_as_completed_yields_in_finishing_order_with_indexes() -> None:
    async with simulated_session(config=config(duration="uniform")) as (sim, session):
        seen: list[int] = []
        finished_at: list[float] = []
        async for run in session.as_completed([f"p{i}" for i in range(30)] + [""]):
            assert run.done()
            assert run.index is not None
            seen.append(run.index)
            if run.id is None:
                assert isinstance(run.error, gi.InvalidRequestError)
            else:
                finished_at.append(sim.runs[run.id].finishes_at)
        assert sorted(seen) == list(range(31))
        # Finishing order, give or take one poll of detection jitter.
        inversions = sum(1 for a, b in itertools.pairwise(finished_at) if b < a - 0.05)
        assert inversions <= 3


async def test_as_completed_respects_concurrency(fake_clock: FakeClock) -> None:
    async def body() -> tuple[int, int]:
        async with memory_session(config=config()) as (_sim, session):
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, len(session.runs))
                    await asyncio.sleep(0.002)  # fake time: a look every 2 ms, no wall time

            watcher = asyncio.create_task(watch())
            count = 0
            async for run in session.as_completed([f"p{i}" for i in range(25)], concurrency=3):
                assert run.error is None
                count += 1
            watcher.cancel()
        return count, peak

    count, peak = await fake_clock.run(body())
    assert count == 25
    assert 0 < peak <= 3


async def test_thousand_concurrent_runs_resolve_exactly_once(fake_clock: FakeClock) -> None:
    # In memory on the fake clock: the thousand runs' 3-10 s take no wall time.
    cfg = config(rate_limit=None)

    async def body() -> None:
        async with memory_session(config=cfg, rate_limit=gi.RateLimit(20_000, 1.0)) as (
            sim,
            session,
        ):
            runs = await asyncio.gather(*(session.submit(f"p{i}") for i in range(1000)))
            results = await asyncio.gather(*runs)
            assert len({r.run_id for r in results}) == 1000
            # Each run holds the one result its await gave, under its own id.
            assert all(run.outcome is result for run, result in zip(runs, results, strict=True))
            assert all(run.id == result.run_id for run, result in zip(runs, results, strict=True))
            assert sim.stats.creates == 1000 and sim.stats.duplicates == 0
            assert len(session.runs) == 0
            assert session.runs.counts()["succeeded"] == 1000

    await fake_clock.run(body())


async def test_attach_picks_up_a_run_from_an_earlier_session() -> None:
    cfg = config(duration="fixed", duration_median=10.0)  # 100 ms
    async with Simulator(cfg) as sim:
        options = {
            "api_key": TEST_KEYS["runbase"],
            "base_url": sim.base_url("runbase"),
            "rate_limit": scaled_rate_limit(cfg),
        }
        async with gi.Session("runbase", on_exit="cancel", **options) as first:
            run = await first.submit("made before a restart")
        assert isinstance(run.error, gi.SessionClosedError)
        assert run.id is not None and run.error.run_id == run.id
        async with gi.Session("runbase", **options) as second:
            attached = second.attach(run.id)
            assert second.attach(run.id) is attached  # already tracked: same handle
            result = await attached
        assert result.run_id == run.id and result.urls
        assert sim.stats.creates == 1 and sim.stats.create_requests == 1


async def test_attach_unknown_run_ends_with_run_not_found() -> None:
    async with simulated_session(config=config()) as (sim, session):
        run = session.attach("run_does_not_exist")
        with pytest.raises(gi.RunNotFoundError) as info:
            await run
        assert info.value.status_code == 404
        assert info.value.run_id == "run_does_not_exist"
        assert run.status is gi.RunStatus.ERRORED
        assert sim.stats.creates == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_failed_runs_raise_run_failed_error(provider: str) -> None:
    async with simulated_session(provider, config=config(failure_rate=1.0)) as (sim, session):  # type: ignore[arg-type]
        run = await session.submit("doomed")
        with pytest.raises(gi.RunFailedError) as info:
            await run
        assert info.value.run_id == run.id
        assert info.value.message
        assert run.status is gi.RunStatus.FAILED


async def test_run_timeout_resolves_with_run_timeout_error() -> None:
    cfg = config(duration="fixed", duration_median=1000.0)
    async with simulated_session(config=cfg, run_timeout=0.3, on_exit="wait") as (sim, session):
        run = await session.submit("never finishes in time")
        with pytest.raises(gi.RunTimeoutError) as info:
            await run
        assert isinstance(info.value, TimeoutError)
        assert info.value.run_id == run.id
        assert run.polls >= 1


async def test_result_wait_timeout_leaves_the_run_running() -> None:
    cfg = config(duration="fixed", duration_median=20.0)  # 200 ms
    async with simulated_session(config=cfg) as (sim, session):
        run = await session.submit("slow")
        with pytest.raises(TimeoutError):
            await run.result(timeout=0.01)
        assert not run.done()
        assert (await run).run_id == run.id


async def test_cancelling_an_awaiting_task_disturbs_nothing() -> None:
    cfg = config(duration="fixed", duration_median=20.0)  # 200 ms: still running below
    async with simulated_session(config=cfg) as (sim, session):
        runs = [await session.submit(f"p{i}") for i in range(5)]
        assert not runs[0].done()
        waiter = asyncio.create_task(runs[0].result())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not runs[0].done()  # the run itself carries on
        results = await asyncio.gather(*runs)
        assert all(r.urls for r in results)


async def test_cancelling_submit_after_send_does_not_lose_the_run(fake_clock: FakeClock) -> None:
    # In memory on the fake clock: the create is held by the simulator (created,
    # its answer 50 ms away) when the caller is cancelled, at no wall time.
    cfg = config(faults=Faults(slow=1.0, slow_seconds=5.0))  # answers after 50 ms

    async def body() -> gi.Run:
        async with memory_session(config=cfg) as (sim, session):
            task = asyncio.create_task(session.submit("paid for"))
            await sim.until(lambda: sim.stats.creates == 1)  # created; its answer on its way
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with asyncio.timeout(5):  # fake seconds
                while len(session.runs) == 0:  # noqa: ASYNC110 - fake time, bounded
                    await asyncio.sleep(0.005)
            tracked = list(session.runs)
            assert len(tracked) == 1 and tracked[0].id in sim.runs
        return tracked[0]

    run = await fake_clock.run(body())
    assert run.done()


async def test_exit_waits_for_runs_in_flight_by_default() -> None:
    async with simulated_session(config=config()) as (sim, session):
        runs = [await session.submit(f"p{i}") for i in range(5)]
    assert all(r.status is gi.RunStatus.SUCCEEDED for r in runs)
    assert session.closed


async def test_exit_with_cancel_resolves_runs_with_session_closed() -> None:
    cfg = config(duration="fixed", duration_median=1000.0)
    async with simulated_session(config=cfg, on_exit="cancel") as (sim, session):
        runs = [await session.submit(f"p{i}") for i in range(3)]
    for run in runs:
        with pytest.raises(gi.SessionClosedError) as info:
            await run
        assert info.value.run_id == run.id
    assert session.runs.counts()["errored"] == 3


async def test_exception_inside_block_cancels_and_propagates() -> None:
    cfg = config(duration="fixed", duration_median=1000.0)
    run: gi.Run | None = None
    with pytest.raises(KeyError):  # noqa: PT012 - the raise must happen inside the block
        async with simulated_session(config=cfg) as (sim, session):
            run = await session.submit("p")
            raise KeyError("boom")
    assert run is not None and isinstance(run.error, gi.SessionClosedError)


async def test_closed_session_refuses_reuse() -> None:
    async with simulated_session(config=config()) as (sim, session):
        pass
    with pytest.raises(gi.SessionClosedError):
        await session.submit("again")
    with pytest.raises(gi.SessionClosedError):
        async with session:
            pass
    await session.aclose()  # closing twice is harmless
    fresh = gi.Session("runbase", api_key="sk-x", base_url="http://127.0.0.1:9/api/v1")
    with pytest.raises(gi.SessionClosedError):
        await fresh.submit("not opened")


async def test_validation_happens_before_any_request() -> None:
    async with simulated_session("apiinone", config=config()) as (sim, session):
        for bad in ("", "ab", "x" * 5001):
            with pytest.raises(gi.InvalidRequestError):
                await session.submit(bad)
        with pytest.raises(gi.InvalidRequestError):
            await session.submit("fine prompt", aspect_ratio="4:3")  # type: ignore[arg-type]
        with pytest.raises(gi.InvalidRequestError):
            await session.submit("fine prompt", image_urls=["file:///etc/passwd"])
        assert sim.stats.requests == 0


def test_configuration_errors_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNBASE_API_KEY", raising=False)
    monkeypatch.delenv("APIINONE_API_KEY", raising=False)
    with pytest.raises(gi.ConfigurationError, match="RUNBASE_API_KEY"):
        gi.Session("runbase")
    with pytest.raises(gi.ConfigurationError, match="APIINONE_API_KEY"):
        gi.Session("apiinone")
    with pytest.raises(gi.ConfigurationError, match="unknown provider"):
        gi.Session("openai", api_key="k")
    with pytest.raises(gi.ConfigurationError, match="loopback"):
        gi.Session("runbase", api_key="k", base_url="http://example.com/api/v1")
    with pytest.raises(gi.ConfigurationError):
        gi.Session("runbase", api_key="k", base_url="https://user:pw@example.com/api/v1")
    with pytest.raises(gi.ConfigurationError):
        gi.Session("runbase", api_key="k", run_timeout=0)
    with pytest.raises(gi.ConfigurationError):
        gi.Session("runbase", api_key="k", on_exit="later")  # type: ignore[arg-type]
    monkeypatch.setenv("RUNBASE_API_KEY", "sk-from-env")
    session = gi.Session("runbase", base_url="http://127.0.0.1:9/api/v1")
    assert session.base_url == "http://127.0.0.1:9/api/v1"
    gi.Session("runbase", api_key="k", base_url="http://[::1]:9/api/v1")
    gi.Session("runbase", api_key="k", base_url="http://localhost:9/api/v1")


async def test_key_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    canary = "sk-CANARY-0b5e1d"
    caplog.set_level(logging.DEBUG, logger="gptimage_async")
    async with simulated_session(config=config(), api_key=canary) as (sim, session):
        run = await session.submit("p")
        result = await run
        texts = [repr(session), repr(run), repr(result), repr(session.stats), repr(session.limiter)]
        texts += [repr(session.config), str(session.__dict__)]
    assert canary not in "\n".join(texts)
    assert canary not in caplog.text
    bad = gi.Session("runbase", api_key="sk-WRONG-CANARY", base_url="http://127.0.0.1:9/v1")
    assert "WRONG" not in repr(bad)


async def test_closing_an_unopened_session_is_harmless() -> None:
    session = gi.Session("runbase", api_key="sk-x")
    await session.aclose()
    assert session.closed


async def test_as_completed_with_concurrency_ends_when_the_source_does() -> None:
    async with simulated_session(config=config()) as (sim, session):
        indexes = [run.index async for run in session.as_completed(["a", "b", "c"], concurrency=2)]
        assert sorted(i for i in indexes if i is not None) == [0, 1, 2]


async def test_as_completed_reraises_an_error_from_the_source() -> None:
    def prompts():  # type: ignore[no-untyped-def]
        yield "fine"
        raise OSError("disk gone")

    async with simulated_session(config=config()) as (sim, session):
        with pytest.raises(OSError, match="disk gone"):
            async for _ in session.as_completed(prompts()):
                pass


async def test_on_send_runs_before_each_attempt_and_can_veto() -> None:
    cfg = config(faults=Faults(create_5xx=0.5))
    async with simulated_session(config=cfg, max_create_attempts=30) as (sim, session):
        calls: list[int] = []
        await session.submit("journaled", on_send=lambda: calls.append(sim.stats.create_requests))
        # Called once per attempt, each time before that attempt reached the server.
        assert calls == list(range(len(calls)))
        assert len(calls) == sim.stats.create_requests

        def disk_full() -> None:
            raise OSError("no space left")

        before = sim.stats.create_requests
        with pytest.raises(OSError, match="no space"):
            await session.submit("never sent", on_send=disk_full)
        assert sim.stats.create_requests == before
