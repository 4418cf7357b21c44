"""gptimage-async: an asyncio-first client for GPT Image 1.5 on Runbase and API in One.

>>> import gptimage_async as gi
>>> async with gi.Session("runbase") as session:               # doctest: +SKIP
...     result = await session.generate("a ceramic lamp", aspect_ratio="3:2")
...     print(result.urls)

One session per process: it owns the rate limiter shared by creates and polls
and the poll scheduler that resolves every run with as few requests as it can.
``gptimage_async.simulator`` is a local stand-in for both providers.
"""

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    GPTImageError,
    InsufficientCreditsError,
    InvalidRequestError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RunFailedError,
    RunNotFoundError,
    RunTimeoutError,
    ServerError,
    SessionClosedError,
    UncertainCreateError,
)
from ._models import ImageRequest, RateLimit, Result, RunStatus
from ._registry import RunRegistry
from ._run import Run
from ._session import Session
from ._stats import SessionStats
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "GPTImageError",
    "ImageRequest",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitError",
    "Result",
    "Run",
    "RunFailedError",
    "RunNotFoundError",
    "RunRegistry",
    "RunStatus",
    "RunTimeoutError",
    "ServerError",
    "Session",
    "SessionClosedError",
    "SessionStats",
    "UncertainCreateError",
    "__version__",
]
