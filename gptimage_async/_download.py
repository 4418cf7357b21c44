"""Saving generated images to disk: streamed, retried, capped, checked, atomic.

An image is streamed to a hidden temporary file in the destination directory
and renamed into place only once complete, so a file under its final name is
always a whole image. Names are sanitised to ``[A-Za-z0-9._-]`` and checked
to resolve inside the destination: nothing a provider sends can make a file
land elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import aiohttp
import anyio

from ._classify import is_transient_status
from ._exceptions import ConfigurationError, GPTImageError
from ._models import Result
from ._retry import backoff_delays, parse_retry_after
from ._version import USER_AGENT

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DownloadError",
    "download",
    "remove_partials",
    "safe_filename",
    "slugify",
]

#: The largest image accepted; GPT Image files are a few MB at most.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: Tries per image, the first included, for failures that may pass (5xx, 429, resets).
DEFAULT_ATTEMPTS = 4
#: Seconds one attempt may take, connect to last byte.
DEFAULT_TIMEOUT = 120.0
CHUNK_SIZE = 64 * 1024
#: Longest file name produced (well under the 255 bytes of common file systems).
MAX_NAME_CHARS = 120
#: Prefix of temporary files, so that a later run can sweep the ones a crash left.
PARTIAL_PREFIX = ".gptimage-"
PARTIAL_SUFFIX = ".part"

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


class DownloadError(GPTImageError):
    """An image could not be saved: HTTP error, not an image, too large, or the disk refused it.

    ``url`` is the image's URL (``None`` for a problem with the destination);
    ``status_code`` the HTTP status when there was one.
    """

    def __init__(
        self, message: str, *, url: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def slugify(text: str, *, max_chars: int = 40) -> str:
    """A short ``[a-z0-9-]`` rendering of ``text`` for file names (``"image"`` if nothing is left).

    >>> slugify("A ceramic lamp, 3/4 view!")
    'a-ceramic-lamp-3-4-view'
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")
    slug = slug[:max_chars].rstrip("-")
    return slug or "image"


