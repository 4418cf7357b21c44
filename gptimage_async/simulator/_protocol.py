"""What the two provider dialects share: errors, replies, input checks.

Each provider module (``_runbase``, ``_apiinone``) subclasses :class:`Dialect`
and owns everything about its wire format; the request pipeline in ``_app``
only ever talks to a ``Dialect``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import msgspec

from gptimage_async.simulator._config import ProtocolName, SimulatorConfig
from gptimage_async.simulator._runs import SimulatedRun

__all__ = [
    "ASPECT_RATIOS",
    "QUALITIES",
    "ApiError",
    "CreateRequest",
    "Dialect",
    "ErrorKind",
    "Reply",
    "read_create_options",
    "decode_object",
    "iso_time",
    "json_reply",
]

ASPECT_RATIOS = frozenset({"1:1", "3:2", "2:3"})
QUALITIES = frozenset({"medium", "high"})

ErrorKind = Literal[
    "invalid_json",
    "missing_model",
    "model_not_found",
    "missing_input",
    "invalid_input",
    "missing_api_key",
    "invalid_api_key",
    "insufficient_balance",
    "ip_not_allowed",
    "usage_exceeded",
    "spend_limit_exceeded",
    "not_found",
    "rate_limited",
]
"""Provider-neutral error names; each dialect maps them to status and code."""


class ApiError(Exception):
    """A client error the current dialect must render in its own format."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.retry_after = retry_after
        """Wall-clock seconds until a rate-limit slot frees (``rate_limited`` only)."""


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated create, in provider-neutral terms."""

    prompt: str
    aspect_ratio: str
    quality: str
    input_urls: tuple[str, ...]


@dataclass(slots=True)
class Reply:
    """An answer about to be sent.

    ``ok`` marks a genuine success, the only kind the after-effect faults may
    spoil; ``terminal`` marks a poll answer that tells the client its run is
    done, which is what ``SimulatedRun.first_seen_done_at`` records.
    """

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    ok: bool = False
    terminal: bool = False


def json_reply(status: int, payload: object, *, ok: bool = False, terminal: bool = False) -> Reply:
    """A JSON answer."""
    return Reply(
        status,
        msgspec.json.encode(payload),
        "application/json",
        ok=ok,
        terminal=terminal,
    )


def iso_time(wall: float) -> str:
    """``2026-05-01T12:00:00.123Z``: the timestamp format both providers print."""
    stamp = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def decode_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or ``invalid_json``."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ApiError("invalid_json", "Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError("invalid_json", "Request body must be a JSON object.")
    return body


def read_create_options(prompt: str, fields: dict[str, Any], urls_field: str) -> CreateRequest:
    """Check the optional inputs both providers take; ``null`` counts as absent."""
    aspect_ratio = fields.get("aspect_ratio")
    if aspect_ratio is None:
        aspect_ratio = "1:1"
    elif aspect_ratio not in ASPECT_RATIOS:
        raise ApiError("invalid_input", "aspect_ratio must be one of 1:1, 3:2, 2:3.")
    quality = fields.get("quality")
    if quality is None:
        quality = "medium"
    elif quality not in QUALITIES:
        raise ApiError("invalid_input", "quality must be one of medium, high.")
    urls = fields.get(urls_field)
    if urls is None:
        urls = []
    elif not isinstance(urls, list) or not all(
        isinstance(url, str) and url.startswith(("http://", "https://")) for url in urls
    ):
        raise ApiError("invalid_input", f"{urls_field} must be a list of http(s) URLs.")
    return CreateRequest(prompt, aspect_ratio, quality, tuple(urls))


class Dialect(ABC):
    """One provider's wire format: request parsing and every answer it sends."""

    name: ClassVar[ProtocolName]
    key_prefix: ClassVar[str]
    """Keys of this provider start with it (``sk-``, ``aio_``)."""
    id_prefix: ClassVar[str]
    model: ClassVar[str]

    @abstractmethod
    def parse_create(self, raw: bytes) -> CreateRequest:
        """Validate a create body or raise :class:`ApiError`."""

    @abstractmethod
    def error(self, err: ApiError, config: SimulatorConfig, rng: random.Random) -> Reply:
        """Render a client error."""

    @abstractmethod
    def created(
        self, run: SimulatedRun, now: float, config: SimulatorConfig, rng: random.Random
    ) -> Reply:
        """Answer a successful create."""

    @abstractmethod
    def status(
        self, run: SimulatedRun, now: float, config: SimulatorConfig, rng: random.Random
    ) -> Reply:
        """Answer a poll."""
