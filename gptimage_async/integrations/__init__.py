"""Web framework integrations: one ``Session`` per application, shared by every request.

A session owns the rate limiter and the poll scheduler, so a server process
should open exactly one and hand it to every request. The framework modules
do that from the app's own lifecycle hooks and import their framework only
when imported themselves (``import gptimage_async`` never needs them):

- ``gptimage_async.integrations.starlette``: Starlette and FastAPI
  (``lifespan``, ``session_lifespan``, ``get_session``);
- ``gptimage_async.integrations.aiohttp``: ``aiohttp.web``
  (``setup``, ``SESSION_KEY``, ``get_session``).

Both take a provider's name and ``Session`` options, or a ``SessionConfig``.
Shared by both: ``SessionOptions`` (the ``Session`` keywords they accept),
``RecentRuns`` and ``RunTokens``, for endpoints that hand out run ids to be
checked later (an app answers only for the runs it created), and
``run_payload`` / ``http_status`` to answer clients about runs and errors.
"""

from ._common import (
    DEFAULT_RECENT_RUNS,
    DEFAULT_SHUTDOWN_TIMEOUT,
    RecentRuns,
    RunTokens,
    SessionOptions,
    http_status,
    run_payload,
)

__all__ = [
    "DEFAULT_RECENT_RUNS",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "RecentRuns",
    "RunTokens",
    "SessionOptions",
    "http_status",
    "run_payload",
]
