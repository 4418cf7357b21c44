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

A batch rewrites the page atomically (temporary file, then rename) every few
seconds while it runs, when something changed, and once more when it ends,
stopped or crashed (``_gallery_keep.keep_gallery``);
``gptimage-async gallery DIR`` rebuilds it from ``manifest.jsonl``
(:func:`build_gallery`).
"""

from __future__ import annotations

import argparse
import datetime
import html
import logging
import os
import shlex
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from ._batch_types import batch_words
from ._download import create_temp
from ._exceptions import ManifestError
from ._gallery_assets import LEGEND as _LEGEND
from ._gallery_assets import SCRIPT as _SCRIPT
from ._gallery_assets import SCRIPT_HASH as _SCRIPT_HASH
from ._gallery_assets import STYLE as _STYLE
from ._manifest import EntryStatus, ManifestEntry, read_manifest, with_options
from ._secrets import redact
from ._version import __version__

__all__ = [
    "RELOAD_SECONDS",
    "STALE_RELOADS",
    "GALLERY_NAME",
    "add_gallery_command",
    "build_gallery",
    "gallery_command",
    "render_gallery",
    "write_gallery",
]

#: The page's file name in the output directory.
GALLERY_NAME = "index.html"
#: Seconds between two reloads of a page whose batch is still running (none once it ended).
RELOAD_SECONDS = 10
#: Reloads after which a "running" page not written again says its batch may have stopped:
#: a running batch rewrites it every few seconds when anything changed, and at least
#: every half of this (``_gallery_keep.REWRITE_SECONDS``), so a page this old is stale.
STALE_RELOADS = 3
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
    # Quoted segment by segment: a name is a path, never a scheme or markup. A
    # batch writes bare names; a hand-edited manifest may hold a sub-folder or an
    # absolute path (a file: URL, which the page's policy allows).
    path = PurePosixPath(name)
    if path.is_absolute():
        return _esc(path.as_uri())
    return _esc("/".join(quote(part, safe="") for part in name.split("/")))


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
    if refs := entry.input.image_urls:
        # The URLs themselves as a tooltip: the page fetches nothing from the network.
        many = "s" if len(refs) > 1 else ""
        parts.append(
            f'<span title="{_esc(" ".join(refs))}">{len(refs)} reference image{many}</span>'
        )
    if entry.provider is not None:
        lane = entry.provider
        if entry.key_fingerprint is not None:
            lane += f" · {entry.key_fingerprint}"
        parts.append(f"<span>{_esc(lane)}</span>")
    if entry.earlier:
        parts.append('<span title="made by an earlier run into this directory">earlier</span>')
    return f'<div class="tags">{"".join(parts)}</div>'


#: Why a prompt is pending, by (the batch runs, its create was answered with a run id).
#: A created run is paid for: a rerun attaches it (the journal has its id), never
#: creates it again. A running page left by a killed batch keeps its running words,
#: so those say what a rerun does too.
_PENDING = {
    (True, True): "created (paid), waiting for its result; if the batch stopped, "
    "a rerun attaches it, never pays again",
    (True, False): "not sent yet, waiting for its turn; if the batch stopped, a rerun sends it",
    (False, True): "created (paid) before the stop, no result yet: run the batch again "
    "to attach it (never paid again)",
    (False, False): "never sent: run the batch again to send it",
}


def _tiles(entry: ManifestEntry, missing: frozenset[str], running: bool) -> Iterable[str]:
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
        said = [_esc(status)]
        if status == "succeeded" and meta:
            said.append(meta)  # --no-download: the time to result still says something
        elif status == "unknown" and entry.created_at is not None:
            said.append(f"sent {entry.created_at.strftime('%H:%M:%S')} UTC")
        if status == "pending" and entry.error is None:
            why = f'<p class="why" dir="auto">{_PENDING[running, entry.run_id is not None]}</p>'
        yield (
            f'<li class="{css}" data-status="{status}">'
            f'<div class="pic none s-{status}">{label}</div><div class="cap">'
            f'<div class="top"><span class="n"{run}>line {entry.line}</span>'
            f'<span class="s-{status}">{" · ".join(said)}</span></div>'
            f"{prompt}{tags}{why}</div></li>"
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
    out_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The page for ``entries`` (manifest lines) as one HTML string.

    ``title`` is shown escaped (the output directory's name). ``running``
    says the batch goes on: the page then says so and reloads itself every
    :data:`RELOAD_SECONDS` seconds. Entries are shown by line number.
    ``missing`` names image files no longer on disk: shown as "file missing",
    not counted as images. ``stop_reason`` is why the batch stopped early
    (``BatchReport.stop_reason``), said in the header. ``out_dir``: the
    directory, named in the footer's rebuild command (shell-quoted; ``DIR``
    when not given).
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
    earlier = sum(1 for entry in ordered if entry.earlier)
    # The prompts of this run's file; requests of earlier runs into the directory apart.
    facts = [f"<b>{len(ordered) - earlier}</b> prompts"]
    if earlier:
        facts.append(f"<b>{earlier}</b> earlier requests")
    facts.append(f"<b>{images}</b> images")
    facts += [f"<b>{_number(total)}</b> {_esc(unit)}" for unit, total in sorted(costs.items())]
    stamp = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    if running:
        # A killed batch (kill -9) never writes "stopped": the page's script says
        # so once the page is older than STALE_RELOADS reloads.
        state = (
            f"running as of {stamp} (the page reloads itself)"
            f'<span id="stale" data-written="{round(now.timestamp() * 1000)}" '
            f'data-after="{STALE_RELOADS * RELOAD_SECONDS * 1000}" hidden>: this page was '
            f"last written at {stamp}, over {STALE_RELOADS * RELOAD_SECONDS} s ago: the batch "
            "may have stopped (killed?); run it again to finish</span>"
        )
    elif stop_reason is not None:
        state = f"stopped: {_esc(stop_reason)}. Fix that, then run the batch again to finish"
    elif counts["pending"]:
        state = "stopped: run the batch again to finish"
    else:
        state = "finished"
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
    where = "DIR" if out_dir is None else shlex.quote(str(out_dir))
    tail = (
        "</ul></main><footer>Made by gptimage-async "
        f"{_esc(__version__)}. Rebuild with <code>gptimage-async gallery {_esc(where)}</code>."
        "</footer>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
    body = "".join(tile for entry in ordered for tile in _tiles(entry, gone, running))
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
        out_dir=out.resolve(),
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

    Raises ``FileNotFoundError`` without a manifest, ``ManifestError`` (file
    and line) for a damaged one, ``OSError`` otherwise.
    """
    entries = read_manifest(Path(out_dir) / _MANIFEST_NAME)
    return write_gallery(out_dir, entries)


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
    if out_dir.exists() and not out_dir.is_dir():
        _say(
            f"gptimage-async: error: {out_dir} is not a batch directory: give the directory "
            f"the batch wrote to (gptimage-async gallery {shlex.quote(str(out_dir.parent))})"
        )
        return 2
    try:
        page = build_gallery(out_dir)
    except FileNotFoundError:
        if not out_dir.exists():
            _say(
                f"gptimage-async: error: {out_dir} does not exist: give the directory a batch "
                "wrote to (its --out)",
            )
            return 2
        _say(
            f"gptimage-async: error: no {_MANIFEST_NAME} in {out_dir} yet: a batch writes it "
            f"when it ends (finished, stopped or failed), and keeps "
            f"{out_dir / GALLERY_NAME} current while it runs; a batch killed before its end "
            "writes it when run again"
        )
        return 2
    except ManifestError as exc:
        _say(f"gptimage-async: error: {exc.path} is damaged at line {exc.line}: {exc.reason}")
        return 2
    except OSError as exc:
        # The page is what could not be written (the OS names its temporary file).
        _say(f"gptimage-async: error: cannot write {out_dir / GALLERY_NAME}: {exc.strerror or exc}")
        return 2
    print(page)
    return 0


def _say(message: str) -> None:
    # On standard error, never echoing a value that looks like an API key (a key
    # given as the directory).
    print(redact(message, bare=True), file=sys.stderr)
