"""A result's images: shown inline in notebooks, saved to disk, read as bytes.

``Result.save`` / ``Result.read`` / ``Result._repr_html_`` are thin; the work
is here. A result remembers the session that resolved it (``bind``), so that
its images are fetched through that session and on that session's event loop,
even when the caller awaits on another loop (a notebook cell awaiting a result
of a ``SyncSession``, whose loop runs in a background thread).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import html
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio

from ._download import download
from ._exceptions import SessionClosedError
from ._loop_thread import ALIVE_CHECK, loop_blocked, serves_sync
from ._models import DEFAULT_ASPECT_RATIO, DEFAULT_QUALITY, Result, install_image_access
from ._transport import Transport

__all__ = ["ImageSource", "bind", "read_images", "render_html", "save_images"]

T = TypeVar("T")

#: Widest an inline image is drawn, in CSS pixels (the file keeps its own size).
DISPLAY_MAX_PX = 384
#: Prompt characters shown in a caption; the rest is cut with an ellipsis.
CAPTION_PROMPT_CHARS = 300
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
)


class ImageSource(Protocol):
    """What a result needs of the session that resolved it (``Session`` is one)."""

    @property
    def base_url(self) -> str:
        """The API root that relative image URLs resolve against."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the session is closed (its transport then no longer sends)."""
        ...

    @property
    def transport(self) -> Transport:
        """The session's transport: its proxy, user agent and connections."""
        ...


class _Origin:
    """The session that resolved a result, the loop it runs on, and its API root.

    The session is held weakly: results kept for long must not keep every
    session that made them alive.
    """

    __slots__ = ("_session", "base_url", "loop")

    def __init__(self, session: ImageSource, loop: asyncio.AbstractEventLoop) -> None:
        self._session = weakref.ref(session)
        self.loop = loop
        self.base_url = session.base_url

    @property
    def session(self) -> ImageSource | None:
        """The session, while it exists."""
        return self._session()


def bind(result: Result | None, session: ImageSource) -> None:
    """Remember that ``session`` (on the running loop) resolved ``result``; ``None`` is ignored.

    Kept outside the struct's fields: not compared, encoded, shown or pickled.
    """
    if result is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # resolved outside a loop: nothing to bind to, and never a crash here
        return
    result.__dict__["_origin"] = _Origin(session, loop)


async def save_images(
    result: Result,
    dest_dir: str | os.PathLike[str],
    *,
    stem: str | None,
    via: ImageSource | None = None,
) -> list[Path]:
    """``Result.save``: the images into ``dest_dir``, through the result's session if open.

    ``via``: through this session instead, whose loop the caller runs on
    (``SyncSession.download``): nothing is handed to another loop, which may
    be the one blocked waiting for this call. Relative URLs still resolve
    against the API root of the session that resolved the result.
    """
    origin: _Origin | None = result.__dict__.get("_origin")
    base_url = origin.base_url if origin is not None else None
    if via is not None:
        return await _download(result, dest_dir, stem, via, base_url=base_url or via.base_url)
    return await _on_origin_loop(
        origin, functools.partial(_download, result, dest_dir, stem, base_url=base_url)
    )


async def read_images(result: Result, *, via: ImageSource | None = None) -> list[bytes]:
    """``Result.read``: each image's bytes, in ``urls`` order, fetched as ``save`` does.

    The bytes pass through a private temporary directory, so they get every
    check a saved file gets (complete, an image, not over the size cap). They
    are also kept on the result, so a notebook shows them after the URLs expire.
    ``via``: as for ``save_images``.
    """
    with tempfile.TemporaryDirectory(prefix="gptimage-read-") as tmp:
        paths = await save_images(result, tmp, stem="image", via=via)
        images = [await anyio.Path(path).read_bytes() for path in paths]
    result.__dict__["_images"] = tuple(images)
    return images


async def _download(
    result: Result,
    dest_dir: str | os.PathLike[str],
    stem: str | None,
    session: ImageSource | None,
    *,
    base_url: str | None,
) -> list[Path]:
    # The one place a result's images are fetched: through ``session``'s
    # transport while it is open (its proxy, user agent and connections; the
    # caller runs on its loop); with none, or once it is closed, through a
    # transport of download's own, against the API root relative image URLs
    # resolve on.
    if session is not None and not session.closed:
        try:
            return await download(
                result, dest_dir, stem=stem, transport=session.transport, base_url=base_url
            )
        except SessionClosedError:
            pass  # closed since: fetch on our own below
    return await download(result, dest_dir, stem=stem, base_url=base_url)


