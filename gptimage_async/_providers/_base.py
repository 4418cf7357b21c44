"""What every provider adapter provides, and the vocabulary they share.

An adapter turns an ``ImageRequest`` into the provider's create call and turns
the provider's answers into ``RunSnapshot``s or typed errors. It does no I/O:
the session sends what the adapter encodes and hands back what came in.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from typing import ClassVar, TypeVar

import msgspec

from .._exceptions import APIStatusError, ProtocolError, status_error
from .._models import ImageRequest, RateLimit, RunStatus

__all__ = [
    "Provider",
    "RunSnapshot",
    "decode_json",
    "decode_or_none",
    "normalize_status",
    "unknown_failure",
]

logger = logging.getLogger("gptimage_async")

_T = TypeVar("_T")
_BOM = b"\xef\xbb\xbf"


class RunSnapshot(msgspec.Struct, frozen=True):
    """One reading of a run's state, whichever provider it came from."""

    id: str
    status: RunStatus
    urls: list[str] = []
    error_message: str | None = None
    error_code: str | None = None
    #: The provider's own status word, as sent (for messages: "last seen 'queued'").
    status_word: str | None = None


# Status words seen across providers, lower-cased. Runbase uses the first word
# of each group; API in One varies spelling and case.
_STATUS_WORDS: dict[str, RunStatus] = {
    "pending": RunStatus.PENDING,
    "queued": RunStatus.PENDING,
    "submitted": RunStatus.PENDING,
    "created": RunStatus.PENDING,
    "starting": RunStatus.RUNNING,
    "processing": RunStatus.RUNNING,
    "in_progress": RunStatus.RUNNING,
    "in-progress": RunStatus.RUNNING,
    "running": RunStatus.RUNNING,
    "generating": RunStatus.RUNNING,
    "succeeded": RunStatus.SUCCEEDED,
    "success": RunStatus.SUCCEEDED,
    "successful": RunStatus.SUCCEEDED,
    "completed": RunStatus.SUCCEEDED,
    "complete": RunStatus.SUCCEEDED,
    "done": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "failure": RunStatus.FAILED,
    "error": RunStatus.FAILED,
    "errored": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELED,
    "canceled": RunStatus.CANCELED,
}


def normalize_status(word: str | None, *, run_id: str | None, has_error: bool = False) -> RunStatus:
    """Map a provider's status word to ``RunStatus``, case-insensitively.

    An unknown word that comes with an ``error`` (``aborted``, ``expired``,
    ``content_filtered`` ...) is a failure: the provider says what went
    wrong, polling on cannot help. An unknown word without one is logged and
    read as "still running": a provider adding a new intermediate state must
    not fail runs, and the run's deadline still bounds the wait (its timeout
    error names the last status seen).
    """
    if word is None:
        raise ProtocolError("run object has no status", run_id=run_id)
    status = _STATUS_WORDS.get(word.strip().lower())
    if status is not None:
        return status
    if has_error:
        logger.warning("unknown run status %r with an error for run %s: it failed", word, run_id)
        return RunStatus.FAILED
    logger.warning("unknown run status %r for run %s; treating it as running", word, run_id)
    return RunStatus.RUNNING


def unknown_failure(word: str | None, message: str | None) -> str | None:
    """The message of a run that failed: its own, else one naming an unknown status word."""
    if message or word is None or word.strip().lower() in _STATUS_WORDS:
        return message
    return f"the run ended with status {word!r}"


def _strip_bom(body: bytes) -> bytes:
    # RFC 8259 section 8.1: a parser may ignore a leading UTF-8 byte order mark.
    return body[3:] if body.startswith(_BOM) else body


def decode_json(body: bytes, type_: type[_T], *, what: str, run_id: str | None) -> _T:
    """Decode ``body`` as ``type_`` or raise ``ProtocolError`` saying what was wrong."""
    try:
        return msgspec.json.decode(_strip_bom(body), type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the decoder goes is no answer either.
        preview = body[:120].decode("utf-8", "replace")
        raise ProtocolError(
            f"could not read the {what}: {exc} (body starts {preview!r})", run_id=run_id
        ) from None


def decode_or_none(body: bytes, type_: type[_T]) -> _T | None:
    """Decode ``body`` as ``type_``, or ``None`` if it is not that (error bodies vary)."""
    try:
        return msgspec.json.decode(_strip_bom(body), type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


class Provider(abc.ABC):
    """A provider's wire protocol. Subclasses are registered in ``_providers``."""

    name: ClassVar[str]
    env_var: ClassVar[str]
    default_base_url: ClassVar[str]
    default_rate_limit: ClassVar[RateLimit]
    #: Path of the create call, relative to the base URL.
    create_path: ClassVar[str]
    #: Credits one image costs by quality, where the provider documents prices.
    credits_per_image: ClassVar[Mapping[str, int] | None] = None

    def validate(self, request: ImageRequest) -> None:  # noqa: B027 - optional hook
        """Raise ``InvalidRequestError`` for input this provider refuses."""

    @abc.abstractmethod
    def encode_create(self, request: ImageRequest) -> bytes:
        """The JSON body of the create call."""

    @abc.abstractmethod
    def poll_path(self, run_id: str) -> str:
        """Path of the status call for ``run_id``, relative to the base URL."""

    @abc.abstractmethod
    def decode_run(self, body: bytes, *, run_id: str | None) -> RunSnapshot:
        """Read a 2xx answer to a create or status call.

        Raises ``ProtocolError`` for an answer that cannot be understood and
        ``APIStatusError`` for an error dressed as success.
        """

    @abc.abstractmethod
    def decode_error(
        self, status_code: int, body: bytes, *, run_id: str | None, retry_after: float | None
    ) -> APIStatusError:
        """Turn a non-2xx answer into the matching ``APIStatusError``."""

    def _status_error(
        self,
        status_code: int,
        message: str | None,
        code: str | None,
        *,
        run_id: str | None,
        retry_after: float | None,
    ) -> APIStatusError:
        return status_error(
            status_code,
            message or f"{self.name} answered HTTP {status_code}",
            code=code,
            run_id=run_id,
            retry_after=retry_after,
        )