def safe_filename(name: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``, never hidden, never a path.

    >>> safe_filename("../../etc/passwd")
    'etc-passwd'
    """
    cleaned = _UNSAFE.sub("-", name).lstrip(".-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:MAX_NAME_CHARS].rstrip(".-")
    return cleaned or "image"


async def download(
    source: Result | str | Iterable[str],
    dest_dir: str | os.PathLike[str],
    *,
    stem: str | None = None,
    client: aiohttp.ClientSession | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    attempts: int = DEFAULT_ATTEMPTS,
    attempt_timeout: float = DEFAULT_TIMEOUT,
) -> list[Path]:
    """Save the images of a result (or image URLs) into ``dest_dir``; return their paths.

    The files are named ``{stem}-{n}{ext}`` (``n`` from 1, ``ext`` from the
    answer's content type); ``stem`` defaults to the run id, or to the URL's
    file name. Existing files of the same name are replaced. Each image is
    streamed to disk, retried on 5xx, 429 and connection failures, refused if
    its content type is not ``image/*`` or it is larger than ``max_bytes``.
    Raises ``DownloadError``. Pass ``client`` to reuse an ``aiohttp``
    session across many calls.

    >>> result = await session.generate("a ceramic lamp")      # doctest: +SKIP
    >>> await download(result, "out/")                          # doctest: +SKIP
    [PosixPath('out/run_abc-1.png')]
    """
    urls, default_stem = _source_urls(source)
    if max_bytes < 1 or attempts < 1 or not attempt_timeout > 0:
        raise ConfigurationError("max_bytes, attempts and attempt_timeout must be positive")
    base = safe_filename(stem if stem is not None else default_stem)
    dest = _prepare_dir(Path(dest_dir))
    per_attempt = aiohttp.ClientTimeout(total=attempt_timeout)
    own_client = client is None
    http = client or aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
    paths: list[Path | None] = [None] * len(urls)
    try:
        async with anyio.create_task_group() as tg:
            for i, url in enumerate(urls):

                async def one(i: int = i, url: str = url) -> None:
                    paths[i] = await _fetch(
                        http, url, dest, f"{base}-{i + 1}", max_bytes, attempts, per_attempt
                    )

                tg.start_soon(one)
    except BaseExceptionGroup as group:
        # One image failing fails the call: report the first error as it was raised.
        raise first_error(group) from None
    finally:
        if own_client:
            await http.close()
    return [p for p in paths if p is not None]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error in a (possibly nested) exception group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _prepare_dir(dest: Path) -> Path:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest}: {exc.strerror or exc}") from None
    return dest


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _source_urls(source: Result | str | Iterable[str]) -> tuple[list[str], str]:
    if isinstance(source, Result):
        return list(source.urls), source.run_id
    if isinstance(source, str):
        return [source], PurePosixPath(urlsplit(source).path).stem or "image"
    urls = list(source)
    if not all(isinstance(u, str) for u in urls):
        raise ConfigurationError("download() takes a Result, a URL, or URLs")
    stem = PurePosixPath(urlsplit(urls[0]).path).stem if urls else "image"
    return urls, stem or "image"


async def _fetch(
    http: aiohttp.ClientSession,
    url: str,
    dest: Path,
    stem: str,
    max_bytes: int,
    attempts: int,
    per_attempt: aiohttp.ClientTimeout,
) -> Path:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"not an http(s) image URL: {url[:100]!r}", url=url)
    delays = backoff_delays()  # when the server gave no Retry-After
    for attempt in range(1, attempts + 1):
        try:
            return await _fetch_once(http, url, dest, stem, max_bytes, per_attempt)
        except _Transient as exc:
            if attempt == attempts:
                raise DownloadError(
                    f"could not download {url[:100]} after {attempts} attempts: {exc}", url=url
                ) from None
            delay = exc.retry_after if exc.retry_after is not None else next(delays)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def _fetch_once(
    http: aiohttp.ClientSession,
    url: str,
    dest: Path,
    stem: str,
    max_bytes: int,
    per_attempt: aiohttp.ClientTimeout,
) -> Path:
    try:
        async with http.get(url, timeout=per_attempt) as response:
            status = response.status
            if is_transient_status(status):  # the same sorting as creates and polls
                raise _Transient(
                    f"HTTP {status}",
                    parse_retry_after({k.lower(): v for k, v in response.headers.items()}),
                )
            if status != 200:
                raise DownloadError(f"HTTP {status} for {url[:100]}", url=url, status_code=status)
            content_type = response.content_type.lower()
            if not content_type.startswith("image/"):
                raise DownloadError(
                    f"{url[:100]} is {content_type!r}, not an image", url=url, status_code=status
                )
            length = response.content_length
            if length is not None and length > max_bytes:
                raise DownloadError(
                    f"{url[:100]} is {length} bytes, over the {max_bytes}-byte cap", url=url
                )
            target = _target(dest, stem + _extension(content_type, url))
            return await _stream_to(response, target, url, max_bytes)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from None


def _extension(content_type: str, url: str) -> str:
    known = _EXTENSIONS.get(content_type)
    if known is not None:
        return known
    guessed = mimetypes.guess_extension(content_type)
    if guessed:
        return guessed
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".img"


def _target(dest: Path, name: str) -> Path:
    name = safe_filename(name)
    target = dest / name
    # Belt and braces: a sanitised name has no separator, but a symlink could still lead out.
    if target.resolve().parent != dest.resolve():
        raise DownloadError(f"refusing to write {name!r} outside {dest}")
    return target


async def _stream_to(
    response: aiohttp.ClientResponse, target: Path, url: str, max_bytes: int
) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f"{PARTIAL_PREFIX}{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent
        )
    except OSError as exc:
        raise DownloadError(f"cannot write to {target.parent}: {exc.strerror or exc}") from None
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"{url[:100]} is over the {max_bytes}-byte cap", url=url)
                out.write(chunk)
            out.flush()
            # The journal will say this file exists: make that true after a power cut too.
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except (aiohttp.ClientError, TimeoutError):
        # Some aiohttp errors are OSErrors too: they are the network's, retried by the caller.
        _discard(tmp)
        raise
    except OSError as exc:
        _discard(tmp)
        raise DownloadError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(tmp)
        raise
    return target


def remove_partials(dest_dir: str | os.PathLike[str]) -> int:
    """Delete the temporary files that interrupted downloads left in ``dest_dir``."""
    removed = 0
    for path in Path(dest_dir).glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
