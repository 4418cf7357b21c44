"""An aiohttp.web service that generates images through one shared gptimage-async session.

Run it (aiohttp is already a dependency of gptimage-async)::

    RUNBASE_API_KEY=sk-... python examples/aiohttp_app.py --port 8000

Or against the built-in simulator (any key with the provider's prefix works)::

    python -c "from gptimage_async.simulator import serve_forever; serve_forever(port=8765)" &
    RUNBASE_API_KEY=sk-sim python examples/aiohttp_app.py \\
        --base-url http://127.0.0.1:8765/runbase/api/v1

Endpoints:

- ``POST /generate``: waits for the image and returns its URLs;
- ``POST /runs``: submits and answers ``202 {"run_id": ...}`` at once;
- ``GET /runs/{run_id}``: the run's status, and its URLs once it succeeded.

Run ids are handed out signed (``RunTokens``): ``GET /runs/{run_id}``
answers only for runs this app created, and any other id is a 404 that costs
no request to the provider. Set ``GPTIMAGE_APP_SECRET`` (16 bytes or more) in
every worker to keep the ids valid across restarts.

``setup(app, ...)`` opens one ``Session`` when the app starts and closes it
at cleanup; every handler reads it from ``request.app[SESSION_KEY]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from typing import Any, Unpack

import msgspec
from aiohttp import web

import gptimage_async as gi
from gptimage_async.integrations import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    RecentRuns,
    RunTokens,
    SessionOptions,
    http_status,
    run_payload,
)
from gptimage_async.integrations.aiohttp import SESSION_KEY, setup

RECENT_RUNS = web.AppKey("recent_runs", RecentRuns)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def library_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the library's typed errors into JSON answers."""
    try:
        return await handler(request)
    except gi.GPTImageError as exc:
        content: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
        if exc.run_id is not None:
            content["run_id"] = exc.run_id
        return web.json_response(content, status=http_status(exc))


async def read_request(request: web.Request) -> gi.ImageRequest:
    """The JSON body as a validated ``ImageRequest`` (msgspec checks the shape)."""
    try:
        return msgspec.json.decode(await request.read(), type=gi.ImageRequest)
    except msgspec.ValidationError as exc:
        raise web.HTTPUnprocessableEntity(
            text=msgspec.json.encode({"error": "InvalidRequestError", "detail": str(exc)}).decode(),
            content_type="application/json",
        ) from None
    except msgspec.DecodeError:
        raise web.HTTPBadRequest(text="the body must be JSON") from None


async def generate(request: web.Request) -> web.Response:
    # With handler_cancellation=True a client that goes away cancels this
    # handler; the run is not lost: the session keeps polling it to the end.
    session = request.app[SESSION_KEY]
    run = await session.submit(await read_request(request))
    run_id = request.app[RECENT_RUNS].add(run)
    result = await run
    return web.json_response({"run_id": run_id, "urls": result.urls})


async def submit(request: web.Request) -> web.Response:
    session = request.app[SESSION_KEY]
    run = await session.submit(await read_request(request))
    return web.json_response({"run_id": request.app[RECENT_RUNS].add(run)}, status=202)


async def check(request: web.Request) -> web.Response:
    # Only this app's runs: an id it did not sign is a 404, sent nowhere. One it
    # signed before a restart is attached (polled again, through the shared limiter).
    run_id = request.match_info["run_id"]
    run = request.app[RECENT_RUNS].find(request.app[SESSION_KEY], run_id, attach=True)
    if run is None or isinstance(run.error, gi.RunNotFoundError):
        return web.json_response({"error": "RunNotFoundError", "detail": "no such run"}, status=404)
    return web.json_response(run_payload(run, run_id=run_id))


def create_app(
    provider: str = "runbase",
    *,
    shutdown_timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
    secret: str | bytes | None = None,
    **options: Unpack[SessionOptions],
) -> web.Application:
    """Build the app; ``options`` go to the session (``base_url``, ``rate_limit`` ...).

    ``shutdown_timeout`` is how long a shutdown waits for runs in flight;
    ``secret`` signs the run ids handed out (``None``: a random one, so ids
    last as long as the process).
    """
    app = web.Application(middlewares=[library_errors])
    setup(app, provider, shutdown_timeout=shutdown_timeout, **options)
    # Runs this app handed out ids for, kept after they finish so clients can check them.
    # The ids are signed, so no client can make the app poll a run it did not create.
    app[RECENT_RUNS] = RecentRuns(maxlen=10_000, tokens=RunTokens(secret))
    app.router.add_post("/generate", generate)
    app.router.add_post("/runs", submit)
    app.router.add_get("/runs/{run_id}", check)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--provider", default="runbase", choices=["runbase", "apiinone"])
    parser.add_argument("--base-url", default=None, help="API root (default: the provider's)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    # The API key comes from RUNBASE_API_KEY / APIINONE_API_KEY, read at startup.
    app = create_app(
        args.provider,
        secret=os.environ.get("GPTIMAGE_APP_SECRET") or None,
        base_url=args.base_url,
    )
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
