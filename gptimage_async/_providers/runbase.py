"""Runbase: ``POST /runs``, ``GET /runs/{id}``."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

import msgspec

from .._exceptions import APIStatusError, ProtocolError
from .._models import ImageRequest, RateLimit, RunStatus
from ._base import (
    Provider,
    RunSnapshot,
    decode_json,
    decode_or_none,
    normalize_status,
    unknown_failure,
)

__all__ = ["Runbase"]

MODEL = "openai/gpt-image-1.5"


class _Input(msgspec.Struct, omit_defaults=True):
    prompt: str
    aspect_ratio: str | None = None
    quality: str | None = None
    image_urls: list[str] | None = None


class _Create(msgspec.Struct):
    model: str
    input: _Input


class _Error(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None


class _Output(msgspec.Struct):
    urls: list[str] | None = None


class _Run(msgspec.Struct):
    id: str | int
    status: str | None = None
    output: _Output | list[str] | None = None
    error: _Error | str | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error | str | None = None
    message: str | None = None


_encoder = msgspec.json.Encoder()


class Runbase(Provider):
    """The Runbase protocol (20 requests per 10 s per key by default)."""

    name: ClassVar[str] = "runbase"
    env_var: ClassVar[str] = "RUNBASE_API_KEY"
    default_base_url: ClassVar[str] = "https://runbase.net/api/v1"
    default_rate_limit: ClassVar[RateLimit] = RateLimit(requests=20, per=10.0)
    create_path: ClassVar[str] = "/runs"

    def encode_create(self, request: ImageRequest) -> bytes:
        return _encoder.encode(
            _Create(
                model=MODEL,
                input=_Input(
                    prompt=request.prompt,
                    aspect_ratio=request.aspect_ratio,
                    quality=request.quality,
                    image_urls=list(request.image_urls) or None,
                ),
            )
        )

    def poll_path(self, run_id: str) -> str:
        return f"/runs/{quote(run_id, safe='')}"

    def decode_run(self, body: bytes, *, run_id: str | None) -> RunSnapshot:
        run = decode_json(body, _Run, what="Runbase run object", run_id=run_id)
        rid = str(run.id)
        has_error = run.error is not None and run.error != ""
        status = normalize_status(run.status, run_id=rid, has_error=has_error)
        urls: list[str] = []
        if isinstance(run.output, list):
            urls = run.output
        elif run.output is not None and run.output.urls:
            urls = run.output.urls
        urls = [u for u in urls if u]  # an empty string is no URL
        if status is RunStatus.SUCCEEDED and not urls:
            raise ProtocolError("run succeeded but its output has no URLs", run_id=rid)
        message = code = None
        if isinstance(run.error, str):
            message = run.error
        elif run.error is not None:
            message = run.error.message
            code = None if run.error.code is None else str(run.error.code)
        if status is RunStatus.FAILED:
            message = unknown_failure(run.status, message)
        return RunSnapshot(rid, status, urls, message, code, run.status)

    def decode_error(
        self, status_code: int, body: bytes, *, run_id: str | None, retry_after: float | None
    ) -> APIStatusError:
        message = code = None
        parsed = decode_or_none(body, _ErrorBody)
        if parsed is not None:
            if isinstance(parsed.error, str):
                message = parsed.error
            elif parsed.error is not None:
                message = parsed.error.message
                code = None if parsed.error.code is None else str(parsed.error.code)
            message = message or parsed.message
        return self._status_error(
            status_code, message, code, run_id=run_id, retry_after=retry_after
        )
