"""Running many prompts through a session: journaled, resumable, observable.

A :class:`Batch` takes prompts (usually from :func:`read_prompts`) and an
output directory, and for each prompt: writes an *intent* to the journal,
sends the create, writes the run id, waits for the run, saves its images, and
writes how it ended. Every record is on disk before the next step, so running
the same batch again after a crash, a Ctrl-C or ``kill -9``

- skips the prompts already done,
- attaches the runs already created by their id (never creating them again),
- reports the prompts whose create was in flight when the process died, as
  ``unknown``, instead of paying for them twice (``resubmit_unknown=True``
  sends them again, accepting that risk),
- and submits the rest.

Creates are sent through a small window (``create_window``, default 4): it
bounds how many prompts a ``kill -9`` can leave ``unknown`` without slowing
a batch down, since the rate limiter spaces creates far wider than their
round trip.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import anyio

from ._batch_plan import Plan, earlier_entries, endpoint_notice, plan, session_lanes
from ._batch_run import BatchRunner
from ._batch_types import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    BatchEvent,
    BatchItem,
    BatchProgress,
    BatchReport,
    BatchStop,
    EventKind,
    Phase,
    out_of_space,
    prompt_key,
)
from ._bulk import Sender
from ._download import (
    DEFAULT_MAX_BYTES,
    remove_partials,
)
from ._exceptions import (
    ConfigurationError,
    DiskSpaceError,
    GPTImageError,
    SessionClosedError,
)
from ._gallery_keep import GalleryPage, keep_gallery
from ._journal import Endpoint, Journal
from ._manifest import EntryStatus, ManifestEntry, write_manifest
from ._models import ImageRequest
from ._prompts import BatchPrompt
from ._session import Session
from ._transport import Transport

__all__ = [
    "DEFAULT_CREATE_WINDOW",
    "EXPECTED_IMAGE_BYTES",
    "JOURNAL_NAME",
    "MANIFEST_NAME",
    "Batch",
    "BatchEvent",
    "BatchProgress",
    "BatchReport",
    "BatchStop",
    "EventKind",
    "prompt_key",
]

logger = logging.getLogger("gptimage_async")

#: Creates in flight at once: the most prompts a ``kill -9`` can leave ``unknown``.
DEFAULT_CREATE_WINDOW = 4
#: Images downloaded at once.
DEFAULT_DOWNLOAD_CONCURRENCY = 8
#: Bytes one saved image is expected to take, for the free-space check before a batch
#: starts: a 1536x1024 PNG of GPT Image 1.5 is 2-4 MB; 4 MB errs on the side of room.
EXPECTED_IMAGE_BYTES = 4_000_000


def check_free_space(out: Path, runs: int, per_image: int) -> None:
    """``DiskSpaceError`` unless ``out`` has ``per_image`` bytes free for each of ``runs``.

    ``per_image`` 0 (or ``runs`` 0) skips the check. Used before anything is sent by
    ``Batch.run`` and ``gptimage-async generate --out``.
    """
    if not per_image or not runs:
        return
    needed = runs * per_image
    free = shutil.disk_usage(out).free
    if free < needed:
        raise DiskSpaceError(
            f"{out} has {free / 1e6:.1f} MB free; {runs} image(s) need about "
            f"{needed / 1e6:.0f} MB ({per_image / 1e6:.0f} MB each): "
            "free some space, or lower the estimate (expected_image_bytes, "
            "--expected-image-mb)",
            needed=needed,
            free=free,
        )


class Batch(BatchRunner):
    """Generate and save the images of many prompts; safe to kill and run again.

    ::

        prompts = gi.read_prompts("prompts.txt")
        async with gi.Session("runbase", on_exit="cancel") as session:
            batch = gi.Batch(session, prompts, "out/", on_event=print)
            report = await batch.run()
        print(report.counts)          # {'succeeded': 1998, 'failed': 2, ...}

    Writes ``out/journal.jsonl`` as it goes and ``out/manifest.jsonl`` at
    the end (see the module docstring for what a rerun does), and keeps the
    gallery page ``out/index.html`` current (every few seconds, and at the
    end; ``gallery=False`` skips it). ``concurrency``
    caps the runs in flight (default: no cap, the session's rate limiter
    paces everything). ``download=False`` records URLs without saving images.
    ``on_event`` is called with every :class:`BatchEvent`; ``progress`` can
    be read at any time. :meth:`stop` ends the batch early, cleanly.
    ``expected_image_bytes`` (default ``EXPECTED_IMAGE_BYTES``, 4 MB; ``0``
    skips the check) is the free space :meth:`run` wants per image before it
    sends anything. :meth:`plan` says what a run would do, sending nothing.
    Creates go through the session's bulk engine (``_bulk``): its tail rule
    marks the last ones, its clean stop drops those not yet on the wire.

    Images are named ``{line}-{slug}-{tag}-{n}.png``, ``tag`` a hash of the
    request: a rerun with other options, or an edited prompt file, never
    writes over an earlier request's images, and the manifest keeps listing
    them (``earlier``). Runs the journal holds from another provider or base
    URL are not attached here but reported failed (``ConfigurationError``,
    resumable from where they were created); :meth:`endpoint_notice` says so
    before anything is sent. ``attach_elsewhere=True`` attaches those of the
    same provider anyway (a proxy swapped for the provider, a simulator on a
    new port).

    Prompts given as strings or ``ImageRequest``s are numbered from 1 and
    validated here (``InvalidRequestError``). After a stop, runs in flight are
    still tracked by the session: close it with ``on_exit="cancel"`` so as
    not to wait for them (a rerun attaches them). A batch runs once.
    """

    __slots__ = ("missing_lanes",)

    def __init__(
        self,
        session: Session,
        prompts: Iterable[BatchPrompt | ImageRequest | str],
        out_dir: str | os.PathLike[str],
        *,
        concurrency: int | None = None,
        download: bool = True,
        resubmit_unknown: bool = False,
        attach_elsewhere: bool = False,
        create_window: int = DEFAULT_CREATE_WINDOW,
        download_concurrency: int = DEFAULT_DOWNLOAD_CONCURRENCY,
        max_download_bytes: int = DEFAULT_MAX_BYTES,
        on_event: Callable[[BatchEvent], object] | None = None,
        fsync: bool = True,
        expected_image_bytes: int = EXPECTED_IMAGE_BYTES,
        gallery: bool = True,
    ) -> None:
        for name, value in (
            ("create_window", create_window),
            ("download_concurrency", download_concurrency),
            ("max_download_bytes", max_download_bytes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int")
        if not isinstance(expected_image_bytes, int) or expected_image_bytes < 0:
            raise ConfigurationError("expected_image_bytes must be an int >= 0 (0: no check)")
        self._space_per_image = expected_image_bytes
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError("concurrency must be a positive int or None")
        self._session = session
        self._out = Path(out_dir)
        self._items: list[BatchItem] = []
        seen: collections.Counter[str] = collections.Counter()
        for position, item in enumerate(prompts, 1):
            prompt = (
                item
                if isinstance(item, BatchPrompt)
                else BatchPrompt(position, session.prepare(item))
            )
            base = prompt_key(prompt.request)
            seen[base] += 1
            self._items.append(BatchItem(prompt, prompt_key(prompt.request, seen[base])))
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self._gate = asyncio.Semaphore(create_window)
        self._download = download
        self._download_slots = asyncio.Semaphore(download_concurrency)
        self._max_bytes = max_download_bytes
        self._resubmit_unknown = resubmit_unknown
        self._attach_elsewhere = attach_elsewhere
        # The caller asked for the endpoint notice and shows it: run() does not repeat it.
        self._notice_taken = False
        #: Runs left alone by :meth:`run`, per lane (``Run.lane``) this session lacks.
        self.missing_lanes: dict[str, int] = {}
        self._on_event = on_event
        self._fsync = fsync
        self._gallery = gallery  # out_dir/index.html, kept current (_gallery.keep_gallery)
        self._phases: collections.Counter[Phase] = collections.Counter(
            {"waiting": len(self._items)}
        )
        self._statuses: collections.Counter[EntryStatus] = collections.Counter()
        self._finish_times: collections.deque[float] = collections.deque()
        self._scopes: set[anyio.CancelScope] = set()
        #: The bulk engine's clean stop: no create after stop(), those on the wire answered.
        self._sender = Sender(session.submit)
        self._feed_scope: anyio.CancelScope | None = None
        self._journal: Journal | None = None
        self._earlier: tuple[ManifestEntry, ...] = ()
        self._http: Transport | None = None
        self._state: Literal["new", "running", "done"] = "new"
        self._started: float | None = None
        self._stopping = False
        self._finish_runs = False
        self._stop_reason: str | None = None
        self._stop_cause: BatchStop | None = None
        self._create_failures = 0
        #: What this process did: creates sent, runs attached, prompts skipped as done.
        self.submitted = 0
        self.attached = 0
        self.skipped = 0
        self.refused = 0

    # -- where and how far ---------------------------------------------------------

    @property
    def out_dir(self) -> Path:
        """Where images, the journal and the manifest go."""
        return self._out

    @property
    def journal_path(self) -> Path:
        """``out_dir/journal.jsonl``: the crash-safe record a rerun resumes from."""
        return self._out / JOURNAL_NAME

    @property
    def manifest_path(self) -> Path:
        """``out_dir/manifest.jsonl``: one line per prompt, written when the batch ends."""
        return self._out / MANIFEST_NAME

    def __len__(self) -> int:
        """The number of prompts."""
        return len(self._items)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or a fatal error stopped the batch)."""
        return self._stopping

    def stop(
        self, reason: str | None = None, *, finish_runs: bool = False, keep_queued: bool = False
    ) -> None:
        """Stop cleanly: send no more creates, let those in flight be answered and journaled.

        ``finish_runs=False`` (the default): runs not finished stay ``pending``
        for a rerun to attach. ``True``: the runs already created (paid for)
        are followed to their end and their images saved, as when an error no
        prompt escapes stops the batch (spend cap, every lane closed,
        401/402/403). ``keep_queued``: creates already waiting for a slot still
        go (the spend cap: their spend is reserved under it). Safe from a
        signal handler, and more than once; a later plain call stops all that
        waiting too (a Ctrl-C). The report's ``stop_cause`` is then
        ``BatchStop.INTERRUPTED``, unless an error stopped the batch first.
        """
        if self._stopping:
            if self._finish_runs and not finish_runs:
                self._finish_runs = False
                self._sender.stop()
                for scope in self._scopes:
                    scope.cancel()
            return
        self._stopping = True
        self._finish_runs = finish_runs
        self._stop_reason, self._stop_cause = reason, self._stop_cause or BatchStop.INTERRUPTED
        if self._feed_scope is not None:
            self._feed_scope.cancel()
        if not keep_queued:
            self._sender.stop()
        for scope in self._scopes if not finish_runs else ():
            scope.cancel()
        self._emit("stopping", None, message=reason)

    def _halt(self, cause: BatchStop, reason: str, **how: bool) -> None:
        # An error stops the batch: the report's cause, as its reason, is the first stop's.
        if not self._stopping:
            self._stop_cause = cause
        self.stop(reason, **how)

    # -- control ---------------------------------------------------------------------

    @property
    def endpoint(self) -> Endpoint:
        """Where this batch sends its requests: the session's provider and API root."""
        return Endpoint(self._session.provider, self._session.base_url)

    def endpoint_notice(self) -> str | None:
        """A sentence to show before running if the output directory was used elsewhere.

        ``None`` when the directory is new or its last batch used this same
        provider and base URL. Reads the journal without locking it; nothing is
        sent. :meth:`run` logs the same sentence as a warning unless this was
        called first (the caller then shows it, once).

        >>> notice = batch.endpoint_notice()        # doctest: +SKIP
        >>> if notice: print(notice)                # doctest: +SKIP
        """
        self._notice_taken = True
        if not self.journal_path.exists():
            return None
        try:
            return self._notice(Journal.read(self.journal_path))
        except (OSError, GPTImageError):
            return None  # run() reports a damaged or unreadable journal properly

    def _notice(self, journal: Journal) -> str | None:
        return endpoint_notice(
            journal,
            self.endpoint,
            self._out,
            attach_elsewhere=self._attach_elsewhere,
            lanes=session_lanes(self._session),
        )

    @property
    def on_wire(self) -> int:
        """Creates sent and not yet answered (their runs may exist and be paid for)."""
        return self._sender.on_wire

    def plan(self, *, by_lane: bool = True) -> Plan:
        """What running the batch now would do, from ``out_dir``'s journal; sends nothing.

        ``Plan.submit`` are the prompts it would send (what a dry run counts),
        ``Plan.attach`` the earlier runs it would follow again, ``Plan.settled``
        those done, of unknown fate, or left to another endpoint or lane
        (``Plan.missing_lanes``). ``by_lane=False`` matches earlier runs by
        provider and API root only (a dry run without the keys). Reads the
        journal without locking it.
        """
        if not self.journal_path.exists():
            return Plan(attach=[], submit=list(self._items), settled=[])
        return self._plan_with(Journal.read(self.journal_path), by_lane=by_lane)

    def _plan_with(self, journal: Journal, *, by_lane: bool = True) -> Plan:
        return plan(
            self._items,
            journal,
            here=self.endpoint,
            attach_elsewhere=self._attach_elsewhere,
            resubmit_unknown=self._resubmit_unknown,
            files_present=self._files_present,
            lanes=session_lanes(self._session) if by_lane else None,
        )

    async def run(self) -> BatchReport:
        """Run the batch to its end (or to :meth:`stop`); return the report.

        Raises ``OSError`` if the output directory cannot be written to,
        ``JournalError`` if another process is running a batch into it, and
        ``DiskSpaceError`` if its free space is below ``expected_image_bytes``
        times the runs it would save (default 4 MB each; ``0`` skips the
        check); all before anything is sent. A disk that fills up later on (an
        image or a journal record refused) stops the batch (``stop_reason``
        says so): no more creates, the creates on the wire are answered and
        journaled (the journal keeps space in reserve for that), and a rerun
        resumes.
        """
        if self._state != "new":
            raise SessionClosedError("a Batch runs once; create a new one to run it again")
        self._state = "running"
        self._started = time.monotonic()
        self._out.mkdir(parents=True, exist_ok=True)
        shown = GalleryPage()
        try:
            with Journal(self.journal_path, fsync=self._fsync) as journal:
                self._journal = journal
                remove_partials(self._out)
                notice = self._notice(journal)
                if notice is not None and not self._notice_taken:
                    logger.warning("%s", notice)
                journal.start(provider=self._session.provider, base_url=self._session.base_url)
                planned = self._plan_with(journal)
                self.missing_lanes = dict(planned.missing_lanes)
                attach, submit = self._apply_plan(planned)
                self._earlier = earlier_entries(journal, {i.entry.key for i in self._items})
                self._check_space(len(attach) + len(submit))
                # Images go through the session's transport: its proxy, user agent, key rule.
                self._http = self._session.transport if self._download else None
                self._roots = session_lanes(self._session)
                page = self._gallery_entries if self._gallery else None
                async with keep_gallery(
                    self._out, page, stop_reason=lambda: self._stop_reason
                ) as shown:
                    await self._feed(attach, submit)
        finally:
            self._journal = None
            self._http = None
            self._state = "done"
        entries = tuple(item.entry for item in sorted(self._items, key=lambda i: i.prompt.line))
        try:
            write_manifest(self.manifest_path, entries + self._earlier)
        except OSError as exc:
            if not out_of_space(exc):
                raise
            # The journal (with its reserve) holds every run paid for; the manifest is
            # rebuilt from it by the next run: a typed stop, not a raw OSError.
            self._stopping = True
            self._stop_cause = self._stop_cause or BatchStop.DISK_FULL
            self._stop_reason = (self._stop_reason or "the disk is full") + (
                f"; {self.manifest_path} could not be written either (no space): "
                "free some space and run the batch again, it is rebuilt from the journal"
            )
            logger.warning("%s", self._stop_reason)
        return BatchReport(
            entries=entries,
            progress=self.progress,
            manifest=self.manifest_path,
            journal=self.journal_path,
            stopped=self._stopping,
            stop_reason=self._stop_reason,
            stop_cause=self._stop_cause,
            submitted=self.submitted,
            attached=self.attached,
            skipped=self.skipped,
            refused=self.refused,
            gallery=shown.path,
        )

    # -- planning ----------------------------------------------------------------------

    def _apply_plan(self, planned: Plan) -> tuple[list[tuple[BatchItem, str]], list[BatchItem]]:
        # Settled from the journal alone: nothing new to record in it.
        self.skipped += planned.skipped
        for settled in planned.settled:
            item = settled.item
            item.entry = settled.entry
            self._set_phase(item, "finished")
            self._statuses[settled.entry.status] += 1
            self._emit(settled.kind, item.entry)
        return planned.attach, planned.submit

    def _check_space(self, runs: int) -> None:
        """Refuse to start a job whose images would not fit (``DiskSpaceError``)."""
        if self._download:
            check_free_space(self._out, runs, self._space_per_image)

    def _files_present(self, entry: ManifestEntry) -> bool:
        if not self._download:
            return True
        return bool(entry.files) and all((self._out / name).is_file() for name in entry.files)

    def __repr__(self) -> str:
        p = self.progress
        return (
            f"<Batch {self._out} {self._state} total={p.total} succeeded={p.succeeded} "
            f"failed={p.failed} unknown={p.unknown} in_flight={p.in_flight}>"
        )
