"""A FastAPI service that generates images through one shared gptimage-async session.

Run it (``pip install -e '.[fastapi]' uvicorn`` from a clone)::

    RUNBASE_API_KEY=sk-... uvicorn examples.fastapi_app:app

Or against the built-in simulator (any key with the provider's prefix works)::

    python -c "from gptimage_async.simulator import serve_forever; serve_forever(port=8765)" &
    GPTIMAGE_BASE_URL=http://127.0.0.1:8765/runbase/api/v1 RUNBASE_API_KEY=sk-sim \\
        uvicorn examples.fastapi_app:app

Endpoints:

- ``POST /generate``: waits for the image and returns its URLs;
- ``POST /runs``: submits and answers ``202 {"run_id": ...}`` at once;
- ``GET /runs/{run_id}``: the run's status, and its URLs once it succeeded.

Run ids are handed out signed (``RunTokens``): ``GET /runs/{run_id}``
answers only for runs this app created, and any other id is a 404 that costs
no request to the provider. Set ``GPTIMAGE_APP_SECRET`` (16 bytes or more) in
every worker to keep the ids valid across restarts.

The app's lifespan opens one ``Session`` for the whole process and every
request uses it, so the rate limiter paces all traffic together.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal, Unpack

import fastapi
import pydantic
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

import gptimage_async as gi
from gptimage_async.integrations import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    RecentRuns,
    RunTokens,
    SessionOptions,
    http_status,
    run_payload,
)
from gptimage_async.integrations.starlette import get_session, lifespan

SessionDep = Annotated[gi.Session, Depends(get_session)]


class ImageBody(pydantic.BaseModel):
    """What a client asks for; the library validates it further."""

    prompt: str
    aspect_ratio: Literal["1:1", "3:2", "2:3"] | None = None
    quality: Literal["medium", "high"] | None = None
    image_urls: tuple[str, ...] = ()

    def to_request(self) -> gi.ImageRequest:
        return gi.ImageRequest(
            self.prompt,
            aspect_ratio=self.aspect_ratio,
            quality=self.quality,
            image_urls=self.image_urls,
        )


def create_app(
    provider: str = "runbase",
    *,
    shutdown_timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
    secret: str | bytes | None = None,
    **options: Unpack[SessionOptions],
) -> FastAPI:
    """Build the app; ``options`` go to the session (``base_url``, ``rate_limit`` ...).

    ``shutdown_timeout`` is how long a shutdown waits for runs in flight;
    ``secret`` signs the run ids handed out (``None``: a random one, so ids
    last as long as the process).
    Keeping construction in a factory lets tests and other deployments
    configure the session without touching the module.
    """
    app = FastAPI(
        title="gptimage-async example",
        lifespan=lifespan(provider, shutdown_timeout=shutdown_timeout, **options),
    )
    # Runs this app handed out ids for, kept after they finish so clients can check them;
    # the ids are signed, so no client can make the app poll a run it did not create.
    recent = RecentRuns(maxlen=10_000, tokens=RunTokens(secret))

    @app.exception_handler(gi.GPTImageError)
    async def library_error(request: Request, exc: gi.GPTImageError) -> JSONResponse:
        content: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
        if exc.run_id is not None:
            content["run_id"] = exc.run_id
        return JSONResponse(content, status_code=http_status(exc))

    @app.post("/generate")
    async def generate(body: ImageBody, session: SessionDep) -> dict[str, Any]:
        # If the client goes away the run still finishes and is paid for; the
        # session keeps polling it either way, so there is nothing to clean up.
        run = await session.submit(body.to_request())
        run_id = recent.add(run)
        result = await run
        return {"run_id": run_id, "urls": result.urls}

    @app.post("/runs", status_code=fastapi.status.HTTP_202_ACCEPTED)
    async def submit(body: ImageBody, session: SessionDep) -> dict[str, Any]:
        run = await session.submit(body.to_request())
        return {"run_id": recent.add(run)}

    @app.get("/runs/{run_id}")
    async def check(run_id: str, session: SessionDep) -> dict[str, Any]:
        # Only this app's runs: an id it did not sign is a 404, sent nowhere. One
        # it signed before a restart is attached (polled again, through the
        # shared limiter).
        run = recent.find(session, run_id, attach=True)
        if run is None or isinstance(run.error, gi.RunNotFoundError):
            raise HTTPException(404, "no such run")
        return run_payload(run, run_id=run_id)

    return app


def _from_environment() -> FastAPI:
    # The API key comes from RUNBASE_API_KEY / APIINONE_API_KEY, read at startup.
    return create_app(
        os.environ.get("GPTIMAGE_PROVIDER", "runbase"),
        secret=os.environ.get("GPTIMAGE_APP_SECRET") or None,
        base_url=os.environ.get("GPTIMAGE_BASE_URL") or None,
    )


app = _from_environment()
