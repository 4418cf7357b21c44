"""The public value types: what a caller asks for and what it gets back.

Validation lives here so that a bad request fails with ``InvalidRequestError``
at construction, before anything is sent; provider adapters add their own
narrower limits on top (see ``_providers``).
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

import msgspec

from ._exceptions import ConfigurationError, InvalidRequestError
from ._secrets import has_key_prefix

__all__ = [
    "ASPECT_RATIOS",
    "QUALITIES",
    "DEFAULT_ASPECT_RATIO",
    "DEFAULT_QUALITY",
    "AspectRatio",
    "ImageRequest",
    "Quality",
    "RateLimit",
    "Result",
    "RunStatus",
    "as_request",
]

AspectRatio = Literal["1:1", "3:2", "2:3"]
Quality = Literal["medium", "high"]
ASPECT_RATIOS: frozenset[str] = frozenset({"1:1", "3:2", "2:3"})
QUALITIES: frozenset[str] = frozenset({"medium", "high"})
#: What both providers use when a request leaves ``quality`` unset (docs/PROVIDERS.md).
DEFAULT_QUALITY: Quality = "medium"
#: What both providers use when a request leaves ``aspect_ratio`` unset.
DEFAULT_ASPECT_RATIO: AspectRatio = "1:1"

# OpenAI's own cap for GPT Image prompts; providers may be stricter (API in One: 5000).
MAX_PROMPT_CHARS = 32_000
# GPT Image accepts at most 16 reference images per request.
MAX_IMAGE_URLS = 16
MAX_URL_CHARS = 4_096


class RunStatus(enum.StrEnum):
    """Where a run is in its life.

    ``PENDING`` and ``RUNNING`` are in flight; the rest are terminal.
    ``ERRORED`` means the library stopped tracking the run with an error of its
    own (timeout, unreadable answers, the session closed) without the provider
    saying how the run ended.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ERRORED = "errored"

    @property
    def is_terminal(self) -> bool:
        """True once the run will not change any more."""
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


class ImageRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One image generation request, validated on construction.

    >>> ImageRequest("a ceramic lamp", aspect_ratio="3:2", quality="high")
    ImageRequest(prompt='a ceramic lamp', aspect_ratio='3:2', quality='high', image_urls=())

    ``None`` leaves an option to the provider's default (``1:1``, ``medium``).
    Raises ``InvalidRequestError`` (a ``ValueError``) for bad input.
    """

    prompt: str
    aspect_ratio: AspectRatio | None = None
    quality: Quality | None = None
    image_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _validate(self)


def _validate(request: ImageRequest) -> None:
    prompt = request.prompt
    if not isinstance(prompt, str):
        raise InvalidRequestError(
            f"prompt must be a string, not {type(prompt).__name__}", field="prompt"
        )
    if not prompt.strip():
        raise InvalidRequestError("prompt must not be empty", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
            field="prompt",
        )
    if "\x00" in prompt:
        raise InvalidRequestError("prompt must not contain NUL characters", field="prompt")
    _check_encodable(prompt, "prompt")
    ratio = request.aspect_ratio
    if ratio is not None and not (isinstance(ratio, str) and ratio in ASPECT_RATIOS):
        raise InvalidRequestError(
            f"aspect_ratio must be one of 1:1, 3:2, 2:3, not {ratio!r:.80}", field="aspect_ratio"
        )
    quality = request.quality
    if quality is not None and not (isinstance(quality, str) and quality in QUALITIES):
        raise InvalidRequestError(
            f"quality must be 'medium' or 'high', not {quality!r:.80}", field="quality"
        )
    urls = request.image_urls
    if isinstance(urls, str) or not isinstance(urls, tuple | list):
        raise InvalidRequestError("image_urls must be a list of http(s) URLs", field="image_urls")
    if len(urls) > MAX_IMAGE_URLS:
        raise InvalidRequestError(
            f"at most {MAX_IMAGE_URLS} image_urls are accepted, got {len(urls)}",
            field="image_urls",
        )
    for url in urls:
        _validate_url(url)
    if isinstance(urls, list):
        # Keep the struct hashable and immutable even when built from a list.
        msgspec.structs.force_setattr(request, "image_urls", tuple(urls))


def _check_encodable(text: str, field: str) -> None:
    # A lone surrogate is a valid str but no valid UTF-8: it could never be sent.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{field} is not valid Unicode (lone surrogate at position {exc.start})", field=field
        ) from None


def _validate_url(url: object) -> None:
    if not isinstance(url, str):
        raise InvalidRequestError(
            f"image_urls entries must be strings, not {type(url).__name__}", field="image_urls"
        )
    _check_encodable(url, "image_urls")
    if len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidRequestError(f"not a usable URL: {url[:80]!r}", field="image_urls")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidRequestError(f"not a usable URL: {url[:80]!r}", field="image_urls") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"image_urls must be http(s) URLs with a host, not {url[:80]!r}", field="image_urls"
        )


def as_request(
    request: ImageRequest | str,
    *,
    aspect_ratio: AspectRatio | None = None,
    quality: Quality | None = None,
    image_urls: Iterable[str] | None = None,
) -> ImageRequest:
    """Turn a prompt plus options, or a ready ``ImageRequest``, into an ``ImageRequest``.

    Options given here fill in only what an ``ImageRequest`` left unset.
    """
    if isinstance(request, ImageRequest):
        if aspect_ratio is None and quality is None and image_urls is None:
            return request
        return ImageRequest(
            request.prompt,
            aspect_ratio=request.aspect_ratio or aspect_ratio,
            quality=request.quality or quality,
            image_urls=request.image_urls or _url_tuple(image_urls),
        )
    if not isinstance(request, str):
        raise InvalidRequestError(
            f"expected a prompt string or an ImageRequest, not {type(request).__name__}",
            field="prompt",
        )
    return ImageRequest(
        request, aspect_ratio=aspect_ratio, quality=quality, image_urls=_url_tuple(image_urls)
    )


def _url_tuple(urls: Iterable[str] | None) -> tuple[str, ...]:
    if urls is None:
        return ()
    if isinstance(urls, str):
        raise InvalidRequestError(
            "image_urls must be a list of URLs, not a single string", field="image_urls"
        )
    try:
        return tuple(urls)
    except TypeError:
        raise InvalidRequestError(
            f"image_urls must be a list of URLs, not {type(urls).__name__}", field="image_urls"
        ) from None


class Result(msgspec.Struct, frozen=True, dict=True):
    """A finished, successful run.

    ``urls`` are the generated images; ``elapsed`` is seconds from the create
    being sent to the library seeing the run done. The provider keeps the
    images at those URLs for a limited time only: ``save`` or ``read`` them.

    In Jupyter or IPython a result shows its images inline, with the prompt
    and options as a caption (``_repr_html_``).

    >>> result = await session.generate("a ceramic lamp")     # doctest: +SKIP
    >>> await result.save("out/")                               # doctest: +SKIP
    [PosixPath('out/run_abc-1.png')]
    """

    run_id: str
    provider: str
    urls: list[str]
    request: ImageRequest | None = None
    elapsed: float | None = None

    async def save(
        self, dest_dir: str | os.PathLike[str], *, stem: str | None = None
    ) -> list[Path]:
        """Save the images into ``dest_dir`` (created if missing); return their paths.

        The batch's download path: each image streamed to a temporary file
        and renamed into place once complete and checked to be an image, with
        a safe file name ``{stem}-{n}{ext}`` (``stem`` defaults to the run id;
        ``n`` from 1, in ``urls`` order). Fetched through the session that
        resolved the result, on its event loop, from any loop or thread.
        Raises ``DownloadError``; see ``gptimage_async.download`` for the
        limits (size cap, retries, timeouts).
        """
        return await _image_access().save(self, dest_dir, stem=stem)

    async def read(self) -> list[bytes]:
        """Each image's bytes (``list[bytes]``, in ``urls`` order), fetched and checked as ``save``.

        The bytes are also kept on the result, so that it shows them inline
        after the URLs expire. Raises ``DownloadError``.
        """
        return await _image_access().read(self)

    def _repr_html_(self) -> str:
        return _image_access().html(self)


class ImageAccess(Protocol):
    """What ``Result.save`` / ``read`` / ``_repr_html_`` do, supplied from above.

    Fetching images needs the transport and the download checks, which sit
    above this module (they use ``Result``), so the work is plugged in rather
    than imported: ``_images`` installs it with ``install_image_access`` when
    the package is imported, and a result never reaches up the layers itself.
    """

    async def save(
        self, result: Result, dest_dir: str | os.PathLike[str], *, stem: str | None
    ) -> list[Path]:
        """The images saved into ``dest_dir``; their paths."""
        ...

    async def read(self, result: Result) -> list[bytes]:
        """Each image's bytes, in ``urls`` order."""
        ...

    def html(self, result: Result) -> str:
        """The result as an HTML fragment for rich display."""
        ...


