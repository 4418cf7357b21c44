"""gptimage-async: an asyncio-first client for GPT Image 1.5 on Runbase and API in One.

>>> import gptimage_async as gi
>>> async with gi.Session("runbase") as session:               # doctest: +SKIP
...     result = await session.generate("a ceramic lamp", aspect_ratio="3:2")
...     print(result.urls)

One session per process: it owns the rate limiter shared by creates and polls
and the poll scheduler that resolves every run with as few requests as it can.
``gptimage_async.simulator`` is a local stand-in for both providers.

The batch engine (``Batch``, its journal, manifest and prompt files), the
blocking API (``SyncSession``) and ``session_from_pool_file`` load on first use
(PEP 562 ``__getattr__``): a program that only opens a ``Session`` does not pay
their import at start.
"""

from __future__ import annotations

import importlib
import typing

# First: the command line records stop signals while the rest imports (_early_signals).
from . import _early_signals  # noqa: F401  (isort: keep first)
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
from ._models import ImageRequest, RateLimit, Result, RunStatus
from ._pool import Lane, LaneSpend, LaneState, Pool, SpendSnapshot
from ._providers import ProviderName
from ._registry import RunRegistry
from ._router import PoolStats
from ._run import Run
from ._session import OnExit, Session
from ._stats import SessionStats
from ._version import __version__
from ._views import LaneStatus, LimiterView, SchedulerView

if typing.TYPE_CHECKING:
    from ._batch import Batch, BatchEvent, BatchProgress, BatchReport, BatchStop
    from ._journal import Journal, JournalEntry
    from ._manifest import ManifestEntry, read_manifest
    from ._pool_session import session_from_pool_file
    from ._prompts import BatchPrompt, read_prompts
    from ._sync import SyncRun, SyncSession

# Public name -> the module that defines it, imported by ``__getattr__`` on first use.
_LAZY = {
    "Batch": "._batch",
    "BatchEvent": "._batch",
    "BatchProgress": "._batch",
    "BatchReport": "._batch",
    "BatchStop": "._batch",
    "BatchPrompt": "._prompts",
    "Journal": "._journal",
    "JournalEntry": "._journal",
    "ManifestEntry": "._manifest",
    "SyncRun": "._sync",
    "SyncSession": "._sync",
    "read_manifest": "._manifest",
    "read_prompts": "._prompts",
    "session_from_pool_file": "._pool_session",
}


def __getattr__(name: str) -> object:
    """Import a lazily exported name (PEP 562) and keep it in the module's namespace."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "BatchStop",
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
