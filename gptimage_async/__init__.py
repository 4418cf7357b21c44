"""gptimage-async: an asyncio-first client for GPT Image 1.5 on Runbase and API in One.

>>> import gptimage_async as gi
>>> async with gi.Session("runbase") as session:               # doctest: +SKIP
...     result = await session.generate("a ceramic lamp", aspect_ratio="3:2")
...     print(result.urls)

One session per process: it owns the rate limiter shared by creates and polls
and the poll scheduler that resolves every run with as few requests as it can.
``gptimage_async.simulator`` is a local stand-in for both providers.
"""

# First: the command line records stop signals while the rest imports (_early_signals).
from . import _early_signals  # noqa: F401  (isort: keep first)
from ._batch import Batch, BatchEvent, BatchProgress, BatchReport
from ._config import Routing, SessionConfig
from ._download import download
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DiskSpaceError,
    DownloadError,
    EndpointNotFoundError,
    GPTImageError,
    InsufficientCreditsError,
    InvalidRequestError,
    JournalError,
    ManifestError,
    PermissionDeniedError,
    PoolExhaustedError,
    PromptFileError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RunFailedError,
    RunIdMismatchError,
    RunNotFoundError,
    RunTimeoutError,
    ServerError,
    SessionClosedError,
    SpendCapError,
    TLSCertificateError,
    UncertainCreateError,
    WrongEventLoopError,
)
from ._journal import Journal, JournalEntry
from ._manifest import ManifestEntry, read_manifest
from ._models import ImageRequest, RateLimit, Result, RunStatus
from ._pool import Lane, LaneSpend, LaneState, Pool, SpendSnapshot
from ._pool_session import session_from_pool_file
from ._prompts import BatchPrompt, read_prompts
from ._providers import ProviderName
from ._registry import RunRegistry
from ._router import PoolStats
from ._run import Run
from ._session import OnExit, Session
from ._stats import SessionStats
from ._sync import SyncRun, SyncSession
from ._version import __version__
from ._views import LaneStatus, LimiterView, SchedulerView

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
    "EndpointNotFoundError",
    "GPTImageError",
    "ImageRequest",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "Journal",
    "JournalEntry",
    "JournalError",
    "Lane",
    "LaneSpend",
    "LaneState",
    "LaneStatus",
    "LimiterView",
    "ManifestEntry",
    "ManifestError",
    "OnExit",
    "PermissionDeniedError",
    "Pool",
    "PoolExhaustedError",
    "PoolStats",
    "PromptFileError",
    "ProtocolError",
    "ProviderName",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitError",
    "Result",
    "Routing",
    "Run",
    "RunFailedError",
    "RunIdMismatchError",
    "RunNotFoundError",
    "RunRegistry",
    "RunStatus",
    "RunTimeoutError",
    "SchedulerView",
    "ServerError",
    "Session",
    "SessionClosedError",
    "SessionConfig",
    "SessionStats",
    "SpendCapError",
    "SpendSnapshot",
    "SyncRun",
    "SyncSession",
    "TLSCertificateError",
    "UncertainCreateError",
    "WrongEventLoopError",
    "__version__",
    "download",
    "read_manifest",
    "read_prompts",
    "session_from_pool_file",
]