_IMAGE_ACCESS: list[ImageAccess] = []


def install_image_access(access: ImageAccess) -> None:
    """Plug in what a ``Result`` uses to save, read and show its images (``_images``)."""
    _IMAGE_ACCESS[:] = [access]


def _image_access() -> ImageAccess:
    # Importing the package imports ``_images``, which installs it: never empty
    # once ``gptimage_async`` is imported (every submodule import does that first).
    return _IMAGE_ACCESS[0]


class RateLimit(msgspec.Struct, frozen=True):
    """The client's belief about a provider's rate limit: ``requests`` per ``per`` seconds.

    The limiter starts from this belief and keeps learning: it probes gently
    upward while no 429 comes back and backs off when one does. With
    ``ceiling=True`` the figure is a hard cap the limiter never exceeds (for a
    key shared with other systems). Raises ``ConfigurationError`` unless
    ``requests`` is an int >= 1 and ``per`` a positive number of seconds.

    >>> RateLimit(requests=20, per=10.0)
    RateLimit(requests=20, per=10.0, ceiling=False)
    """

    requests: int
    per: float
    ceiling: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int):
            raise ConfigurationError("RateLimit.requests must be an int")
        if self.requests < 1:
            raise ConfigurationError("RateLimit.requests must be at least 1")
        if not isinstance(self.per, int | float) or not math.isfinite(self.per) or self.per <= 0:
            raise ConfigurationError("RateLimit.per must be a positive number of seconds")

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.per


#: The longest run id accepted from a user (``settle``, ``Session.attach``); the
#: providers' ids are tens of characters.
MAX_RUN_ID_LENGTH = 200


def check_run_id(run_id: object, where: str = "run id") -> str:
    """``run_id`` if it can be a provider's run id, else ``ConfigurationError``.

    A run id is put into the status URL's path (``GET /tasks/{id}``: PROVIDERS.md),
    so it must be 1-200 printable characters without whitespace, ``/``, ``?``
    or ``#``, which would change the path or end it.
    """
    if not isinstance(run_id, str) or not run_id:
        raise ConfigurationError(f"{where} must be a non-empty str")
    if len(run_id) > MAX_RUN_ID_LENGTH:
        raise ConfigurationError(f"{where} is longer than {MAX_RUN_ID_LENGTH} characters")
    if has_key_prefix(run_id):
        # An API key pasted as a run id would be journaled and sent in a URL path.
        raise ConfigurationError(f"{where} looks like an API key, not a run id; nothing was kept")
    if not run_id.isprintable() or any(c.isspace() or c in "/?#" for c in run_id):
        raise ConfigurationError(
            f"{where} {run_id!r} cannot be a run id: no whitespace, control characters, "
            "'/', '?' or '#'"
        )
    return run_id
