"""The manifest of a batch: one JSON line per prompt saying what became of it.

``DIR/manifest.jsonl`` is what a person or a script reads after a batch::

    {"line": 3, "key": "5f0c...-1", "input": {"prompt": "a lamp", ...},
     "status": "succeeded", "run_id": "run_abc", "urls": [...],
     "files": ["00003-a-lamp-5f0c1a2b-1.png"], "error": null, "error_type": null,
     "earlier": false, "quality": "medium", "quality_source": "default",
     "aspect_ratio": "3:2", "aspect_ratio_source": "request",
     "provider": "apiinone", "key_fingerprint": "3f9a1c2b7d40",
     "created_at": "2026-12-07T12:00:01.250Z", "finished_at": "2026-12-07T12:00:09.8Z",
     "seconds": 8.6, "cost": 10, "cost_unit": "credits"}

It is rewritten whole (to a temporary file, then renamed) at the end of every
batch: every prompt of the last run in input order, then every other request
the directory's journal has seen (``"earlier": true``), so no paid image is
forgotten.

The fields after ``earlier`` say what happened (older manifests lack them;
they read back as ``None``): the quality and aspect ratio sent, and whether
the prompt asked for them (``"request"``) or left them to the provider's
default (``"default"``); the lane the run went through (``provider`` and
``key_fingerprint``, ``FINGERPRINT_DIGITS`` hex digits of a keyed hash of the
API key, never the key; manifests written before have 8, still read as
the same lane: ``_pool.same_lane``);
``created_at`` (the provider accepted the create; for an ``unknown`` prompt,
when its create was sent; ``None`` when not known, as for a run settled by
hand whose send time the journal lacks) and ``finished_at`` (the prompt
ended) as wall-clock UTC; ``seconds`` between the two (images saved
included); ``cost`` in ``cost_unit``: the price of the lane that created the run (a
pool lane's ``prices``), else the provider's published one (API in One: 10
credits a medium image, 28 a high one; Runbase: ``None``); a price the user
gave is in ``"price units"``, the user's own (:func:`price_unit`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from ._download import create_temp
from ._exceptions import ManifestError
from ._models import DEFAULT_ASPECT_RATIO, DEFAULT_QUALITY, AspectRatio, ImageRequest, Quality
from ._providers import get_provider

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "DEFAULT_ASPECT_RATIO",
    "DEFAULT_QUALITY",
    "EntryStatus",
    "ManifestEntry",
    "OptionSource",
    "lane_fingerprint",
    "price_unit",
    "read_manifest",
    "stamp_created",
    "stamp_finished",
    "stamp_lane",
    "utc",
    "with_options",
    "write_manifest",
]

OptionSource = Literal["request", "default"]
"""Where an option sent came from: the prompt asked for it, or the provider's default."""

EntryStatus = Literal["succeeded", "failed", "unknown", "pending"]
"""What became of a prompt.

``succeeded``: its images are on disk. ``failed``: it has an error (run
failed, create refused, download failed ...). ``unknown``: its create may or
may not have reached the provider, so it was not sent again. ``pending``: not
finished yet (the batch was stopped); running the batch again resumes it.
"""


class ManifestEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one prompt of a batch: one line of ``manifest.jsonl``.

    ``files`` are relative to the output directory. ``key`` identifies the
    prompt across runs of the batch (a hash of the request, plus which
    occurrence of that request it is). ``earlier`` marks a request an earlier
    run into the directory made that this run's input does not have (another
    ``--quality``, an edited line ...): its files are kept, and listed.
    """

    line: int
    key: str
    input: ImageRequest
    status: EntryStatus
    run_id: str | None = None
    urls: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    error: str | None = None
    error_type: str | None = None
    earlier: bool = False
    quality: Quality | None = None
    quality_source: OptionSource | None = None
    aspect_ratio: AspectRatio | None = None
    aspect_ratio_source: OptionSource | None = None
    provider: str | None = None
    key_fingerprint: str | None = None
    created_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    seconds: float | None = None
    cost: float | None = None
    cost_unit: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ManifestEntry)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def with_options(entry: ManifestEntry) -> ManifestEntry:
    """``entry`` with the quality and aspect ratio sent filled in from its request.

    An option the request left unset is the provider's default, named as such
    (``quality_source="default"``). Entries that have them are returned as is.
    """
    if entry.quality is not None and entry.aspect_ratio is not None:
        return entry
    request = entry.input
    return msgspec.structs.replace(
        entry,
        quality=request.quality or DEFAULT_QUALITY,
        quality_source="request" if request.quality else "default",
        aspect_ratio=request.aspect_ratio or DEFAULT_ASPECT_RATIO,
        aspect_ratio_source="request" if request.aspect_ratio else "default",
    )


def stamp_created(entry: ManifestEntry, run_id: str, lane: str | None = None) -> ManifestEntry:
    """``entry`` once the provider accepted its create: the run id, its lane, the time (UTC).

    ``lane`` is the run's ``Run.lane`` (``"provider:fingerprint"``), recorded as
    ``provider`` and ``key_fingerprint``: the key itself never reaches the manifest.
    """
    return stamp_lane(msgspec.structs.replace(entry, run_id=run_id, created_at=_now()), lane)


def lane_fingerprint(lane: str | None) -> str | None:
    """The key fingerprint of a ``Run.lane`` (``"provider:fingerprint"``), or ``None``."""
    if lane is None:
        return None
    return lane.partition(":")[2] or None


def utc(at: float | None) -> datetime.datetime | None:
    """A wall-clock UNIX time (seconds) as a UTC datetime; ``None`` stays ``None``."""
    return None if at is None else datetime.datetime.fromtimestamp(at, datetime.UTC)


def stamp_lane(entry: ManifestEntry, lane: str | None) -> ManifestEntry:
    """``entry`` with its run's lane (``Run.lane``, ``"provider:fingerprint"``) recorded."""
    if lane is None:
        return entry
    provider, _, fingerprint = lane.partition(":")
    return msgspec.structs.replace(entry, provider=provider, key_fingerprint=fingerprint or None)


