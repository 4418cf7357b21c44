"""The example apps, served for real on loopback, under concurrent HTTP clients.

Each test runs against both examples: ``examples/fastapi_app.py`` under
uvicorn, and ``examples/aiohttp_app.py`` under aiohttp's ``AppRunner`` with
handler cancellation off (``run_app``'s default) and on (a client that goes
away cancels its handler). Both apps point at an in-process simulator with
Runbase's real rate limit, compressed 100x.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

import gptimage_async as gi
from gptimage_async.simulator import Faults, Simulator

from .conftest import SessionLog
from .servers import client, eventually, load_example, serve_aiohttp, serve_uvicorn, session_options

fastapi_app = load_example("fastapi_app")
aiohttp_app = load_example("aiohttp_app")

Serve = Callable[..., AbstractAsyncContextManager[str]]
FRAMEWORKS = ["fastapi", "aiohttp", "aiohttp-cancelling"]
#: Handler cancellation only changes what happens when a client goes away.
BOTH_APPS = pytest.mark.parametrize("serve", ["fastapi", "aiohttp"], indirect=True)


@pytest.fixture(params=FRAMEWORKS)
def serve(request: pytest.FixtureRequest, sim: Simulator) -> Serve:
    """``serve(**create_app_options)``: the example app on loopback, yielding its URL."""
    framework: str = request.param

    @contextlib.asynccontextmanager
    async def start(**options: Any) -> AsyncIterator[str]:
        options = session_options(sim) | options
        if framework == "fastapi":
            server = serve_uvicorn(fastapi_app.create_app(**options))
        else:
            server = serve_aiohttp(
                aiohttp_app.create_app(**options),
                handler_cancellation=framework == "aiohttp-cancelling",
            )
        async with server as url:
            yield url

    return start


async def post(http: aiohttp.ClientSession, path: str, prompt: str) -> tuple[int, Any]:
    async with http.post(path, json={"prompt": prompt}) as resp:
        return resp.status, await resp.json()


def provider_id(run_id: str) -> str:
    """The provider's id inside an id the apps hand out (``<provider id>.<signature>``)."""
    return run_id.rpartition(".")[0]


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with http.get(path) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def check_until_done(
    http: aiohttp.ClientSession, run_ids: list[str], within: float = 5.0
) -> list[dict[str, Any]]:
    """GET /runs/{id} for every id until none is pending or running (as a client would)."""
    async with asyncio.timeout(within):
        while True:
            answers = await asyncio.gather(*(get(http, f"/runs/{run_id}") for run_id in run_ids))
            assert all(status == 200 for status, _ in answers), answers
            bodies = [body for _, body in answers]
            if all(body["status"] not in ("pending", "running") for body in bodies):
                return bodies
            await asyncio.sleep(0.02)


@BOTH_APPS
async def test_parallel_requests_share_one_session_and_its_limiter(
    serve: Serve, sim: Simulator, created_sessions: SessionLog
) -> None:
    n = 40  # twice the key's limit per window: sessions per request would storm
    # Compressed 25x, not 100x: the limiter's 2% pacing margin is then 8 ms, more
    # than a loaded event loop's lag (the client and the simulator share this loop).
    sim.config = sim.config.replace(time_scale=0.04)
    async with serve() as url, client(url) as http:
        session = created_sessions.only
        assert not session.closed
        answers = await asyncio.gather(*(post(http, "/generate", f"lamp {i}") for i in range(n)))

    assert [status for status, _ in answers] == [200] * n
    assert all(body["urls"] and body["run_id"] for _, body in answers)
    assert len({body["run_id"] for _, body in answers}) == n
    assert {provider_id(body["run_id"]) for _, body in answers} == set(sim.runs)
    assert created_sessions.only is session  # every request used the app's one session
    assert sim.stats.creates == n
    assert sim.stats.duplicates == 0
    # One limiter paces all 40 handlers together: no 429 storm (a session per
    # request draws ~66%). The bound allows jitter.
    assert sim.stats.rate_limited <= 0.05 * sim.stats.requests, sim.stats
    assert session.stats.requests == sim.stats.requests
    assert session.closed


