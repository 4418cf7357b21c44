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
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import anyio
import msgspec

from ._download import (
    DEFAULT_MAX_BYTES,
    DownloadError,
    download,
    first_error,
    remove_partials,
    slugify,
)
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    EndpointNotFoundError,
    GPTImageError,
    InsufficientCreditsError,
    PermissionDeniedError,
    QuotaExceededError,
    RunFailedError,
    RunNotFoundError,
    SessionClosedError,
    TLSCertificateError,
    UncertainCreateError,
)
from ._feed import is_last
from ._gallery import keep_gallery
from ._journal import Endpoint, Journal, JournalEntry, RerunAction
from ._manifest import (
    EntryStatus,
    ManifestEntry,
    stamp_created,
    stamp_finished,
    stamp_lane,
    write_manifest,
)
from ._models import ImageRequest, Result
from ._prompts import BatchPrompt
from ._run import Run
from ._session import Session
from ._transport import Transport

__all__ = [
    "DEFAULT_CREATE_WINDOW",
    "JOURNAL_NAME",
    "MANIFEST_NAME",
    "Batch",
    "BatchEvent",
    "BatchProgress",
    "BatchReport",
    "EventKind",
    "prompt_key",
]

logger = logging.getLogger("gptimage_async")

JOURNAL_NAME = "journal.jsonl"
MANIFEST_NAME = "manifest.jsonl"
#: Creates in flight at once: the most prompts a ``kill -9`` can leave ``unknown``.
DEFAULT_CREATE_WINDOW = 4
#: Images downloaded at once.
DEFAULT_DOWNLOAD_CONCURRENCY = 8
#: Creates failing one after another (no success between) before the batch gives up:
#: the provider is down or refusing, and trying every remaining prompt would not help.
MAX_CREATE_FAILURES_IN_A_ROW = 10
#: Seconds of recent finishes the throughput (and so the ETA) is measured over.
RATE_WINDOW = 30.0

#: Errors that no other prompt can escape either: the batch stops at the first.
_UNKNOWN_FATE = (
    "an earlier run sent this prompt's create and stopped before hearing back: "
    "a run may or may not exist (and be paid for), so it was not sent again"
)
_FATAL = (
    AuthenticationError,
    InsufficientCreditsError,
    PermissionDeniedError,
    QuotaExceededError,
    EndpointNotFoundError,
    TLSCertificateError,
)

EventKind = Literal["skipped", "unknown", "created", "attached", "finished", "stopping"]
"""What a :class:`BatchEvent` reports.

``skipped``: done by an earlier run. ``unknown``: an earlier run's create
has an unknown fate, so the prompt is not sent. ``created``: a run was
created (``entry.run_id``). ``attached``: an earlier run's run is followed
again. ``finished``: the prompt ended (``entry.status``). ``stopping``: the
batch stops sending (``message`` says why).
"""

_Phase = Literal["waiting", "submitting", "in_flight", "finished"]


class BatchProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a batch, for progress displays.

    ``succeeded`` includes ``skipped`` (done by an earlier run).
    ``submitting``: creates sent, answer awaited; ``in_flight``: runs
    created (or attached) and not finished, downloads included; ``waiting``:
    not started. ``rate`` is prompts finished per second lately (``None``
    until one finishes) and ``eta`` the seconds left at that rate.
    ``rate_limited`` counts the 429s the session has seen.
    """

    total: int
    succeeded: int
    failed: int
    unknown: int
    skipped: int
    submitting: int
    in_flight: int
    waiting: int
    rate_limited: int
    elapsed: float
    rate: float | None
    eta: float | None

    @property
    def finished(self) -> int:
        """Prompts that reached an end: succeeded, failed or unknown."""
        return self.succeeded + self.failed + self.unknown


class BatchEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something happened to a prompt (or to the batch, for ``stopping``).

    ``entry`` is the prompt's manifest entry as it now stands (``None`` for
    ``stopping``); ``progress`` the batch right after. ``message`` is why a
    batch stops, when an error stopped it (``None`` for a plain ``stop()``).
    """

    kind: EventKind
    entry: ManifestEntry | None
    progress: BatchProgress
    message: str | None = None


