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
import base64
import contextlib
import datetime
import hashlib
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

from ._download import create_temp
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

_SCRIPT = """
(function () {
  var body = document.body, buttons = document.querySelectorAll("[data-f]");
  function show(f) {
    body.setAttribute("data-filter", f);
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].setAttribute("aria-pressed", String(buttons[i].getAttribute("data-f") === f));
    }
  }
  for (var i = 0; i < buttons.length; i++) {
    buttons[i].addEventListener("click", function (event) {
      var f = event.currentTarget.getAttribute("data-f");
      show(f);
      try { history.replaceState(null, "", "#" + f); } catch (e) {}
    });
  }
  var wanted = location.hash.slice(1);
  show(/^(succeeded|failed|unknown|pending)$/.test(wanted) ? wanted : "all");
  document.getElementById("grid").addEventListener("click", function (event) {
    var p = event.target.closest ? event.target.closest(".prompt") : null;
    if (p) { p.classList.toggle("open"); }
  });
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()

_STYLE = """
:root { color-scheme: light dark; --bg: #f6f7f9; --card: #fff; --ink: #1d232b;
  --dim: #5d6773; --line: #e2e6eb; --frame: #eceff3; --ok: #1f7a4d; --bad: #b3261e;
  --unk: #8a5a00; --pend: #4a5a70; }
@media (prefers-color-scheme: dark) { :root { --bg: #15181c; --card: #1e2228; --ink: #e8ebef;
  --dim: #9aa4af; --line: #30363e; --frame: #262b32; --ok: #5fc48f; --bad: #f08a80;
  --unk: #e0b050; --pend: #a8b4c4; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { position: sticky; top: 0; z-index: 1; background: var(--bg);
  border-bottom: 1px solid var(--line); padding: 14px 20px 12px; }
h1 { font-size: 18px; margin: 0 0 4px; font-weight: 600; word-break: break-all; }
.sub { color: var(--dim); font-size: 13px; margin: 0 0 10px; }
.sub b { color: var(--ink); font-weight: 600; }
.legend { font-size: 12px; margin-top: -6px; }
nav { display: flex; flex-wrap: wrap; gap: 6px; }
nav button { font: inherit; font-size: 13px; padding: 4px 12px; border-radius: 999px;
  border: 1px solid var(--line); background: var(--card); color: var(--ink); cursor: pointer; }
nav button[aria-pressed="true"] { background: var(--ink); color: var(--bg);
  border-color: var(--ink); }
nav button span { opacity: .7; margin-left: 4px; }
main { padding: 16px 20px 40px; }
#grid { list-style: none; margin: 0; padding: 0; display: grid; gap: 14px;
  grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  overflow: hidden; display: flex; flex-direction: column;
  content-visibility: auto; contain-intrinsic-size: auto 330px; }
.pic { display: block; aspect-ratio: 1; overflow: hidden; background: var(--frame); }
.pic img { display: block; width: 100%; height: 100%; object-fit: contain; }
.none { display: flex; align-items: center; justify-content: center; font-size: 15px;
  font-weight: 600; letter-spacing: .02em; }
.cap { padding: 8px 10px 10px; display: flex; flex-direction: column; gap: 5px; }
.top { display: flex; justify-content: space-between; gap: 8px; font-size: 12px;
  color: var(--dim); }
.top .n { color: var(--ink); font-weight: 600; }
.prompt { margin: 0; cursor: pointer; overflow-wrap: anywhere; white-space: pre-wrap;
  display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; }
.prompt.open { display: block; }
.tags { display: flex; flex-wrap: wrap; gap: 4px; }
.tags span { font-size: 11px; padding: 1px 6px; border-radius: 4px; background: var(--frame);
  color: var(--dim); white-space: nowrap; }
.tags .def { font-style: italic; }
.why { margin: 0; font-size: 12px; color: var(--bad); overflow-wrap: anywhere; }
.s-succeeded { color: var(--ok); } .s-failed { color: var(--bad); }
.s-unknown { color: var(--unk); } .s-pending { color: var(--pend); }
.earlier { opacity: .75; }
footer { color: var(--dim); font-size: 12px; padding: 0 20px 24px; }
body[data-filter="succeeded"] .tile:not([data-status="succeeded"]),
body[data-filter="failed"] .tile:not([data-status="failed"]),
body[data-filter="unknown"] .tile:not([data-status="unknown"]),
body[data-filter="pending"] .tile:not([data-status="pending"]) { display: none; }
"""

_LEGEND = (
    "Each tile: line in the prompt file, time to result and cost; the prompt (click it for "
    "all of it); quality and aspect ratio sent (<i>default</i>: left to the provider); "
    "the lane (provider · key fingerprint)."
)

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


def _tiles(entry: ManifestEntry) -> Iterable[str]:
    entry = with_options(entry)
    status = entry.status
    right = []
    if entry.seconds is not None:
        right.append(_duration(entry.seconds))
    if entry.cost is not None:
        right.append(f"{_number(entry.cost)} {_esc(entry.cost_unit or '')}".rstrip())
    meta = " · ".join(right)
    run = f' title="run {_esc(entry.run_id)}"' if entry.run_id else ""
    prompt = f'<p class="prompt">{_esc(entry.input.prompt)}</p>'
    why = ""
    if entry.error is not None:
        kind = f"{_esc(entry.error_type)}: " if entry.error_type else ""
        why = f'<p class="why">{kind}{_esc(entry.error)}</p>'
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
) -> str:
    """The page for ``entries`` (manifest lines) as one HTML string.

    ``title`` is shown escaped (the output directory's name). ``running``
    says the batch goes on: the page then says so and reloads itself every
    :data:`RELOAD_SECONDS` seconds. Entries are shown by line number.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    ordered = sorted(entries, key=lambda e: (e.earlier, e.line, e.key))
    counts = Counter(entry.status for entry in ordered)
    images = sum(len(e.files) for e in ordered if e.status == "succeeded")
    costs: dict[str, float] = {}
    for entry in ordered:
        if entry.cost is not None:
            unit = entry.cost_unit or ""
            costs[unit] = costs.get(unit, 0.0) + entry.cost
    facts = [f"<b>{len(ordered)}</b> prompts", f"<b>{images}</b> images"]
    facts += [f"<b>{_number(total)}</b> {_esc(unit)}" for unit, total in sorted(costs.items())]
    if running:
        state = "running (the page reloads itself)"
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
    body = "".join(tile for entry in ordered for tile in _tiles(entry))
    return head + body + tail


def write_gallery(
    out_dir: str | os.PathLike[str],
    entries: Sequence[ManifestEntry],
    *,
    running: bool = False,
) -> Path:
    """Write ``out_dir/index.html`` for ``entries``, atomically (temporary file, then rename).

    Raises ``OSError`` when the directory cannot be written.
    """
    out = Path(out_dir)
    page = render_gallery(entries, title=out.resolve().name or str(out), running=running)
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

    __slots__ = ("_issued", "_last", "_lock", "_out", "_snapshot", "_written")

    def __init__(self, out: Path, snapshot: Callable[[], Sequence[ManifestEntry]]) -> None:
        self._out = out
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
                write_gallery(self._out, entries, running=running)
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
) -> AsyncIterator[None]:
    """Keep ``out_dir/index.html`` current while the body runs; write it once more at the end.

    ``entries`` returns the manifest lines as they stand (called on the event
    loop; ``None`` turns the page off). The page is written at once, then
    every ``interval`` seconds when something changed (from
    :data:`THREAD_FROM` entries on, rendered in a worker thread, so the loop
    is not held up), and on the way out whatever ends the
    body: its end, an error, a cancellation (Ctrl-C). A page that cannot be
    written is logged as a warning and never stops the batch.
    """
    if entries is None:
        yield
        return
    writer = _Writer(Path(out_dir), entries)

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


def gallery_command(out_dir: Path) -> int:
    """``gptimage-async gallery DIR``: rebuild the page; print its path. Exit 0, or 2 on error."""
    try:
        page = build_gallery(out_dir)
    except FileNotFoundError:
        print(
            f"gptimage-async: error: no {_MANIFEST_NAME} in {out_dir}: run a batch into it first "
            "(an interrupted batch writes it when run again)",
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
