"""The integration helpers themselves: lifecycles, lookups, and what they refuse.

Apps here are minimal (a plain Starlette app, a bare aiohttp app) so each
test shows one behaviour of ``gptimage_async.integrations``; the example apps
are exercised under load in ``test_web_apps.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, get_type_hints

import pytest
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import gptimage_async as gi
from gptimage_async.integrations import (
    RecentRuns,
    RunTokens,
    SessionOptions,
    http_status,
    run_payload,
)
from gptimage_async.integrations import aiohttp as gi_aiohttp
from gptimage_async.integrations import starlette as gi_starlette
from gptimage_async.simulator import Simulator

from .conftest import SessionLog
from .servers import client, serve_aiohttp, serve_uvicorn, session_options


def test_importing_the_library_never_imports_a_web_framework() -> None:
    code = (
        "import sys, gptimage_async, gptimage_async.integrations;"
        "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'aiohttp.web')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_session_options_name_every_session_keyword_but_on_exit() -> None:
    keywords = set(inspect.signature(gi.Session).parameters) - {"provider"}
    assert set(get_type_hints(SessionOptions)) == keywords - {"on_exit"}
    config_fields = set(get_type_hints(gi.SessionConfig)) - {"provider"}
    assert set(get_type_hints(SessionOptions)) == config_fields - {"on_exit"}


async def test_an_app_is_built_from_a_session_config(
    sim: Simulator, created_sessions: SessionLog
) -> None:
    config = gi.SessionConfig(run_timeout=30, **session_options(sim))
    app = Starlette(lifespan=gi_starlette.lifespan(config, shutdown_timeout=1))
    async with app.router.lifespan_context(app):
        session = created_sessions.only
        assert session.config is config
        assert (await session.generate("a jug")).urls
    aio = web.Application()
    gi_aiohttp.setup(aio, config)
    # The options go in the config, not beside it; an app never takes on_exit.
    with pytest.raises(gi.ConfigurationError, match="run_timeout"):
        gi_starlette.lifespan(config, run_timeout=3)
    with pytest.raises(gi.ConfigurationError, match="on_exit"):
        gi_aiohttp.setup(web.Application(), gi.SessionConfig(api_key="sk-x", on_exit="cancel"))


async def test_a_plain_starlette_app_nests_session_lifespan_in_its_own(
    sim: Simulator, created_sessions: SessionLog
) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with gi_starlette.session_lifespan(app, **session_options(sim)) as session:
            events.append(f"open {session.closed}")
            yield
        events.append(f"closed {session.closed}")

    async def generate(request: Request) -> JSONResponse:
        result = await gi_starlette.get_session(request).generate("a teapot")
        return JSONResponse({"urls": result.urls})

    app = Starlette(routes=[Route("/generate", generate, methods=["POST"])], lifespan=lifespan)
    async with serve_uvicorn(app) as url, client(url) as http:
        assert app.state.gptimage is created_sessions.only
        async with http.post("/generate") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["urls"] == list(next(iter(sim.runs.values())).urls)
    assert events == ["open False", "closed True"]


async def test_the_same_app_can_start_twice_with_a_new_session_each_time(
    sim: Simulator, created_sessions: SessionLog
) -> None:
    app = Starlette(lifespan=gi_starlette.lifespan(**session_options(sim)))
    for _ in range(2):
        async with app.router.lifespan_context(app):
            assert (
                gi_starlette.get_session(HTTPConnection({"type": "http", "app": app})).closed
                is False
            )
    first, second = created_sessions.sessions
    assert first is not second
    assert first.closed
    assert second.closed


async def test_get_session_without_the_lifespan_says_what_to_do() -> None:
    app = Starlette()
    with pytest.raises(gi.ConfigurationError, match="lifespan="):
        gi_starlette.get_session(HTTPConnection({"type": "http", "app": app}))


async def test_a_missing_api_key_stops_the_app_at_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RUNBASE_API_KEY", raising=False)
    app = Starlette(lifespan=gi_starlette.lifespan("runbase"))
    with pytest.raises(gi.ConfigurationError, match="RUNBASE_API_KEY"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"on_exit": "wait"}, "shutdown_timeout"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
        ({"shutdown_timeout": True}, "shutdown_timeout"),
        # Every session option is checked when the app is built, not at its first request.
        ({"run_timeout": 0}, "run_timeout"),
        ({"base_url": "http://example.com/api/v1"}, "loopback"),
        ({"max_connections": 0}, "max_connections"),
    ],
)
def test_bad_options_are_refused_when_the_app_is_built(options: dict[str, Any], match: str) -> None:
    with pytest.raises(gi.ConfigurationError, match=match):
        gi_starlette.lifespan(api_key="sk-test", **options)
    with pytest.raises(gi.ConfigurationError, match=match):
        gi_aiohttp.setup(web.Application(), api_key="sk-test", **options)


async def test_shutdown_closes_runs_left_after_the_grace_period(
    sim: Simulator, created_sessions: SessionLog, caplog: pytest.LogCaptureFixture
) -> None:
    sim.config = sim.config.replace(duration_min=100.0, duration_max=100.0)  # 1 s
    app = Starlette(lifespan=gi_starlette.lifespan(shutdown_timeout=0.05, **session_options(sim)))
    async with app.router.lifespan_context(app):
        session = created_sessions.only
        runs = [await session.submit(f"slow {i}") for i in range(3)]
        stopping = time.monotonic()
    took = time.monotonic() - stopping

    assert 0.05 <= took < 0.5
    assert session.closed
    for run in runs:
        assert isinstance(run.error, gi.SessionClosedError)
        assert run.error.run_id == run.id  # so a later process can attach() to it
    assert "3 run(s) still in flight; they may still finish, attach() them" in caplog.text


async def test_shutdown_timeout_none_waits_for_every_run(
    sim: Simulator, created_sessions: SessionLog
) -> None:
    sim.config = sim.config.replace(duration_min=20.0, duration_max=20.0)  # 0.2 s
    app = Starlette(lifespan=gi_starlette.lifespan(shutdown_timeout=None, **session_options(sim)))
    async with app.router.lifespan_context(app):
        runs = [await created_sessions.only.submit(f"bowl {i}") for i in range(3)]
    assert [run.status for run in runs] == [gi.RunStatus.SUCCEEDED] * 3


async def test_an_error_in_the_app_lifespan_closes_the_session_at_once(
    sim: Simulator, created_sessions: SessionLog
) -> None:
    sim.config = sim.config.replace(duration_min=100.0, duration_max=100.0)  # 1 s
    app = Starlette()
    held: list[Any] = []

    async def start_then_fail() -> None:
        async with gi_starlette.session_lifespan(app, **session_options(sim)) as session:
            held.extend([session, await session.submit("a lamp"), time.monotonic()])
            raise RuntimeError("database is down")

    with pytest.raises(RuntimeError, match="database is down"):
        await start_then_fail()
    session, run, stopping = held
    assert time.monotonic() - stopping < 0.5  # no grace period on the way out of an error
    assert session.closed
    assert isinstance(run.error, gi.SessionClosedError)


# -- aiohttp.web ---------------------------------------------------------------


async def test_aiohttp_sub_apps_find_the_session_of_their_parent(
    sim: Simulator, created_sessions: SessionLog
) -> None:
    async def generate(request: web.Request) -> web.Response:
        result = await gi_aiohttp.get_session(request).generate("a jug")
        return web.json_response({"urls": result.urls})

    api = web.Application()
    api.router.add_post("/generate", generate)
    app = web.Application()
    gi_aiohttp.setup(app, **session_options(sim))
    app.add_subapp("/api", api)
    async with serve_aiohttp(app) as url, client(url) as http:
        async with http.post("/api/generate") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert app[gi_aiohttp.SESSION_KEY] is created_sessions.only
    assert body["urls"]
    assert created_sessions.only.closed


async def test_aiohttp_without_setup_says_what_to_do() -> None:
    async def handler(request: web.Request) -> web.Response:
        try:
            gi_aiohttp.get_session(request)
        except gi.ConfigurationError as exc:
            return web.Response(text=str(exc))
        return web.Response(text="found one")

    app = web.Application()
    app.router.add_get("/", handler)
    async with serve_aiohttp(app) as url, client(url) as http, http.get("/") as resp:
        text = await resp.text()
    assert "setup(app, ...)" in text


def test_aiohttp_setup_twice_is_refused() -> None:
    app = web.Application()
    gi_aiohttp.setup(app, api_key="sk-test")
    with pytest.raises(gi.ConfigurationError, match="already"):
        gi_aiohttp.setup(app, api_key="sk-test")
    assert len(app.cleanup_ctx) == 1


async def test_aiohttp_startup_and_cleanup_may_run_in_different_tasks(
    sim: Simulator, created_sessions: SessionLog
) -> None:
    app = web.Application()
    gi_aiohttp.setup(app, **session_options(sim))
    runner = web.AppRunner(app)
    await asyncio.create_task(runner.setup())
    session = created_sessions.only
    result = await session.generate("a cup")
    await asyncio.create_task(runner.cleanup())
    assert result.urls
    assert session.closed


# -- RecentRuns ------------------------------------------------------------------


async def test_recent_runs_keep_the_newest_and_find_runs_in_flight_or_finished(
    sim: Simulator,
) -> None:
    async with gi.Session(**session_options(sim)) as session:
        recent = RecentRuns(maxlen=2)
        runs = [await session.submit(f"plate {i}") for i in range(3)]
        for run in runs:
            recent.add(run)
        assert len(recent) == 2
        assert runs[0].id not in recent  # the oldest is forgotten first
        assert recent.find(session, runs[0].id or "") is runs[0]  # still in flight
        await asyncio.gather(*runs)
        assert recent.find(session, runs[0].id or "") is None  # finished and forgotten
        assert recent.find(session, runs[2].id or "") is runs[2]  # finished and remembered
        assert runs[2].outcome is not None

        # Without tokens nothing is attached: an unsigned id could be anyone's.
        with pytest.raises(gi.ConfigurationError, match="tokens"):
            recent.find(session, runs[0].id or "", attach=True)
    assert sim.stats.creates == 3


async def test_recent_runs_find_only_the_apps_own_runs(sim: Simulator) -> None:
    # A run the app did not create: made by another client of the same key.
    async with gi.Session(**session_options(sim)) as other:
        foreign = await other.generate("someone else's lamp")
    async with gi.Session(**session_options(sim)) as session:
        tokens = RunTokens("a secret of sixteen bytes or more")
        recent = RecentRuns(tokens=tokens)
        run = await session.submit("our lamp")
        token = recent.add(run)
        assert token.startswith(f"{run.id}.") and tokens.verify(token) == run.id
        assert recent.find(session, token) is run
        assert run_payload(run, run_id=token)["run_id"] == token
        await run
        requests = sim.stats.requests
        for made_up in [
            foreign.run_id,  # a real run, of someone else
            f"{foreign.run_id}.{token.rpartition('.')[2]}",  # our signature on their id
            token[:-1] + ("A" if token[-1] != "A" else "B"),  # a forged signature
            "run_neverexisted",
            "",
            ".",
        ]:
            assert recent.find(session, made_up, attach=True) is None, made_up
        assert sim.stats.requests == requests  # no made-up id reached the provider
        assert recent.find(session, token, attach=True) is run

    # Another process with the same secret (a restart, another worker) attaches
    # the run the first handed out, and only that one.
    async with gi.Session(**session_options(sim)) as session:
        recent = RecentRuns(tokens=RunTokens("a secret of sixteen bytes or more"))
        attached = recent.find(session, token, attach=True)
        assert attached is not None and attached.id == run.id
        assert (await attached).urls == (await run).urls
        stranger = RecentRuns(tokens=RunTokens())  # a random secret: not ours
        assert stranger.find(session, token, attach=True) is None
    assert sim.stats.creates == 2


def test_run_tokens_refuse_a_short_secret_and_hide_theirs() -> None:
    with pytest.raises(gi.ConfigurationError, match="16 bytes"):
        RunTokens("short")
    tokens = RunTokens("a secret of sixteen bytes or more")
    assert "secret" not in repr(tokens)
    with pytest.raises(gi.ConfigurationError, match="RunTokens"):
        RecentRuns(tokens="a secret of sixteen bytes or more")  # type: ignore[arg-type]


async def test_recent_runs_refuse_a_run_without_an_id() -> None:
    loop = asyncio.get_running_loop()
    run = gi.Run(None, "runbase", None, created_at=loop.time(), deadline=loop.time())
    with pytest.raises(gi.ConfigurationError, match="with an id"):
        RecentRuns().add(run)
    with pytest.raises(gi.ConfigurationError):
        RecentRuns(maxlen=0)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (gi.InvalidRequestError("bad"), 422),
        (gi.BadRequestError("bad", status_code=400), 422),
        (gi.RunNotFoundError("gone", status_code=404), 404),
        (gi.RateLimitError("slow", status_code=429), 503),
        (gi.QuotaExceededError("spent", status_code=429), 503),
        (gi.SessionClosedError("closing"), 503),
        (gi.RunTimeoutError("late"), 504),
        (gi.RunFailedError("failed", run_id="r"), 502),
        (gi.UncertainCreateError("maybe", prompt="p"), 502),
        (gi.ServerError("oops", status_code=500), 502),
    ],
)
def test_http_status_maps_every_error(error: gi.GPTImageError, status: int) -> None:
    assert http_status(error) == status