class BatchReport(msgspec.Struct, frozen=True, kw_only=True):
    """How a batch run ended.

    ``entries`` are the manifest's lines, in input order. ``stopped`` is true
    when :meth:`Batch.stop` was called or a fatal error stopped the batch;
    ``stop_reason`` is that error (``None`` for a plain ``stop()``).
    ``submitted``, ``attached`` and ``skipped`` count what this process did.
    """

    entries: tuple[ManifestEntry, ...]
    progress: BatchProgress
    manifest: Path
    journal: Path
    stopped: bool
    stop_reason: str | None
    submitted: int
    attached: int
    skipped: int

    @property
    def counts(self) -> dict[str, int]:
        """Prompts by status: succeeded, failed, unknown, pending."""
        counts = {"succeeded": 0, "failed": 0, "unknown": 0, "pending": 0}
        for entry in self.entries:
            counts[entry.status] += 1
        return counts

    @property
    def ok(self) -> bool:
        """True when every prompt succeeded."""
        return all(entry.status == "succeeded" for entry in self.entries)


def prompt_key(request: ImageRequest, occurrence: int = 1) -> str:
    """The key a batch's journal knows a prompt by.

    A hash of the request with the providers' defaults filled in (so leaving
    ``quality`` unset and asking ``"medium"`` are the same request), plus
    which occurrence of that same request it is in the input. Lines moving
    around between two runs of a batch do not change keys.

    >>> prompt_key(ImageRequest("a lamp")) == prompt_key(ImageRequest("a lamp", quality="medium"))
    True
    """
    normalized = ImageRequest(
        request.prompt,
        aspect_ratio=request.aspect_ratio or "1:1",
        quality=request.quality or "medium",
        image_urls=request.image_urls,
    )
    digest = hashlib.sha256(msgspec.json.encode(normalized)).hexdigest()[:20]
    return f"{digest}-{occurrence}"


class _Stopped(Exception):
    """Raised by the batch's ``on_send`` once it stops: that create is not sent."""


class _Item:
    __slots__ = ("entry", "phase", "prompt", "stem")

    def __init__(self, prompt: BatchPrompt, key: str) -> None:
        self.prompt = prompt
        self.phase: _Phase = "waiting"
        self.entry = ManifestEntry(
            line=prompt.line, key=key, input=prompt.request, status="pending"
        )
        # The key's hash in the name: another request on the same line (an edited
        # prompt, another --quality) never writes over this one's paid images.
        tag = hashlib.sha256(key.encode()).hexdigest()[:8]
        self.stem = f"{prompt.line:05d}-{slugify(prompt.request.prompt)}-{tag}"