def price_unit(provider: str, quality: str, price: float) -> str:
    """The unit of a lane's ``price`` for ``quality``: ``"credits"`` or ``"price units"``.

    A provider's published price is in its unit (API in One: credits); a
    price the user gave is in theirs, which the library does not know: it is
    named ``"price units"`` (the README's "Spend"), never an invented one.
    """
    published = get_provider(provider).credits_per_image
    return "credits" if published is not None and published.get(quality) == price else "price units"


def _lane_price(entry: ManifestEntry, session: Session) -> tuple[float, str] | None:
    """One image of ``entry``'s price and unit: its lane's, else its provider's published."""
    quality = entry.quality or DEFAULT_QUALITY
    if entry.key_fingerprint is not None:
        for lane in session.lanes:
            # An older manifest names the key by 8 digits: a prefix of the full fingerprint.
            if lane.provider == entry.provider and lane.fingerprint.startswith(
                entry.key_fingerprint
            ):
                price = lane.price(quality)
                return None if price is None else (price, price_unit(lane.provider, quality, price))
    published = get_provider(entry.provider or session.provider).credits_per_image
    if published is None or quality not in published:
        return None
    return published[quality], "credits"


def stamp_finished(entry: ManifestEntry, session: Session) -> ManifestEntry:
    """``entry`` as it ended through ``session``: options, lane, finish time, seconds, cost.

    The cost is the price per image of the lane that created the run
    (``Session.lanes``: ``LaneStatus.price``) times the images, falling back
    to the provider's published price; ``None`` where neither is known, and
    for prompts that did not succeed (a failed run is refunded, an unknown one
    may or may not be paid). Its unit: :func:`price_unit`.
    """
    entry = with_options(entry)
    provider = session.provider
    finished = _now()
    seconds = None
    # An unknown create has no result to time (its created_at is when it was sent).
    if entry.created_at is not None and entry.status != "unknown":
        seconds = round((finished - entry.created_at).total_seconds(), 3)
    cost: float | None = None
    unit: str | None = None
    priced = _lane_price(entry, session) if entry.status == "succeeded" else None
    if priced is not None:
        cost = priced[0] * max(1, len(entry.urls), len(entry.files))
        unit = priced[1]
    return msgspec.structs.replace(
        entry,
        # A prompt with no run (never sent, or refused) went through no lane.
        provider=entry.provider or (provider if entry.run_id is not None else None),
        finished_at=finished,
        seconds=seconds,
        cost=cost,
        cost_unit=unit,
    )


def _whole_cost(entry: ManifestEntry) -> ManifestEntry:
    # One number format from run to run: a manifest read back decodes ``28`` as
    # 28.0 (the field is a float), which would then be written ``28.0``.
    cost = entry.cost
    if isinstance(cost, float) and cost.is_integer():
        return msgspec.structs.replace(entry, cost=int(cost))
    return entry


def write_manifest(path: str | os.PathLike[str], entries: Iterable[ManifestEntry]) -> Path:
    """Write ``entries`` as JSON lines to ``path``, atomically (temporary file, then rename).

    Options an entry lacks are filled in from its request (:func:`with_options`).
    A whole ``cost`` is written as an integer (``28``, never ``28.0``), so a
    manifest rewritten by a later run keeps its numbers' format.
    """
    target = Path(path)
    fd, tmp = create_temp(target.parent, f".{target.name}.", ".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for entry in entries:
                out.write(_encoder.encode(_whole_cost(with_options(entry))))
                out.write(b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Read a ``manifest.jsonl`` back.

    >>> for entry in read_manifest("out/manifest.jsonl"):  # doctest: +SKIP
    ...     print(entry.line, entry.status, entry.files)

    Returns the entries in file order. Raises ``ManifestError`` naming the
    file and the line (counted from 1) that is not an entry (damaged or
    hand-edited), ``OSError`` when the file cannot be read.
    """
    entries: list[ManifestEntry] = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(_decoder.decode(line))
            except msgspec.DecodeError as exc:  # ValidationError too: a field of a wrong type
                raise ManifestError(str(exc), path=os.fspath(path), line=number) from None
    return entries
