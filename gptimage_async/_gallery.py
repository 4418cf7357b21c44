"""The gallery of a batch: ``DIR/index.html``, every prompt and what became of it.

One self-contained HTML file next to the images: a grid of the saved images
(lazily loaded), each captioned with its line number, prompt, options, lane,
time to result and cost; failed, unknown and pending prompts with their
reason; counts and a filter by status at the top. It opens from disk
(``file://``): no server, nothing fetched from the network or a CDN. Its
Content-Security-Policy lets only its own inline script run and images come
only from the directory.

Prompts, errors and file names are user or server text: every one is
HTML-escaped, and image paths are URL-quoted, so a prompt such as
``<img src=x onerror=alert(1)>`` shows as text. The page stays static HTML
with one small script (the filter is a ``data-filter`` attribute the
stylesheet acts on), so 10,000 images render as fast as the browser lays
out 10,000 tiles, and only the visible ones load.

A batch rewrites the page atomically (temporary file, then rename) every
:data:`DEFAULT_INTERVAL` seconds while it runs, when something changed, and
once more when it ends, stopped or crashed (:func:`keep_gallery`);
``gptimage-async gallery DIR`` rebuilds it from ``manifest.jsonl``
(:func:`build_gallery`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import html
import logging
import os
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

import msgspec

from ._batch_types import batch_words
from ._download import create_temp
from ._gallery_assets import LEGEND as _LEGEND
from ._gallery_assets import SCRIPT as _SCRIPT
from ._gallery_assets import SCRIPT_HASH as _SCRIPT_HASH
from ._gallery_assets import STYLE as _STYLE
from ._manifest import EntryStatus, ManifestEntry, read_manifest, with_options
from ._version import __version__

__all__ = [
    "DEFAULT_INTERVAL",
    "GALLERY_NAME",
    "add_gallery_command",
    "build_gallery",
    "gallery_command",
    "keep_gallery",
    "render_gallery",
    "write_gallery",
]

#: The page's file name in the output directory.
GALLERY_NAME = "index.html"
#: Seconds between two rewrites of the page while a batch runs (only when something changed).
DEFAULT_INTERVAL = 3.0
#: Entries from which the page is rendered in a worker thread. Below, rendering takes
#: under ~7 ms and is done on the loop: a thread costs more than it saves, and a test's
#: fake clock, which jumps ahead whenever the loop is idle, would jump while it waits.
THREAD_FROM = 500
#: Seconds between two reloads of a page whose batch is still running (none once it ended).
RELOAD_SECONDS = 10
logger = logging.getLogger("gptimage_async")

_MANIFEST_NAME = "manifest.jsonl"  # _batch.MANIFEST_NAME; not imported: _batch imports us
_STATUSES: tuple[EntryStatus, ...] = ("succeeded", "failed", "unknown", "pending")
#: Pixel sizes of the images per aspect ratio (GPT Image): the tile reserves the shape.
_SIZES = {"1:1": (1024, 1024), "3:2": (1536, 1024), "2:3": (1024, 1536)}

_CSP = (
    "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _src(name: str) -> str:
    # Quoted: a name is a relative path segment, never a scheme or markup.
    return _esc(quote(name, safe=""))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _number(value: float) -> str:
    return f"{value:g}"


def _tags(entry: ManifestEntry) -> str:
    parts = []
    # No title attributes: the header's legend says what the tags are, once, not 10,000 times.
    for value, source in (
        (entry.quality, entry.quality_source),
        (entry.aspect_ratio, entry.aspect_ratio_source),
    ):
        if value is None:
            continue
        if source == "default":
            parts.append(f'<span class="def">{_esc(value)} (default)</span>')
        else:
            parts.append(f"<span>{_esc(value)}</span>")
    if entry.provider is not None:
        lane = entry.provider
        if entry.key_fingerprint is not None:
            lane += f" · {entry.key_fingerprint}"
        parts.append(f"<span>{_esc(lane)}</span>")
    if entry.earlier:
        parts.append('<span title="made by an earlier run into this directory">earlier</span>')
    return f'<div class="tags">{"".join(parts)}</div>'


def _tiles(entry: ManifestEntry, missing: frozenset[str]) -> Iterable[str]:
    entry = with_options(entry)
    status = entry.status
    right = []
    if entry.seconds is not None:
        right.append(_duration(entry.seconds))
    if entry.cost is not None:
        right.append(f"{_number(entry.cost)} {_esc(entry.cost_unit or '')}".rstrip())
    meta = " · ".join(right)
    run = f' title="run {_esc(entry.run_id)}"' if entry.run_id else ""
    # dir="auto": a right-to-left prompt reads as such, and never reorders what is around it.
    prompt = f'<p class="prompt" dir="auto">{_esc(entry.input.prompt)}</p>'
    why = ""
    if entry.error is not None:
        kind = f"{_esc(entry.error_type)}: " if entry.error_type else ""
        why = f'<p class="why" dir="auto">{kind}{_esc(batch_words(entry.error))}</p>'
    tags = _tags(entry)
    css = "tile earlier" if entry.earlier else "tile"
    files = entry.files if status == "succeeded" else ()
    width, height = _SIZES.get(entry.aspect_ratio or "1:1", (1024, 1024))
    if not files:
        label = "not saved" if status == "succeeded" else status
        yield (
            f'<li class="{css}" data-status="{status}">'
            f'<div class="pic none s-{status}">{label}</div><div class="cap">'
            f'<div class="top"><span class="n"{run}>line {entry.line}</span>'
            f'<span class="s-{status}">{status}</span></div>{prompt}{tags}{why}</div></li>'
        )
        return
    for number, name in enumerate(files, 1):
        count = f" ({number}/{len(files)})" if len(files) > 1 else ""
        if name in missing:  # deleted or moved since the batch saved it
            yield (
                f'<li class="{css}" data-status="{status}">'
                f'<div class="pic none s-failed" title="{_esc(name)}">file missing</div>'
                f'<div class="cap"><div class="top"><span class="n"{run}>line {entry.line}'
                f"{count}</span><span>{meta}</span></div>{prompt}{tags}"
                f'<p class="why">{_esc(name)} is no longer in the directory: rerun the '
                "batch to fetch it again</p></div></li>"
            )
            continue
        src = _src(name)
        yield (
            f'<li class="{css}" data-status="{status}"><a class="pic" href="{src}">'
            f'<img src="{src}" loading="lazy" decoding="async" width="{width}" '
            f'height="{height}" alt="line {entry.line}{count}"></a><div class="cap">'
            f'<div class="top"><span class="n"{run}>line {entry.line}{count}</span>'
            f"<span>{meta}</span></div>{prompt}{tags}</div></li>"
        )


def render_gallery(
    entries: Sequence[ManifestEntry],
    *,
    title: str,
    running: bool = False,
    now: datetime.datetime | None = None,
    missing: Iterable[str] = (),
    stop_reason: str | None = None,
) -> str:
    """The page for ``entries`` (manifest lines) as one HTML string.

    ``title`` is shown escaped (the output directory's name). ``running``
    says the batch goes on: the page then says so and reloads itself every
    :data:`RELOAD_SECONDS` seconds. Entries are shown by line number.
    ``missing`` names image files no longer on disk: shown as "file missing",
    not counted as images. ``stop_reason`` is why the batch stopped early
    (``BatchReport.stop_reason``), said in the header.
    """
    gone = frozenset(missing)
    now = now or datetime.datetime.now(datetime.UTC)
    ordered = sorted(entries, key=lambda e: (e.earlier, e.line, e.key))
    counts = Counter(entry.status for entry in ordered)
    images = sum(
        1 for e in ordered if e.status == "succeeded" for name in e.files if name not in gone
    )
    costs: dict[str, float] = {}
    for entry in ordered:
        if entry.cost is not None:
            unit = entry.cost_unit or ""
            costs[unit] = costs.get(unit, 0.0) + entry.cost
    facts = [f"<b>{len(ordered)}</b> prompts", f"<b>{images}</b> images"]
    facts += [f"<b>{_number(total)}</b> {_esc(unit)}" for unit, total in sorted(costs.items())]
    if running:
        state = "running (the page reloads itself)"
    elif stop_reason is not None:
        state = f"stopped: {_esc(stop_reason)}. Fix that, then run the batch again to finish"
    elif counts["pending"]:
        state = "stopped: run the batch again to finish"
    else:
        state = "finished"
    stamp = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    buttons = [f'<button data-f="all" aria-pressed="true">all<span>{len(ordered)}</span></button>']
    buttons += [
        f'<button data-f="{s}" aria-pressed="false">{s}<span>{counts[s]}</span></button>'
        for s in _STATUSES
        if counts[s] or s != "pending"
    ]
    reload = f'<meta http-equiv="refresh" content="{RELOAD_SECONDS}">' if running else ""
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{reload}<title>{_esc(title)} · gptimage-async</title><style>{_STYLE}</style></head>"
        '<body data-filter="all"><header>'
        f"<h1>{_esc(title)}</h1>"
        f'<p class="sub">{" · ".join(facts)} · {state} · written {stamp}</p>'
        f'<p class="sub legend">{_LEGEND}</p>'
        f"<nav>{''.join(buttons)}</nav></header>"
        '<main><ul id="grid">'
    )
    tail = (
        "</ul></main><footer>Made by gptimage-async "
        f"{_esc(__version__)}. Rebuild with <code>gptimage-async gallery DIR</code>.</footer>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
    body = "".join(tile for entry in ordered for tile in _tiles(entry, gone))
    return head + body + tail


def write_gallery(
    out_dir: str | os.PathLike[str],
    entries: Sequence[ManifestEntry],
    *,
    running: bool = False,
    stop_reason: str | None = None,
) -> Path:
    """Write ``out_dir/index.html`` for ``entries``, atomically (temporary file, then rename).

    Image files of succeeded entries that are not in ``out_dir`` show as
    missing. ``stop_reason``: see :func:`render_gallery`. Raises ``OSError``
    when the directory cannot be written.
    """
    out = Path(out_dir)
    missing = [
        name
        for entry in entries
        if entry.status == "succeeded"
        for name in entry.files
        if not (out / name).is_file()
    ]
    page = render_gallery(
        entries,
        title=out.resolve().name or str(out),
        running=running,
        missing=missing,
        stop_reason=stop_reason,
    )
    target = out / GALLERY_NAME
    fd, tmp = create_temp(out, f".{GALLERY_NAME}.", ".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def build_gallery(out_dir: str | os.PathLike[str]) -> Path:
    """Rebuild ``out_dir/index.html`` from ``out_dir/manifest.jsonl``; return its path.

    Raises ``FileNotFoundError`` without a manifest, ``msgspec.DecodeError``
    or ``msgspec.ValidationError`` for a damaged one, ``OSError`` otherwise.
    """
    entries = read_manifest(Path(out_dir) / _MANIFEST_NAME)
    return write_gallery(out_dir, entries)


class _Writer:
    """Writes the page, from a worker thread or not; a newer snapshot always wins the rename."""

    __slots__ = ("_issued", "_last", "_lock", "_out", "_snapshot", "_stop_reason", "_written")

    def __init__(
        self,
        out: Path,
        snapshot: Callable[[], Sequence[ManifestEntry]],
        stop_reason: Callable[[], str | None] | None = None,
    ) -> None:
        self._out = out
        self._stop_reason = stop_reason
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._issued = 0  # tickets handed out, on the event loop
        self._written = 0  # ticket of the page on disk
        self._last: list[ManifestEntry] | None = None

    def changed(self) -> tuple[int, list[ManifestEntry]] | None:
        """A ticket and a snapshot, if an entry changed since the last (entries are replaced)."""
        entries = list(self._snapshot())
        last = self._last
        if (
            last is not None
            and len(entries) == len(last)
            and all(a is b for a, b in zip(entries, last, strict=True))
        ):
            return None
        self._last = entries
        self._issued += 1
        return self._issued, entries

    def final(self) -> tuple[int, list[ManifestEntry]]:
        """A ticket and a snapshot for the last page, changed or not."""
        self._last = list(self._snapshot())
        self._issued += 1
        return self._issued, self._last

    def write(self, ticket: int, entries: list[ManifestEntry], running: bool) -> None:
        with self._lock:
            if ticket < self._written:
                return  # a later snapshot is on disk already
            try:
                reason = None if running or self._stop_reason is None else self._stop_reason()
                write_gallery(self._out, entries, running=running, stop_reason=reason)
            except OSError as exc:
                # A view of the journal: losing it costs nothing a rerun cannot rebuild.
                logger.warning("could not write the gallery page: %s", exc)
            self._written = ticket


@contextlib.asynccontextmanager
async def keep_gallery(
    out_dir: str | os.PathLike[str],
    entries: Callable[[], Sequence[ManifestEntry]] | None,
    *,
    interval: float = DEFAULT_INTERVAL,
    stop_reason: Callable[[], str | None] | None = None,
) -> AsyncIterator[None]:
    """Keep ``out_dir/index.html`` current while the body runs; write it once more at the end.

    ``entries`` returns the manifest lines as they stand (called on the event
    loop; ``None`` turns the page off). The page is written at once, then
    every ``interval`` seconds when something changed (from
    :data:`THREAD_FROM` entries on, rendered in a worker thread, so the loop
    is not held up), and on the way out whatever ends the
    body: its end, an error, a cancellation (Ctrl-C). A page that cannot be
    written is logged as a warning and never stops the batch. ``stop_reason``
    returns why the batch stopped early (``None``: it did not), for the last page.
    """
    if entries is None:
        yield
        return
    writer = _Writer(Path(out_dir), entries, stop_reason)

    async def keep() -> None:
        while True:
            snapshot = writer.changed()
            if snapshot is not None:
                if len(snapshot[1]) < THREAD_FROM:
                    writer.write(*snapshot, True)
                else:
                    await asyncio.to_thread(writer.write, *snapshot, True)
            await asyncio.sleep(interval)

    task = asyncio.create_task(keep())
    try:
        yield
    finally:
        task.cancel()
        # Written here, on the loop: nothing may come between the body's end and the page.
        writer.write(*writer.final(), False)


# -- command line ------------------------------------------------------------------------------


def add_gallery_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add ``gallery DIR`` to the command line's subcommands (``parents``: shared options)."""
    parser = commands.add_parser(
        "gallery",
        parents=list(parents),
        help="rebuild a batch's gallery page (DIR/index.html) from its manifest",
        description="Rebuild DIR/index.html from DIR/manifest.jsonl: every prompt of the "
        "batch with its images, options, lane, time and cost, and why the failed ones failed. "
        "The page opens from disk, with no server and no network.",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="a batch's output directory")
    # Its own -v, not the shared one (pass no parent with -v): that says "log requests".
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging (the gallery reads files and sends no request)",
    )


def gallery_command(out_dir: Path) -> int:
    """``gptimage-async gallery DIR``: rebuild the page; print its path. Exit 0, or 2 on error."""
    try:
        page = build_gallery(out_dir)
    except FileNotFoundError:
        print(
            f"gptimage-async: error: no {_MANIFEST_NAME} in {out_dir} yet: a batch writes it "
            "when it ends (finished, stopped or failed), and keeps DIR/index.html current "
            "while it runs; a batch killed before its end writes it when run again",
            file=sys.stderr,
        )
        return 2
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(
            f"gptimage-async: error: {out_dir / _MANIFEST_NAME} is damaged: {exc}", file=sys.stderr
        )
        return 2
    except OSError as exc:
        print(
            f"gptimage-async: error: cannot write to {out_dir}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    print(page)
    return 0
