"""Saving images: fetched through a ``Transport``, retried, capped, checked whole, atomic.

Through the session's transport, ``proxy=``, ``NO_PROXY`` and ``user_agent``
apply and the key goes to the API's origin only. An image is read whole (at
most ``max_bytes``), judged by its bytes (``_image_bytes``), written to a
hidden temporary file and renamed into place: a file under its final name is
always a whole image. ``_classify.read`` judges each attempt, as for creates
and polls. Names are sanitised to ``[A-Za-z0-9._-]`` and must resolve inside
the destination.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import mimetypes
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote_to_bytes, urlsplit

import anyio

from ._classify import IncompleteBody, Verdict, exchange, read
from ._endpoint import absolute_url
from ._exceptions import (
    APIStatusError,
    ConfigurationError,
    DownloadError,
    GPTImageError,
    status_error,
)
from ._image_bytes import HEAD_BYTES, sniff, why_not_whole
from ._models import Result
from ._retry import backoff_delays, parse_retry_after
from ._transport import Answer, HTTPTransport, Transport
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
#: Seconds one image may take in all: every attempt and every wait between them.
DEFAULT_IMAGE_TIMEOUT = 300.0
#: Connections a ``download()`` call without a transport opens at once.
DEFAULT_CONNECTIONS = 8
#: What an image request accepts (as browsers ask for an ``<img>``).
IMAGE_ACCEPT = "image/avif,image/webp,image/png,image/*;q=0.8,*/*;q=0.5"
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
#: Content types that say nothing (S3 serves ``binary/octet-stream`` by default): the
#: bytes decide whether such a body is an image.
GENERIC_TYPES = frozenset(
    {
        "application/octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/x-binary",
        "application/unknown",
        "application/download",
        "application/force-download",
        "",
    }
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


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
    transport: Transport | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    attempts: int = DEFAULT_ATTEMPTS,
    attempt_timeout: float = DEFAULT_TIMEOUT,
    image_timeout: float = DEFAULT_IMAGE_TIMEOUT,
    base_url: str | None = None,
    proxy: str | None = None,
    user_agent: str | None = None,
) -> list[Path]:
    """Save the images of a result (or image URLs) into ``dest_dir``; return their paths.

    The files are named ``{stem}-{n}{ext}`` (``n`` from 1, ``ext`` from the
    image's bytes, else its content type); ``stem`` defaults to the run id, or
    to the URL's file name. Existing files of the same name are replaced. Each
    image is retried on 5xx, 429, connection failures, and bodies that are
    not a whole image (empty, or cut short: a PNG without its IEND chunk, a
    JPEG without EOI, a WebP shorter than its RIFF size, a body shorter than
    its ``Content-Length``); a TLS certificate that fails verification is
    not retried.

    An image is judged by its bytes: a PNG, JPEG, WebP or GIF served as
    ``application/octet-stream`` (or with no type) is saved; an HTML, XML or
    JSON page is refused whatever its label, and so is anything larger than
    ``max_bytes`` (an image is held in memory whole before it is written).
    ``data:image/...;base64,`` URLs are saved directly, and relative URLs are
    resolved against ``base_url`` (the API root).

    ``transport``: the ``Transport`` to fetch through, ``session.transport``
    to share a session's connections, proxy and user agent (it is left
    open). Default ``None``: a transport of this call's own, with ``proxy``
    (else ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``) and
    ``user_agent``, and no API key.

    ``attempt_timeout`` bounds one attempt; ``image_timeout`` bounds one image in
    all: attempts, the waits between them (a ``Retry-After`` included) and the
    disk. A server asking to wait past it fails the image at once. Raises
    ``DownloadError``.

    >>> result = await session.generate("a ceramic lamp")      # doctest: +SKIP
    >>> await download(result, "out/")                          # doctest: +SKIP
    [PosixPath('out/run_abc-1.png')]
    """
    urls, default_stem = _source_urls(source)
    if max_bytes < 1 or attempts < 1 or not attempt_timeout > 0 or not image_timeout > 0:
        raise ConfigurationError(
            "max_bytes, attempts, attempt_timeout and image_timeout must be positive"
        )
    base = safe_filename(stem if stem is not None else default_stem)
    dest = _prepare_dir(Path(dest_dir))
    limits = _Limits(max_bytes, attempts, attempt_timeout, image_timeout)
    own = transport is None
    http = transport or HTTPTransport(
        base_url or "",
        None,
        timeout=attempt_timeout,
        max_connections=DEFAULT_CONNECTIONS,
        user_agent=user_agent or USER_AGENT,
        proxy=proxy,
    )
    paths: list[Path | None] = [None] * len(urls)
    try:
        async with anyio.create_task_group() as tg:
            for i, url in enumerate(urls):

                async def one(i: int = i, url: str = url) -> None:
                    paths[i] = await _save_one(
                        http, absolute_url(url, base_url), dest, f"{base}-{i + 1}", limits
                    )

                tg.start_soon(one)
    except BaseExceptionGroup as group:
        # One image failing fails the call: report the first error as it was raised.
        raise first_error(group) from None
    finally:
        if own:
            await http.aclose()
    return [p for p in paths if p is not None]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error in a (possibly nested) exception group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


class _Limits:
    __slots__ = ("attempt_timeout", "attempts", "max_bytes", "timeout")

    def __init__(
        self, max_bytes: int, attempts: int, attempt_timeout: float, timeout: float
    ) -> None:
        self.max_bytes = max_bytes
        self.attempts = attempts
        self.attempt_timeout = attempt_timeout
        self.timeout = timeout


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
        return [source], _url_stem(source)
    urls = list(source)
    if not all(isinstance(u, str) for u in urls):
        raise ConfigurationError("download() takes a Result, a URL, or URLs")
    return urls, _url_stem(urls[0]) if urls else "image"


def _url_stem(url: str) -> str:
    if url[:5].lower() == "data:":
        return "image"
    return PurePosixPath(urlsplit(url).path).stem or "image"


async def _save_one(http: Transport, url: str, dest: Path, stem: str, limits: _Limits) -> Path:
    if url[:5].lower() == "data:":
        return _save_data_url(url, dest, stem, limits.max_bytes)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"not an http(s) image URL: {url[:100]!r}", url=url)
    # One deadline for everything this image waits on: connects, reads, Retry-After.
    deadline = anyio.current_time() + limits.timeout
    try:
        with anyio.fail_after(limits.timeout):
            return await _fetch(http, url, dest, stem, limits, deadline)
    except TimeoutError:
        raise DownloadError(
            f"could not download {url[:100]} within the image's {limits.timeout:g}s deadline",
            url=url,
        ) from None


async def _fetch(
    http: Transport, url: str, dest: Path, stem: str, limits: _Limits, deadline: float
) -> Path:
    delays = backoff_delays()  # when the server gave no Retry-After

    def decode(answer: Answer) -> tuple[str, bytes]:
        return _image(answer, url)

    for attempt in range(1, limits.attempts + 1):
        left = deadline - anyio.current_time()
        outcome = await exchange(
            http,
            "GET",
            url,
            accept=IMAGE_ACCEPT,
            time_limit=max(0.001, min(limits.attempt_timeout, left)),
            max_bytes=limits.max_bytes,
        )
        reading = read(outcome, decode, kind="download")
        if reading.value is not None:
            ext, data = reading.value
            return _write_file(_target(dest, stem + ext), data)
        error = reading.error
        assert error is not None
        if reading.verdict is Verdict.FAIL:
            raise _download_error(error, url)
        if attempt == limits.attempts:
            raise DownloadError(
                f"could not download {url[:100]} after {limits.attempts} attempts: "
                f"{_reason(error)}",
                url=url,
            )
        delay = reading.wait if reading.verdict is Verdict.WAIT else next(delays)
        left = deadline - anyio.current_time()
        if delay >= left:
            # Sleeping into the deadline only to fail there helps no one.
            raise DownloadError(
                f"could not download {url[:100]}: {_reason(error)}, and waiting {delay:g}s more "
                f"would pass the image's {limits.timeout:g}s deadline",
                url=url,
            )
        await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _image(answer: Answer, url: str) -> tuple[str, bytes]:
    """The extension and bytes of the whole image in ``answer``; raises what ``read`` judges."""
    status = answer.status
    if status != 200:
        raise status_error(status, f"HTTP {status}", retry_after=parse_retry_after(answer.headers))
    label = answer.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (label.startswith("image/") or label in GENERIC_TYPES):
        raise DownloadError(f"{url[:100]} is {label!r}, not an image", url=url, status_code=status)
    data = answer.body
    if not data:
        raise IncompleteBody("not a whole image: the body is empty", status_code=status)
    ext = _judge(data[:HEAD_BYTES], label, url)
    why = why_not_whole(sniff(data), data)
    if why is not None:
        raise IncompleteBody(f"not a whole image: {why}", status_code=status)
    return ext, data


def _reason(error: GPTImageError) -> str:
    if isinstance(error, APIStatusError):
        return f"HTTP {error.status_code}"
    return error.message


def _download_error(error: GPTImageError, url: str) -> DownloadError:
    if isinstance(error, DownloadError):
        return error
    if isinstance(error, APIStatusError):
        status = error.status_code
        return DownloadError(f"HTTP {status} for {url[:100]}", url=url, status_code=status)
    return DownloadError(f"could not download {url[:100]}: {error.message}", url=url)


def _looks_like_a_page(data: bytes, label: str) -> str | None:
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text[:1] in (b"{", b"["):
        return "a JSON document"
    if text[:1] == b"<" and label != "image/svg+xml":
        return "an HTML page" if b"html" in text or text.startswith(b"<!doc") else "an XML page"
    return None


def _judge(head: bytes, label: str, url: str) -> str:
    """The file extension for an image whose body starts with ``head``; raises if it is not one."""
    kind = sniff(head)
    if kind is not None:
        return _EXTENSIONS[kind]  # the bytes know better than the label
    page = _looks_like_a_page(head, label)
    if page is not None:
        # An error page a CDN labelled image/png is still an error page.
        raise DownloadError(f"{url[:100]} is {page} labelled {label!r}, not an image", url=url)
    if label in GENERIC_TYPES:
        raise DownloadError(
            f"{url[:100]} is {label!r} and its bytes are not a PNG, JPEG, WebP or GIF image",
            url=url,
        )
    return _extension(label, url)


def _save_data_url(url: str, dest: Path, stem: str, max_bytes: int) -> Path:
    header, comma, payload = url.partition(",")
    if not comma:
        raise DownloadError("a data: URL with no data", url=url[:100])
    params = header[5:].split(";")
    label = params[0].strip().lower() or "text/plain"
    if not (label.startswith("image/") or label in GENERIC_TYPES):
        raise DownloadError(f"a data: URL of {label!r}, not an image", url=url[:100])
    # The base64 text is 4/3 of the bytes: refuse an oversized one before decoding it.
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise DownloadError(f"a data: URL over the {max_bytes}-byte cap", url=url[:100])
    try:
        if "base64" in (p.strip().lower() for p in params[1:]):
            data = base64.b64decode(unquote_to_bytes(payload), validate=True)
        else:
            data = unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise DownloadError(f"a data: URL that cannot be decoded: {exc}", url=url[:100]) from None
    if len(data) > max_bytes:
        raise DownloadError(f"a data: URL over the {max_bytes}-byte cap", url=url[:100])
    ext = _judge(data[:HEAD_BYTES], label, "a data: URL")
    why = why_not_whole(sniff(data), data)
    if why is not None:  # the same rule as a fetched image; asking again cannot help here
        raise DownloadError(f"a data: URL that is not a whole image: {why}", url=url[:100])
    target = _target(dest, stem + ext)
    return _write_file(target, data)


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


def _open_partial(target: Path) -> tuple[int, str]:
    try:
        return create_temp(target.parent, f"{PARTIAL_PREFIX}{target.name}.", PARTIAL_SUFFIX)
    except OSError as exc:
        raise DownloadError(f"cannot write to {target.parent}: {exc.strerror or exc}") from None


def _write_file(target: Path, data: bytes) -> Path:
    with _complete_file(target) as out:
        out.write(data)
    return target


@contextlib.contextmanager
def _complete_file(target: Path) -> Iterator[BinaryIO]:
    """A hidden partial file, renamed to ``target`` only once written whole and synced.

    Whatever stops the writing removes the partial file. A local write error
    is a ``DownloadError``.
    """
    fd, tmp = _open_partial(target)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            # The journal will say this file exists: make that true after a power cut too.
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        _discard(tmp)
        raise DownloadError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(tmp)
        raise


def create_temp(directory: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """Create a new, empty file in ``directory``, open for writing; return its fd and path.

    The file gets the mode any new file of the user gets (0o666 less the umask):
    ``tempfile.mkstemp``'s 0o600 would leave images and manifests unreadable to
    the group a umask of 0o002 or 0o022 means to share them with.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")  # pragma: no cover


def remove_partials(dest_dir: str | os.PathLike[str]) -> int:
    """Delete the temporary files that interrupted downloads left in ``dest_dir``."""
    removed = 0
    for path in Path(dest_dir).glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
