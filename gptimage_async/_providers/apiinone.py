"""API in One: ``POST /images/generations``, ``GET /tasks/{task_id}``.

Its answers come in two documented shapes, an envelope
``{"code": 200, "message": ..., "data": {...}}`` and a flat task object, and
where a finished task keeps its URLs is not documented. Both shapes and every
URL location seen are accepted; an envelope whose ``code`` is not 200 is an
error even when the HTTP status is 200.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import quote

import msgspec

from .._exceptions import APIStatusError, InvalidRequestError, ProtocolError
from .._models import ImageRequest, RateLimit, RunStatus
from ._base import (
    Provider,
    RunSnapshot,
    decode_json,
    decode_or_none,
    normalize_status,
    unknown_failure,
)

__all__ = ["ApiInOne"]

MODEL = "gpt-image-1-5"
MIN_PROMPT_CHARS = 3
MAX_PROMPT_CHARS = 5_000


class _Create(msgspec.Struct, omit_defaults=True):
    model: str
    prompt: str
    aspect_ratio: str | None = None
    quality: str | None = None
    input_urls: list[str] | None = None


class _Url(msgspec.Struct):
    url: str | None = None


class _Urls(msgspec.Struct):
    urls: list[str] | None = None


class _Error(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None
    type: str | None = None


class _Task(msgspec.Struct):
    task_id: str | int | None = None
    id: str | int | None = None
    status: str | None = None
    output: _Urls | list[str | _Url] | str | None = None
    urls: list[str] | None = None
    result: _Urls | None = None
    images: list[_Url | str] | None = None
    error: _Error | str | None = None


class _Top(_Task):
    """Either shape: the envelope's fields plus the flat task's fields."""

    code: int | str | None = None
    message: str | None = None
    data: _Task | None = None


_encoder = msgspec.json.Encoder()


def _urls_of(task: _Task) -> list[str]:
    # The documented order of preference; the first location that has URLs wins.
    output = task.output
    if isinstance(output, _Urls) and output.urls:
        return output.urls
    if isinstance(output, list):
        found = [u if isinstance(u, str) else u.url for u in output]
        urls = [u for u in found if u]
        if urls:
            return urls
    if isinstance(output, str) and output:
        return [output]
    if task.urls:
        return task.urls
    if task.result is not None and task.result.urls:
        return task.result.urls
    if task.images:
        found = [u if isinstance(u, str) else u.url for u in task.images]
        return [u for u in found if u]
    return []


def _as_int(code: int | str | None) -> int | None:
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().isdigit():
        return int(code)
    return None


class ApiInOne(Provider):
    """The API in One protocol (rate limit undocumented: the library starts cautiously)."""

    name: ClassVar[str] = "apiinone"
    env_var: ClassVar[str] = "APIINONE_API_KEY"
    default_base_url: ClassVar[str] = "https://apiin.one/api/v1"
    # Undocumented: start at half of Runbase's figure and let the limiter learn upward.
    default_rate_limit: ClassVar[RateLimit] = RateLimit(requests=10, per=10.0)
    create_path: ClassVar[str] = "/images/generations"
    # API in One's price list: 10 credits a medium image, 28 a high one.
    credits_per_image: ClassVar[Mapping[str, int] | None] = {"medium": 10, "high": 28}

    def validate(self, request: ImageRequest) -> None:
        n = len(request.prompt)
        if not MIN_PROMPT_CHARS <= n <= MAX_PROMPT_CHARS:
            raise InvalidRequestError(
                f"API in One needs a prompt of {MIN_PROMPT_CHARS}-{MAX_PROMPT_CHARS} "
                f"characters, got {n}",
                field="prompt",
            )

    def encode_create(self, request: ImageRequest) -> bytes:
        return _encoder.encode(
            _Create(
                model=MODEL,
                prompt=request.prompt,
                aspect_ratio=request.aspect_ratio,
                quality=request.quality,
                input_urls=list(request.image_urls) or None,
            )
        )

    def poll_path(self, run_id: str) -> str:
        return f"/tasks/{quote(run_id, safe='')}"

    def decode_run(self, body: bytes, *, run_id: str | None) -> RunSnapshot:
        top = decode_json(body, _Top, what="API in One task", run_id=run_id)
        task: _Task = top
        if top.data is not None or top.code is not None:
            code = _as_int(top.code)
            if code is not None and code != 200:
                message = top.message
                err_code = None
                if isinstance(top.error, _Error):
                    message = message or top.error.message
                    err_code = top.error.type
                return_error = self._status_error(
                    code, message, err_code, run_id=run_id, retry_after=None
                )
                raise return_error
            if top.data is not None:
                task = top.data
        raw_id = task.task_id if task.task_id is not None else task.id
        if raw_id is None:
            raw_id = run_id
        if raw_id is None or raw_id == "":
            raise ProtocolError("task object has no task_id or id", run_id=run_id)
        rid = str(raw_id)
        has_error = task.error is not None and task.error != ""
        status = normalize_status(task.status, run_id=rid, has_error=has_error)
        urls = [u for u in _urls_of(task) if u]  # an empty string is no URL
        if status is RunStatus.SUCCEEDED and not urls:
            raise ProtocolError("task completed but no image URL was found in it", run_id=rid)
        message = err = None
        if isinstance(task.error, str):
            message = task.error
        elif task.error is not None:
            message = task.error.message
            err = task.error.type or (None if task.error.code is None else str(task.error.code))
        if status is RunStatus.FAILED:
            message = unknown_failure(task.status, message)
        return RunSnapshot(rid, status, urls, message, err, task.status)

    def decode_error(
        self, status_code: int, body: bytes, *, run_id: str | None, retry_after: float | None
    ) -> APIStatusError:
        message = code = None
        top = decode_or_none(body, _Top)
        if top is not None:
            if isinstance(top.error, _Error):
                message = top.error.message
                code = top.error.type or (None if top.error.code is None else str(top.error.code))
            elif isinstance(top.error, str):
                message = top.error
            message = message or top.message
        return self._status_error(
            status_code, message, code, run_id=run_id, retry_after=retry_after
        )