class Batch:
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

    __slots__ = (
        "_attach_elsewhere",
        "_create_failures",
        "_download",
        "_download_slots",
        "_earlier",
        "_feed_scope",
        "_finish_times",
        "_fsync",
        "_gallery",
        "_gate",
        "_http",
        "_items",
        "_journal",
        "_max_bytes",
        "_notice_taken",
        "_on_event",
        "_out",
        "_phases",
        "_resubmit_unknown",
        "_scopes",
        "_session",
        "_slots",
        "_started",
        "_state",
        "_statuses",
        "_stop_reason",
        "_stopping",
        "_unsent",
        "attached",
        "skipped",
        "submitted",
    )

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
        gallery: bool = True,
    ) -> None:
        for name, value in (
            ("create_window", create_window),
            ("download_concurrency", download_concurrency),
            ("max_download_bytes", max_download_bytes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError("concurrency must be a positive int or None")
        self._session = session
        self._out = Path(out_dir)
        self._items: list[_Item] = []
        seen: collections.Counter[str] = collections.Counter()
        for position, item in enumerate(prompts, 1):
            prompt = (
                item
                if isinstance(item, BatchPrompt)
                else BatchPrompt(position, session.prepare(item))
            )
            base = prompt_key(prompt.request)
            seen[base] += 1
            self._items.append(_Item(prompt, prompt_key(prompt.request, seen[base])))
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self._gate = asyncio.Semaphore(create_window)
        self._download = download
        self._download_slots = asyncio.Semaphore(download_concurrency)
        self._max_bytes = max_download_bytes
        self._resubmit_unknown = resubmit_unknown
        self._attach_elsewhere = attach_elsewhere
        # The caller asked for the endpoint notice and shows it: run() does not repeat it.
        self._notice_taken = False
        self._on_event = on_event
        self._fsync = fsync
        self._gallery = gallery  # out_dir/index.html, kept current (_gallery.keep_gallery)
        self._phases: collections.Counter[_Phase] = collections.Counter(
            {"waiting": len(self._items)}
        )
        self._statuses: collections.Counter[EntryStatus] = collections.Counter()
        self._finish_times: collections.deque[float] = collections.deque()
        self._scopes: set[anyio.CancelScope] = set()
        #: Creates waiting for the rate limiter, not on the wire yet: stop() cancels them.
        self._unsent: dict[_Item, anyio.CancelScope] = {}
        self._feed_scope: anyio.CancelScope | None = None
        self._journal: Journal | None = None
        self._earlier: tuple[ManifestEntry, ...] = ()
        self._http: Transport | None = None
        self._state: Literal["new", "running", "done"] = "new"
        self._started: float | None = None
        self._stopping = False
        self._stop_reason: str | None = None
        self._create_failures = 0
        #: What this process did: creates sent, runs attached, prompts skipped as done.
        self.submitted = 0
        self.attached = 0
        self.skipped = 0

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

    @property
    def progress(self) -> BatchProgress:
        """Where the batch stands now."""
        now = time.monotonic()
        elapsed = 0.0 if self._started is None else now - self._started
        times = self._finish_times
        while times and times[0] < now - RATE_WINDOW:
            times.popleft()
        span = min(RATE_WINDOW, elapsed)
        rate = len(times) / span if times and span > 0 else None
        statuses, phases = self._statuses, self._phases
        finished = statuses["succeeded"] + statuses["failed"] + statuses["unknown"]
        left = len(self._items) - finished
        return BatchProgress(
            total=len(self._items),
            succeeded=statuses["succeeded"],
            failed=statuses["failed"],
            unknown=statuses["unknown"],
            skipped=self.skipped,
            submitting=phases["submitting"],
            in_flight=phases["in_flight"],
            waiting=phases["waiting"],
            rate_limited=self._session.stats.rate_limited,
            elapsed=elapsed,
            rate=rate,
            eta=left / rate if rate else (0.0 if left == 0 else None),
        )

    # -- control ---------------------------------------------------------------------

    def stop(self, reason: str | None = None) -> None:
        """Stop cleanly: send no more creates, let those in flight be answered and journaled.

        Runs not finished stay ``pending`` in the manifest; running the batch
        again attaches them. Safe to call from a signal handler in the event
        loop, and more than once.
        """
        if self._stopping:
            return
        self._stopping = True
        self._stop_reason = reason
        if self._feed_scope is not None:
            self._feed_scope.cancel()
        for scope in [*self._unsent.values(), *self._scopes]:
            scope.cancel()
        self._emit("stopping", None, message=reason)

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
        last, here = journal.last_endpoint, self.endpoint
        if last is None or last == here:
            return None
        elsewhere = [
            entry
            for entry in journal
            if self._resumable(entry) and not self._attachable_here(entry)
        ]
        said = (
            f"{self._out} was last used with {last.provider} at {last.base_url}; "
            f"this run uses {here.provider} at {here.base_url}"
        )
        if not elsewhere:
            return said + "."
        return (
            f"{said}: {len(elsewhere)} run(s) created there and not finished are left "
            f"alone, not looked up here (run again with {last.provider} at "
            f"{last.base_url} to resume them)."
        )

    @staticmethod
    def _resumable(entry: JournalEntry) -> bool:
        # A run exists that a rerun would attach: created, or finished asking for it.
        return entry.run_id is not None and (entry.state == "created" or entry.on_rerun == "attach")

    def _attachable_here(self, entry: JournalEntry) -> bool:
        here = self.endpoint
        if entry.provider is not None and entry.provider != here.provider:
            return False
        if self._attach_elsewhere or entry.base_url is None:
            return True
        return entry.base_url.rstrip("/") == here.base_url.rstrip("/")

    async def run(self) -> BatchReport:
        """Run the batch to its end (or to :meth:`stop`); return the report.

        Raises ``OSError`` if the output directory cannot be written to and
        ``JournalError`` if another process is running a batch into it; both
        before anything is sent. A journal that cannot be written later on (a
        full disk) stops the batch with that error: the records already on
        disk still let a rerun resume.
        """
        if self._state != "new":
            raise SessionClosedError("a Batch runs once; create a new one to run it again")
        self._state = "running"
        self._started = time.monotonic()
        self._out.mkdir(parents=True, exist_ok=True)
        try:
            with Journal(self.journal_path, fsync=self._fsync) as journal:
                self._journal = journal
                remove_partials(self._out)
                notice = self._notice(journal)
                if notice is not None and not self._notice_taken:
                    logger.warning("%s", notice)
                journal.start(provider=self._session.provider, base_url=self._session.base_url)
                attach, submit = self._plan(journal)
                self._earlier = self._earlier_entries(journal)
                # Images go through the session's transport: its proxy, user agent, key rule.
                self._http = self._session.transport if self._download else None
                page = self._gallery_entries if self._gallery else None
                async with keep_gallery(self._out, page):
                    await self._feed(attach, submit)
        finally:
            self._journal = None
            self._http = None
            self._state = "done"
        entries = tuple(item.entry for item in sorted(self._items, key=lambda i: i.prompt.line))
        write_manifest(self.manifest_path, entries + self._earlier)
        return BatchReport(
            entries=entries,
            progress=self.progress,
            manifest=self.manifest_path,
            journal=self.journal_path,
            stopped=self._stopping,
            stop_reason=self._stop_reason,
            submitted=self.submitted,
            attached=self.attached,
            skipped=self.skipped,
        )

    # -- planning ----------------------------------------------------------------------

    def _plan(self, journal: Journal) -> tuple[list[tuple[_Item, str]], list[_Item]]:
        attach: list[tuple[_Item, str]] = []
        submit: list[_Item] = []
        for item in self._items:
            known = journal.get(item.entry.key)
            action, run_id = self._decide(item, known)
            if action == "submit":
                submit.append(item)
            elif action == "attach":
                assert run_id is not None
                attach.append((item, run_id))
        return attach, submit

    def _earlier_entries(self, journal: Journal) -> tuple[ManifestEntry, ...]:
        """What the journal knows of requests not in this run: the manifest keeps them."""
        mine = {item.entry.key for item in self._items}
        earlier: list[ManifestEntry] = []
        for known in journal:
            if known.key in mine:
                continue
            if known.entry is not None:
                earlier.append(msgspec.structs.replace(known.entry, earlier=True))
            elif known.input is not None:  # created or sent, never finished
                unknown = known.state == "intent"
                earlier.append(
                    ManifestEntry(
                        line=known.line,
                        key=known.key,
                        input=known.input,
                        status="unknown" if unknown else "pending",
                        run_id=known.run_id,
                        error=_UNKNOWN_FATE if unknown else None,
                        error_type="UncertainCreateError" if unknown else None,
                        earlier=True,
                    )
                )
        return tuple(sorted(earlier, key=lambda e: (e.line, e.key)))

    def _decide(
        self, item: _Item, known: JournalEntry | None
    ) -> tuple[Literal["submit", "attach", "done"], str | None]:
        if known is None:
            return "submit", None
        if known.state == "intent":
            return self._unknown(item, _UNKNOWN_FATE, "UncertainCreateError")
        if known.state == "created":
            assert known.run_id is not None
            return self._attach_or_leave(item, known, known.run_id)
        previous = known.entry
        assert previous is not None
        action: RerunAction | None = known.on_rerun
        if action == "skip":
            if self._files_present(previous):
                self.skipped += 1
                self._settle_early(item, "succeeded", entry=previous, kind="skipped")
                return "done", None
            action = "attach"  # images deleted or never saved: fetch them again
        if action == "attach" and previous.run_id is not None:
            return self._attach_or_leave(item, known, previous.run_id)
        if action == "ask":
            return self._unknown(
                item, previous.error or "the create's fate is unknown", previous.error_type
            )
        return "submit", None

    def _attach_or_leave(
        self, item: _Item, known: JournalEntry, run_id: str
    ) -> tuple[Literal["attach", "done"], str | None]:
        if self._attachable_here(known):
            return "attach", run_id
        # Polling a run where it was not created would "not find" it, and a rerun
        # would pay for it again: leave it for a session at its own endpoint.
        self._settle_early(
            item,
            "failed",
            run_id=run_id,
            error=f"run {run_id} was created on {known.provider} at {known.base_url}; "
            f"this session is {self._session.provider} at {self._session.base_url}: "
            "resume it from there",
            error_type="ConfigurationError",
        )
        return "done", None

    def _unknown(
        self, item: _Item, error: str, error_type: str | None
    ) -> tuple[Literal["submit", "done"], None]:
        if self._resubmit_unknown:
            return "submit", None
        self._settle_early(item, "unknown", error=error, error_type=error_type, kind="unknown")
        return "done", None

    def _files_present(self, entry: ManifestEntry) -> bool:
        if not self._download:
            return True
        return bool(entry.files) and all((self._out / name).is_file() for name in entry.files)

    def _settle_early(
        self,
        item: _Item,
        status: EntryStatus,
        *,
        entry: ManifestEntry | None = None,
        run_id: str | None = None,
        error: str | None = None,
        error_type: str | None = None,
        kind: EventKind = "finished",
    ) -> None:
        # Settled from the journal alone: nothing new to record in it.
        if entry is not None:
            item.entry = msgspec.structs.replace(entry, line=item.prompt.line)
        else:
            item.entry = msgspec.structs.replace(
                item.entry, status=status, run_id=run_id, error=error, error_type=error_type
            )
        self._set_phase(item, "finished")
        self._statuses[status] += 1
        self._emit(kind, item.entry)

    # -- running -----------------------------------------------------------------------

    async def _feed(self, attach: list[tuple[_Item, str]], submit: list[_Item]) -> None:
        try:
            await self._feed_all(attach, submit)
        except BaseExceptionGroup as group:
            # Only a broken journal (a full disk) or a bug gets here: raise it plainly.
            raise first_error(group) from None

    async def _feed_all(self, attach: list[tuple[_Item, str]], submit: list[_Item]) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as self._feed_scope:
                if self._stopping:
                    return
                for item, run_id in attach:
                    await self._take_slot()
                    tg.start_soon(self._attach, item, run_id)
                for position, item in enumerate(submit, 1):
                    await self._take_slot()
                    await self._gate.acquire()
                    if self._stopping:  # stop() came while this waited
                        self._gate.release()
                        self._release_slot()
                        break
                    # The batch's last creates go ahead of polls (Session.tail_size),
                    # by the rule as_completed follows.
                    session = self._session
                    last = is_last(
                        before=position - 1,
                        after=len(submit) - position,
                        tail=session._tail_left(),
                        longer_than=session.tail_size(),
                    )
                    tg.start_soon(self._submit, item, last)

    async def _take_slot(self) -> None:
        if self._slots is not None:
            await self._slots.acquire()

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    async def _submit(self, item: _Item, last: bool) -> None:
        journal = self._journal
        assert journal is not None
        key, line = item.entry.key, item.prompt.line
        try:
            run: Run | None = None
            try:
                # Cancelled by stop() only until the create goes on the wire (see _sending):
                # a create sent is always let be answered, so its run is journaled.
                with anyio.CancelScope() as self._unsent[item]:
                    run = await self._session.submit(
                        item.prompt.request,
                        on_send=lambda: self._sending(item),
                        ahead_of_polls=last,
                    )
            except _Stopped:
                pass
            except UncertainCreateError as exc:
                self._finish(item, "unknown", error=exc, on_rerun="ask")
                return
            except GPTImageError as exc:
                self._create_failed(item, exc)
                return
            finally:
                self._unsent.pop(item, None)
                self._gate.release()
            if run is None:
                self._withdraw(item)
                return
            self._create_failures = 0
            assert run.id is not None
            journal.created(
                key, run.id, line=line, provider=run.provider, base_url=self._session.base_url
            )
            item.entry = stamp_created(item.entry, run.id, run.lane)
            self._set_phase(item, "in_flight")
            self._emit("created", item.entry)
            if not self._stopping:
                await self._follow(item, run)
        finally:
            self._release_slot()

    def _sending(self, item: _Item) -> None:
        # Called as the create goes on the wire (once per attempt): the intent is
        # on disk before the create can be, and a create still queued in the rate
        # limiter when the process dies was never sent, so it is not "unknown".
        assert self._journal is not None
        if self._stopping:
            raise _Stopped  # a retry, or a stop that came as the limiter let it through
        self._unsent.pop(item, None)  # on the wire from here: stop() must not cancel it
        self._journal.intent(item.entry.key, line=item.prompt.line, request=item.prompt.request)
        if item.phase != "submitting":
            self._set_phase(item, "submitting")
            self.submitted += 1

    def _withdraw(self, item: _Item) -> None:
        # stop() came before this prompt's create was made: it stays pending.
        # If attempts went out, the session chose to send again, which it does only for
        # creates certainly refused, unless it resends uncertain ones: then the intent
        # stays, and a rerun reports the prompt unknown.
        if item.phase == "submitting" and not getattr(self._session, "_resend", False):
            assert self._journal is not None
            self._journal.withdrawn(item.entry.key, line=item.prompt.line)
        self._set_phase(item, "waiting")

    async def _attach(self, item: _Item, run_id: str) -> None:
        try:
            try:
                run = self._session.attach(run_id, request=item.prompt.request)
            except GPTImageError as exc:
                self._finish(item, "failed", error=exc, run_id=run_id, on_rerun="attach")
                return
            self.attached += 1
            item.entry = stamp_lane(msgspec.structs.replace(item.entry, run_id=run_id), run.lane)
            self._set_phase(item, "in_flight")
            self._emit("attached", item.entry)
            await self._follow(item, run)
        finally:
            self._release_slot()

    async def _follow(self, item: _Item, run: Run) -> None:
        run_id = run.id
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            if self._stopping:
                scope.cancel()
            try:
                result = await run
                files = await self._save(item, result)
            except SessionClosedError:
                return  # closed under us: the run may still finish; a rerun attaches it
            except DownloadError as exc:
                # The run exists and succeeded: a rerun attaches it for fresh URLs.
                self._finish(item, "failed", error=exc, run_id=run_id, on_rerun="attach")
            except (RunFailedError, RunNotFoundError) as exc:
                # Failed runs are refunded and unknown ones are gone: only a new create helps.
                self._finish(item, "failed", error=exc, run_id=run_id, on_rerun="submit")
            except GPTImageError as exc:
                if isinstance(exc, _FATAL):
                    self.stop(str(exc))
                self._finish(item, "failed", error=exc, run_id=run_id, on_rerun="attach")
            else:
                self._finish(
                    item,
                    "succeeded",
                    run_id=run_id,
                    urls=tuple(result.urls),
                    files=files,
                    on_rerun="skip",
                )
            finally:
                self._scopes.discard(scope)

    async def _save(self, item: _Item, result: Result) -> tuple[str, ...]:
        if not self._download:
            return ()
        async with self._download_slots:
            paths = await download(
                result,
                self._out,
                stem=item.stem,
                transport=self._http,
                max_bytes=self._max_bytes,
                base_url=self._session.base_url,
            )
        return tuple(path.name for path in paths)

    def _create_failed(self, item: _Item, exc: GPTImageError) -> None:
        self._finish(item, "failed", error=exc, on_rerun="submit")
        self._create_failures += 1
        if isinstance(exc, _FATAL):
            self.stop(str(exc))
        elif self._create_failures >= MAX_CREATE_FAILURES_IN_A_ROW:
            self.stop(f"{self._create_failures} creates failed in a row; the last: {exc}")

    def _finish(
        self,
        item: _Item,
        status: EntryStatus,
        *,
        on_rerun: RerunAction,
        error: BaseException | None = None,
        run_id: str | None = None,
        urls: tuple[str, ...] = (),
        files: tuple[str, ...] = (),
    ) -> None:
        entry = msgspec.structs.replace(
            item.entry,
            status=status,
            run_id=run_id,
            urls=urls,
            files=files,
            error=None if error is None else str(error),
            error_type=None if error is None else type(error).__name__,
        )
        entry = stamp_finished(entry, self._session)  # options, lane, times, cost
        assert self._journal is not None
        self._journal.finished(entry, on_rerun=on_rerun)
        item.entry = entry
        self._set_phase(item, "finished")
        self._statuses[status] += 1
        self._finish_times.append(time.monotonic())
        self._emit("finished", entry)

    def _gallery_entries(self) -> list[ManifestEntry]:
        return [item.entry for item in self._items] + list(self._earlier)

    def _set_phase(self, item: _Item, phase: _Phase) -> None:
        self._phases[item.phase] -= 1
        self._phases[phase] += 1
        item.phase = phase

    def _emit(
        self, kind: EventKind, entry: ManifestEntry | None, message: str | None = None
    ) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(
                BatchEvent(kind=kind, entry=entry, progress=self.progress, message=message)
            )
        except Exception:
            # A display must not be able to sink a batch of paid runs.
            logger.exception("the batch's on_event callback failed")

    def __repr__(self) -> str:
        p = self.progress
        return (
            f"<Batch {self._out} {self._state} total={p.total} succeeded={p.succeeded} "
            f"failed={p.failed} unknown={p.unknown} in_flight={p.in_flight}>"
        )