async def _on_origin_loop(
    origin: _Origin | None, fetch: Callable[[ImageSource | None], Coroutine[Any, Any, T]]
) -> T:
    """``fetch(session)`` on the loop of the session that resolved the result, if it can be.

    A session's connections belong to its loop: awaited from another loop (a
    ``SyncSession`` runs its own in a thread), the work is handed to that loop
    and its outcome awaited here. Where that loop cannot run it, ``fetch(None)``
    runs here instead (on a transport of its own): the session closed or gone,
    its loop stopped, or its loop's thread blocked waiting for a
    ``SyncSession`` call (``loop_blocked``), which may be this very one (an
    async session's result given to ``SyncSession.download`` inside
    ``asyncio.run``): handed there, neither would ever end. And so when that
    loop stops, or cancels the work, before it is done (checked every
    ``ALIVE_CHECK`` seconds).
    """
    here = asyncio.get_running_loop()
    session = origin.session if origin is not None else None
    if origin is None or session is None or session.closed:
        return await fetch(None)
    if origin.loop is here:
        return await fetch(session)
    # Closed first (above), loop stopped after: a closed session's loop may
    # stop before it would start the work, which would then never end.
    if not origin.loop.is_running() or loop_blocked(origin.loop):
        return await fetch(None)
    given_up = threading.Event()

    async def unless_given_up() -> T:
        # Given up on before that loop started it (the loop had stopped, and runs
        # again later, to close its session): asyncio cancels the task only a
        # turn after its first step, so the work would start then, and race the
        # fetch made here instead (a second download; a connection cut mid-accept).
        if given_up.is_set():
            raise asyncio.CancelledError
        return await fetch(session)

    handed = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(unless_given_up(), origin.loop))
    try:
        # That loop may stop (its session closed, its thread ended) before it
        # starts the work, which would then never end: checked now and then.
        while not handed.done():
            await asyncio.wait([handed], timeout=ALIVE_CHECK)
            if not handed.done() and not origin.loop.is_running():
                given_up.set()
                handed.cancel()
                return await fetch(None)
    except BaseException:
        given_up.set()
        handed.cancel()
        raise
    if handed.cancelled():  # cancelled there (its loop shut down), not here
        return await fetch(None)
    return handed.result()


def render_html(result: Result) -> str:
    """``Result._repr_html_``: the images inline, with a caption; all text escaped.

    Images read by ``read()`` are embedded (``data:`` URLs) and outlive the
    provider's links; otherwise the ``<img>`` tags point at the URLs, which
    expire, as the caption says.
    """
    images: tuple[bytes, ...] | None = result.__dict__.get("_images")
    alt = _escape(_cut(result.request.prompt if result.request else result.run_id))
    tiles: list[str] = []
    sources: list[str | None]
    if images is not None and len(images) == len(result.urls):
        sources = [_data_url(data) for data in images]
    else:
        sources = [url if _showable(url) else None for url in result.urls]
    for number, (url, src) in enumerate(zip(result.urls, sources, strict=True), 1):
        if src is None:
            tiles.append(f"<code>{_escape(url[:200])}</code>")
            continue
        link = _escape(url) if _showable(url) and not url.startswith("data:") else None
        img = (
            f'<img src="{_escape(src)}" alt="{alt} ({number})" loading="lazy" '
            f'style="max-width:{DISPLAY_MAX_PX}px;max-height:{DISPLAY_MAX_PX}px;height:auto">'
        )
        tiles.append(f'<a href="{link}" target="_blank" rel="noopener">{img}</a>' if link else img)
    body = "".join(tiles) or "<i>no images</i>"
    return (
        '<figure class="gptimage-result" style="margin:0">'
        f'<div style="display:flex;flex-wrap:wrap;gap:8px">{body}</div>'
        f'<figcaption style="font-size:90%;margin-top:4px">{_caption(result, images)}'
        "</figcaption></figure>"
    )


def _caption(result: Result, images: tuple[bytes, ...] | None) -> str:
    request = result.request
    parts: list[str] = []
    if request is not None:
        parts.append(f"<b>{_escape(_cut(request.prompt))}</b>")
        # The words of the gallery and manifest: the provider's default, named as such.
        ratio = request.aspect_ratio or f"{DEFAULT_ASPECT_RATIO} (default)"
        parts.append(f"aspect ratio {_escape(ratio)}")
        parts.append(f"quality {_escape(request.quality or f'{DEFAULT_QUALITY} (default)')}")
        if request.image_urls:
            parts.append(f"{len(request.image_urls)} reference image(s)")
    run = f"run <code>{_escape(result.run_id)}</code> on {_escape(result.provider)}"
    if result.elapsed is not None:
        run += f", {result.elapsed:.1f} s"
    parts.append(run)
    if images is None:
        origin: _Origin | None = result.__dict__.get("_origin")
        # A SyncSession's result: its code has no loop to await on.
        keep = (
            "session.download(result, dir)"
            if origin is not None and serves_sync(origin.loop)
            else "await result.save(dir)"
        )
        parts.append(
            "these image URLs expire (the provider keeps them for a limited time): "
            f"<code>{keep}</code> keeps the files"
        )
    return " · ".join(parts)


def _showable(url: str) -> bool:
    # Only what a browser fetches as an image; a javascript: URL stays text.
    lowered = url[:11].lower()
    return lowered.startswith(("http://", "https://", "data:image/"))


def _data_url(data: bytes) -> str:
    kind = "application/octet-stream"
    for magic, offset, mime in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            kind = mime
            break
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _cut(text: str) -> str:
    if len(text) <= CAPTION_PROMPT_CHARS:
        return text
    return text[: CAPTION_PROMPT_CHARS - 1] + "…"


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


class _Access:
    """``Result``'s image methods, plugged into ``_models`` (see ``ImageAccess``)."""

    async def save(
        self, result: Result, dest_dir: str | os.PathLike[str], *, stem: str | None
    ) -> list[Path]:
        return await save_images(result, dest_dir, stem=stem)

    async def read(self, result: Result) -> list[bytes]:
        return await read_images(result)

    def html(self, result: Result) -> str:
        return render_html(result)


install_image_access(_Access())
