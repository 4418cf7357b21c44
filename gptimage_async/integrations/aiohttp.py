"""One ``Session`` per ``aiohttp.web`` application, opened and closed by its cleanup context.

>>> from aiohttp import web                                     # doctest: +SKIP
>>> from gptimage_async.integrations.aiohttp import SESSION_KEY, setup
>>> async def generate(request: web.Request) -> web.Response:
...     session = request.app[SESSION_KEY]
...     result = await session.generate((await request.json())["prompt"])
...     return web.json_response({"urls": result.urls})
>>> app = web.Application()
>>> setup(app, "runbase")
>>> app.router.add_post("/generate", generate)

Every request then shares the app's session, so its rate limiter and poller
see all of the process's traffic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Unpack

from aiohttp import web

from .._config import SessionConfig
from .._exceptions import ConfigurationError
from .._session import ProviderName, Session
from ._common import DEFAULT_SHUTDOWN_TIMEOUT, SessionOptions, app_config, app_session

__all__ = ["SESSION_KEY", "get_session", "setup"]

#: The app's session: ``request.app[SESSION_KEY]`` (or ``request.config_dict[...]``
#: from a sub-application).
SESSION_KEY = web.AppKey("gptimage_session", Session)
_SET_UP = web.AppKey("gptimage_set_up", bool)


def setup(
    app: web.Application,
    provider: ProviderName | str | SessionConfig = "runbase",
    *,
    shutdown_timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
    **options: Unpack[SessionOptions],
) -> None:
    """Give ``app`` its session: opened at startup, closed at cleanup.

    The session is stored as ``app[SESSION_KEY]``. Cleanup waits up to
    ``shutdown_timeout`` seconds for runs in flight (``None``: as long as they
    take), then closes the session; the runs left end with
    ``SessionClosedError`` carrying their id. ``options`` are
    ``SessionConfig``'s (checked here: ``ConfigurationError``); or pass a
    ``SessionConfig`` as ``provider``. The session is constructed at startup,
    so a missing API key stops the app from starting. Call it once per app,
    before the app starts.
    """
    config = app_config(provider, shutdown_timeout, options)
    if app.get(_SET_UP):
        raise ConfigurationError("setup() was already called for this app")
    app[_SET_UP] = True

    async def gptimage_session(app: web.Application) -> AsyncIterator[None]:
        async with app_session(config, shutdown_timeout=shutdown_timeout) as session:
            app[SESSION_KEY] = session
            yield

    app.cleanup_ctx.append(gptimage_session)


def get_session(request: web.Request) -> Session:
    """The session of the request's app (or of an app it is mounted in).

    Raises ``ConfigurationError`` if no app on the way was given one with ``setup``.
    """
    try:
        return request.config_dict[SESSION_KEY]
    except KeyError:
        raise ConfigurationError(
            "this app has no gptimage session: call "
            "gptimage_async.integrations.aiohttp.setup(app, ...) before starting it"
        ) from None
