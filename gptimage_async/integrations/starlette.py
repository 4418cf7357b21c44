"""One ``Session`` per Starlette or FastAPI app, opened and closed by its lifespan.

Needs ``starlette`` (FastAPI brings it): ``pip install -e '.[fastapi]'`` from a
clone (``'gptimage-async[fastapi]'`` once released).

>>> from fastapi import Depends, FastAPI                       # doctest: +SKIP
>>> from gptimage_async.integrations.starlette import get_session, lifespan
>>> app = FastAPI(lifespan=lifespan("runbase"))
>>> @app.post("/generate")
... async def generate(prompt: str, session: gi.Session = Depends(get_session)):
...     result = await session.generate(prompt)
...     return {"urls": result.urls}

Every request then shares the app's session, so its rate limiter and poller
see all of the process's traffic. An app with a lifespan of its own nests
``session_lifespan`` in it instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Unpack

try:
    from starlette.applications import Starlette
    from starlette.requests import HTTPConnection
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess
    raise ModuleNotFoundError(
        "gptimage_async.integrations.starlette needs Starlette (FastAPI brings it): "
        "pip install -e '.[fastapi]' from a clone, or 'gptimage-async[fastapi]' once released",
        name=exc.name,
    ) from exc

from .._config import SessionConfig
from .._exceptions import ConfigurationError
from .._session import ProviderName, Session
from ._common import DEFAULT_SHUTDOWN_TIMEOUT, SessionOptions, app_config, app_session

__all__ = ["STATE_ATTRIBUTE", "get_session", "lifespan", "session_lifespan"]

#: Where the session lives: ``app.state.gptimage``.
STATE_ATTRIBUTE = "gptimage"


@contextlib.asynccontextmanager
async def session_lifespan(
    app: Starlette,
    provider: ProviderName | str | SessionConfig = "runbase",
    *,
    shutdown_timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
    **options: Unpack[SessionOptions],
) -> AsyncIterator[Session]:
    """Open the app's session as ``app.state.gptimage`` for the duration of the block.

    For an app with a lifespan of its own::

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with session_lifespan(app, "apiinone", run_timeout=300) as session:
                ...  # other resources
                yield

    Shutdown waits up to ``shutdown_timeout`` seconds for runs in flight
    (``None``: as long as they take), then closes the session; the runs left
    end with ``SessionClosedError`` carrying their id. ``options`` are
    ``SessionConfig``'s; or pass a ``SessionConfig`` as ``provider``. The
    session is constructed at startup, so a missing API key stops the app
    from starting.
    """
    config = app_config(provider, shutdown_timeout, options)
    async with app_session(config, shutdown_timeout=shutdown_timeout) as session:
        setattr(app.state, STATE_ATTRIBUTE, session)
        yield session


def lifespan(
    provider: ProviderName | str | SessionConfig = "runbase",
    *,
    shutdown_timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
    **options: Unpack[SessionOptions],
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A ``lifespan=`` for ``Starlette(...)`` / ``FastAPI(...)`` that owns the app's session.

    >>> app = FastAPI(lifespan=lifespan("runbase", run_timeout=300))   # doctest: +SKIP

    Arguments as for ``session_lifespan``. Each start of the app opens a new
    session, so the same app can be served (or tested) more than once.
    """

    config = app_config(provider, shutdown_timeout, options)

    @contextlib.asynccontextmanager
    async def _lifespan(app: Starlette) -> AsyncIterator[None]:
        async with session_lifespan(app, config, shutdown_timeout=shutdown_timeout):
            yield

    return _lifespan


def get_session(conn: HTTPConnection) -> Session:
    """The app's session, for a handler or as a FastAPI dependency.

    >>> async def endpoint(request):                             # doctest: +SKIP
    ...     session = get_session(request)
    >>> SessionDep = Annotated[gi.Session, Depends(get_session)]  # doctest: +SKIP

    Raises ``ConfigurationError`` if the app was not started with ``lifespan``
    or ``session_lifespan``.
    """
    session = getattr(conn.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(session, Session):
        raise ConfigurationError(
            "this app has no gptimage session: create it with "
            "lifespan=gptimage_async.integrations.starlette.lifespan(...) "
            "or enter session_lifespan(app, ...) in its own lifespan"
        )
    return session
