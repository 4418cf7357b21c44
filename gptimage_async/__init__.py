"""gptimage-async: an asyncio-first client for GPT Image 1.5 on Runbase and API in One.

>>> import gptimage_async as gi
>>> async with gi.Session("runbase") as session:               # doctest: +SKIP
...     result = await session.generate("a ceramic lamp", aspect_ratio="3:2")
...     print(result.urls)

One session per process: it owns the rate limiter shared by creates and polls
and the poll scheduler that resolves every run with as few requests as it can.
``gptimage_async.simulator`` is a local stand-in for both providers.
"""

from ._batch import Batch, BatchEvent, BatchProgress, BatchReport
from ._download import DownloadError, download
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DiskSpaceError,
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
from ._journal import Journal, JournalEntry, JournalError
from ._manifest import ManifestEntry, read_manifest
from ._models import ImageRequest, RateLimit, Result, RunStatus
from ._prompts import BatchPrompt, PromptFileError, read_prompts
from ._providers import ProviderName
from ._registry import RunRegistry
from ._run import Run
from ._session import LimiterView, OnExit, SchedulerView, Session
from ._stats import SessionStats
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchEvent",
    "BatchProgress",
    "BatchPrompt",
    "BatchReport",
    "ConfigurationError",
    "DiskSpaceError",
    "DownloadError",
    "GPTImageError",
    "ImageRequest",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Journal",
    "JournalEntry",
    "JournalError",
    "LimiterView",
    "ManifestEntry",
    "OnExit",
    "PermissionDeniedError",
    "PromptFileError",
    "ProtocolError",
    "ProviderName",
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
    "SchedulerView",
    "ServerError",
    "Session",
    "SessionClosedError",
    "SessionStats",
    "UncertainCreateError",
    "__version__",
    "download",
    "read_manifest",
    "read_prompts",
]