@BOTH_APPS
async def test_submit_returns_an_id_to_check_later(
    serve: Serve, sim: Simulator, created_sessions: SessionLog
) -> None:
    n = 30
    # Runs of 20 s (200 ms here): "answered at once" must not mean "faster than a
    # loaded machine schedules 30 handlers", which a 3-10 s run (30-100 ms) did.
    sim.config = sim.config.replace(duration="fixed", duration_median=20.0)
    async with serve() as url, client(url) as http:

        async def submit(prompt: str) -> tuple[str, float]:
            status, body = await post(http, "/runs", prompt)
            assert status == 202
            return body["run_id"], time.monotonic()

        submitted = await asyncio.gather(*(submit(f"vase {i}") for i in range(n)))
        run_ids = [run_id for run_id, _ in submitted]
        # Answered at once: every id reached the client before its run finished.
        assert all(sim.runs[provider_id(run_id)].finishes_at > at for run_id, at in submitted)
        done = await check_until_done(http, run_ids)
        session = created_sessions.only
        # Finished runs are answered from the app's RecentRuns, not attached again.
        polls = sim.stats.polls
        again = await asyncio.gather(*(get(http, f"/runs/{run_id}") for run_id in run_ids))
        assert sim.stats.polls == polls

    assert [body["status"] for body in done] == ["succeeded"] * n
    for run_id, body in zip(run_ids, done, strict=True):
        assert body["run_id"] == run_id
        assert list(sim.runs[provider_id(run_id)].urls) == body["urls"]
    assert [body for _, body in again] == done
    assert session.runs.counts()["succeeded"] == n
    assert sim.stats.duplicates == 0


@BOTH_APPS
async def test_run_ids_survive_a_restart(
    serve: Serve, sim: Simulator, created_sessions: SessionLog, caplog: pytest.LogCaptureFixture
) -> None:
    # Runs of 1000-1200 s (10-12 s here) are still in flight when the first process
    # stops, however loaded the machine; the provider finishes them before the second starts.
    sim.config = sim.config.replace(duration_min=1000.0, duration_max=1200.0)
    secret = "the app's secret, the same in every process"
    async with serve(shutdown_timeout=0, secret=secret) as url, client(url) as http:
        submitted = await asyncio.gather(*(post(http, "/runs", f"chair {i}") for i in range(5)))
        run_ids = [body["run_id"] for _, body in submitted]
    first = created_sessions.only
    assert first.closed
    assert first.runs.counts()["errored"] == 5  # closed under them: SessionClosedError
    assert sorted(run.id or "" for run in first.runs.abandoned) == sorted(map(provider_id, run_ids))
    assert "5 run(s) still in flight" in caplog.text
    assert all(provider_id(run_id) in caplog.text for run_id in run_ids)
    for run_id in run_ids:  # done on the provider's side while no process is up
        sim.runs[provider_id(run_id)].finishes_at = time.monotonic()

    async with serve(secret=secret) as url, client(url) as http:
        done = await check_until_done(http, run_ids)
        requests = sim.stats.requests
        unknown = await get(http, "/runs/run_neverexisted")

    second = created_sessions.sessions[1]
    assert second is not first
    assert unknown[0] == 404 and sim.stats.requests == requests  # asked nobody
    assert [body["status"] for body in done] == ["succeeded"] * 5
    assert [body["urls"] for body in done] == [list(sim.runs[provider_id(i)].urls) for i in run_ids]
    assert sim.stats.creates == 5  # checking attached the runs again; nothing was created twice


@BOTH_APPS
async def test_only_the_apps_own_runs_are_served(
    serve: Serve, sim: Simulator, created_sessions: SessionLog
) -> None:
    # A run of the same key that this app did not create (another client's).
    async with gi.Session(**session_options(sim)) as other:
        foreign = (await other.generate("not yours")).run_id
    async with serve() as url, client(url) as http:
        status, body = await post(http, "/runs", "ours")
        assert status == 202
        ours = body["run_id"]
        signature = ours.rpartition(".")[2]
        await check_until_done(http, [ours])
        made_up = (
            [f"run_{i:04d}" for i in range(50)]
            + [
                foreign,  # a real run id, not this app's
                f"{foreign}.{signature}",  # this app's signature on another id
                provider_id(ours),  # our run's bare provider id, unsigned
                ours[:-2] + ("AA" if not ours.endswith("AA") else "BB"),  # a forged signature
                f"{provider_id(ours)}.",
            ]
        )
        answers = await asyncio.gather(*(get(http, f"/runs/{run_id}") for run_id in made_up))
        # Meanwhile a real client is served as usual.
        status, body = await post(http, "/generate", "a real request")
        assert status == 200 and body["urls"]
        generated = await get(http, f"/runs/{body['run_id']}")
    assert [status for status, _ in answers] == [404] * len(made_up)
    assert all(body["detail"] == "no such run" for _, body in answers)
    # Unknown ids cost nothing at the provider: none was attached, polled or answered 404.
    assert created_sessions.only.runs.total == 2  # ours and the real request's
    assert sim.stats.status_counts[404] == 0
    assert sim.stats.creates == 3
    assert generated[0] == 200 and generated[1]["status"] == "succeeded"


async def test_client_disconnect_leaves_other_requests_and_the_run_alone(
    serve: Serve, sim: Simulator, created_sessions: SessionLog
) -> None:
    before = asyncio.all_tasks()
    async with serve() as url:
        async with client(url) as http:
            others = [
                asyncio.create_task(post(http, "/generate", f"steady {i}")) for i in range(20)
            ]
            session = created_sessions.only
            async with client(url) as quitter:
                abandoned = asyncio.create_task(post(quitter, "/generate", "abandoned"))
                await eventually(lambda: _find(session, "abandoned") is not None)
                run = _find(session, "abandoned")
                assert run is not None
                abandoned.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await abandoned
            # The quitter's connection is gone while the server still waits on its run.
            assert not run.done()
            answers = await asyncio.gather(*others)
            result = await run  # the session resolved it all the same
        await eventually(lambda: not session.runs)
        counts = session.runs.counts()

    assert [status for status, _ in answers] == [200] * 20
    assert result.urls == list(sim.runs[result.run_id].urls)
    assert counts["succeeded"] == sim.stats.creates == 21
    assert session.closed
    # aiohttp's per-connection tasks unwind a loop iteration or two after cleanup.
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: asyncio.all_tasks() == before, within=0.5)
    assert asyncio.all_tasks() == before  # nothing left running: server, session, handlers


async def test_client_gone_while_its_create_is_in_flight_does_not_orphan_the_run(
    serve: Serve, sim: Simulator, created_sessions: SessionLog
) -> None:
    # The create is made at once but its answer held for 0.1 s: the client leaves meanwhile.
    sim.set_faults(Faults(slow=1.0, slow_seconds=10.0))
    async with serve() as url:
        session = created_sessions.only
        async with client(url) as quitter:
            abandoned = asyncio.create_task(post(quitter, "/generate", "paid for"))
            async with asyncio.timeout(5):
                await sim.until(lambda: sim.stats.creates == 1)  # made; its answer held
            abandoned.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await abandoned
        sim.set_faults(Faults())
        [run_id] = sim.runs
        await eventually(lambda: session.runs.counts()["succeeded"] == 1)
        assert sim.runs[run_id].first_seen_done_at is not None  # resolved by polling it
    assert session.stats.uncertain_creates == 0
    assert sim.stats.creates == 1


@BOTH_APPS
async def test_invalid_input_is_refused_before_anything_is_sent(
    serve: Serve, sim: Simulator
) -> None:
    async with serve() as url, client(url) as http:
        empty = await post(http, "/generate", "   ")
        async with http.post("/runs", json={"prompt": "a lamp", "quality": "low"}) as resp:
            bad_quality = resp.status
    assert empty[0] == 422
    assert bad_quality == 422
    assert sim.stats.requests == 0


@BOTH_APPS
async def test_shutdown_waits_for_runs_in_flight_then_closes(
    serve: Serve, sim: Simulator, created_sessions: SessionLog
) -> None:
    sim.config = sim.config.replace(duration_min=20.0, duration_max=30.0)  # 0.2-0.3 s
    async with serve(shutdown_timeout=5) as url, client(url) as http:
        submitted = await asyncio.gather(*(post(http, "/runs", f"bowl {i}") for i in range(5)))
        assert all(status == 202 for status, _ in submitted)
        stopping = time.monotonic()
    took = time.monotonic() - stopping
    session = created_sessions.only
    assert session.closed
    assert session.runs.counts()["succeeded"] == 5  # the grace period let them finish
    assert took < 2.0
    requests = sim.stats.requests
    await asyncio.sleep(0.05)
    assert sim.stats.requests == requests  # closed means closed: nothing polls any more


def _find(session: gi.Session, prompt: str) -> gi.Run | None:
    return next((r for r in session.runs if r.request and r.request.prompt == prompt), None)
