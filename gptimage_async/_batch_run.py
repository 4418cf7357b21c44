"""A batch at work: its creates fed through the bulk engine, its runs followed and saved.

The part of :class:`~gptimage_async.Batch` that runs; ``_batch.py`` holds
its options, planning and report.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec

from ._batch_plan import attach_lane, same_root
from ._batch_types import (
    STOPS_THE_BATCH,
    BatchEvent,
    BatchItem,
    BatchProgress,
    BatchStop,
    EventKind,
    IntentNotWritten,
    Phase,
    batch_words,
    disk_stop_cause,
    disk_stop_reason,
    failed_create_stop,
    out_of_space,
    progress_at,
    stop_cause,
)
from ._bulk import Sender
from ._create import sending_lane
from ._download import DownloadError, download, first_error
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    GPTImageError,
    RunFailedError,
    RunNotFoundError,
    SessionClosedError,
    SpendCapError,
    UncertainCreateError,
)
from ._journal import Journal, RerunAction
from ._manifest import (
    EntryStatus,
    ManifestEntry,
    lane_fingerprint,
    stamp_created,
    stamp_finished,
    stamp_lane,
    utc,
)
from ._models import Result
from ._pool import ATTEMPT_MET, what_it_met
from ._run import Run
from ._transport import Transport

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._session import Session

__all__ = ["BatchRunner", "out_of_space"]

logger = logging.getLogger("gptimage_async")


class BatchRunner:
    """The running half of ``Batch`` (a base class: ``Batch`` sets every attribute)."""

    __slots__ = (
        "_attach_elsewhere",
        "_create_failures",
        "_download",
        "_download_slots",
        "_earlier",
        "_feed_scope",
        "_finish_runs",
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
        "_roots",
        "_scopes",
        "_sender",
        "_session",
        "_slots",
        "_space_per_image",
        "_started",
        "_state",
        "_statuses",
        "_stop_cause",
        "_stop_reason",
        "_stopping",
        "attached",
        "refused",
        "skipped",
        "submitted",
    )

    _session: Session
    #: ``session_lanes`` of the session, read once per run: a session's lanes never change.
    _roots: dict[str, str]
    _out: Path
    _items: list[BatchItem]
    _slots: asyncio.Semaphore | None
    _gate: asyncio.Semaphore
    _download: bool
    _download_slots: asyncio.Semaphore
    _earlier: tuple[ManifestEntry, ...]
    _gallery: bool
    _max_bytes: int
    _on_event: Callable[[BatchEvent], object] | None
    _phases: collections.Counter[Phase]
    _statuses: collections.Counter[EntryStatus]
    _finish_times: collections.deque[float]
    _scopes: set[anyio.CancelScope]
    _sender: Sender
    _feed_scope: anyio.CancelScope | None
    _journal: Journal | None
    _http: Transport | None
    _started: float | None
    _stopping: bool
    _finish_runs: bool
    _stop_reason: str | None
    _stop_cause: BatchStop | None
    _create_failures: int
    submitted: int
    attached: int
    skipped: int
    refused: int

    @property
    def progress(self) -> BatchProgress:
        """Where the batch stands now."""
        return progress_at(
            time.monotonic(),
            total=len(self._items),
            statuses=self._statuses,
            phases=self._phases,
            skipped=self.skipped,
            rate_limited=self._session.stats.rate_limited,
            started=self._started,
            finish_times=self._finish_times,
        )

    if TYPE_CHECKING:  # Batch's: stop() (the public verb), with the cause the report carries

        def _halt(self, cause: BatchStop, reason: str, **how: bool) -> None: ...

    # -- running -----------------------------------------------------------------------

    async def _feed(self, attach: list[tuple[BatchItem, str]], submit: list[BatchItem]) -> None:
        try:
            await self._feed_all(attach, submit)
        except BaseExceptionGroup as group:
            # Only a broken journal (a full disk) or a bug gets here: raise it plainly.
            raise first_error(group) from None

    async def _feed_all(self, attach: list[tuple[BatchItem, str]], submit: list[BatchItem]) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as self._feed_scope:
                if self._stopping:
                    return
                for item, run_id in attach:
                    await self._take_slot()
                    tg.start_soon(self._attach, item, run_id)
                # The batch's last creates go ahead of polls, by the session's one rule.
                feed = self._session.tail_rule().countdown(submit)
                while True:
                    await self._take_slot()
                    await self._gate.acquire()
                    try:
                        if self._stopping:  # stop() came while this waited
                            raise StopIteration
                        item, last = feed.take()
                    except StopIteration:
                        self._gate.release()
                        self._release_slot()
                        break
                    tg.start_soon(self._submit, item, last)

    async def _take_slot(self) -> None:
        if self._slots is not None:
            await self._slots.acquire()

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    async def _submit(self, item: BatchItem, last: bool) -> None:
        journal = self._journal
        assert journal is not None
        key, line = item.entry.key, item.prompt.line
        ATTEMPT_MET.set(item.attempt_met)  # this task's own context: told of this create only
        try:
            run: Run | None = None
            try:
                # Dropped by stop() only until the create goes on the wire (the Sender):
                # a create sent is always let be answered, so its run is journaled.
                run = await self._sender.send(
                    item.prompt.request, last=last, on_send=lambda: self._sending(item)
                )
            except IntentNotWritten as exc:  # nothing sent (not any OSError: a timeout is one)
                self._withdraw(item)
                self._disk_failed(exc.cause)
                return
            except UncertainCreateError as exc:  # where and when it went (as journaled)
                known = journal.get(key)
                sent = known.sent_at if known is not None and known.sent_at else exc.sent_at
                at = msgspec.structs.replace(item.entry, created_at=utc(sent))
                item.entry = stamp_lane(at, exc.lane)
                self._finish(item, "unknown", error=exc, on_rerun="ask")
                return
            except GPTImageError as exc:
                if item.phase == "submitting":
                    self._count_failed_create(exc)
                self._create_failed(item, exc)
                return
            finally:
                self._gate.release()
            if run is None:
                self._withdraw(item)
                return
            self._create_failures = 0
            assert run.id is not None
            try:
                journal.created(
                    key,
                    run.id,
                    line=line,
                    provider=run.provider,
                    # The run's own lane's root: in a pool, lanes may differ.
                    base_url=self._roots.get(run.lane or "", self._session.base_url),
                    key_fingerprint=lane_fingerprint(run.lane),
                )
            except OSError as exc:
                # Its intent is on disk: a rerun reports it unknown, and `settle` attaches it.
                logger.error(
                    "run %s (line %d) was created but not journaled: %s", run.id, line, exc
                )
                self._disk_failed(exc)
                return
            item.entry = stamp_created(item.entry, run.id, run.lane)
            self._set_phase(item, "in_flight")
            self._emit("created", item.entry)
            if not self._stopping or self._finish_runs:
                await self._follow(item, run)
        finally:
            self._release_slot()

    def _sending(self, item: BatchItem) -> None:
        # Called as the create goes on the wire (once per attempt): the intent is
        # on disk before the create can be, and a create still queued in the rate
        # limiter when the process dies was never sent, so it is not "unknown".
        assert self._journal is not None
        lane = sending_lane()  # the lane it goes through, and that lane's API root
        root = self._roots.get(lane) if lane is not None else None
        key, prompt, write = item.entry.key, item.prompt, self._journal.intent
        try:
            write(key, line=prompt.line, request=prompt.request, lane=lane, root=root)
        except OSError as exc:
            raise IntentNotWritten(exc) from exc
        item.unsent = False  # on the wire now: what it meets is told before the next attempt
        if item.phase != "submitting":
            self._set_phase(item, "submitting")
            self.submitted += 1

    def _withdraw(self, item: BatchItem) -> None:
        # stop() came before this prompt's create was made: it stays pending.
        # If attempts went out, the session chose to send again, which it does only for
        # creates certainly refused, unless it resends uncertain ones: then the intent
        # stays, and a rerun reports the prompt unknown.
        # Counted as sent at on_send: unsent if every attempt failed to connect, else
        # refused (each attempt that left was answered with an error: no run was made).
        if item.phase == "submitting" and item.sent_nothing:
            self.submitted -= 1
        elif item.phase == "submitting" and not self._session.resends_uncertain_creates:
            self.refused += 1
        if item.phase == "submitting" and not self._session.resends_uncertain_creates:
            assert self._journal is not None
            try:
                self._journal.withdrawn(item.entry.key, line=item.prompt.line)
            except OSError as exc:  # the intent stays: a rerun reports the prompt unknown
                self._disk_failed(exc)
        self._set_phase(item, "waiting")

    async def _attach(self, item: BatchItem, run_id: str) -> None:
        assert self._journal is not None
        known = self._journal.get(item.entry.key)
        # The journal's create time: the 404 grace counts from it, and the manifest shows it.
        created_at = None if known is None else known.created_at
        # Created at another API root (attach_elsewhere; the in-process simulator's old
        # port): a 404 there says nothing of a lagging read side here.
        lanes = self._roots
        lane = attach_lane(known, lanes)
        root = lanes.get(lane, self._session.base_url) if lane else self._session.base_url
        here = known is None or known.base_url is None or same_root(known.base_url, root)
        try:
            try:
                # Through the lane that created it: a run id is known only to its own key.
                run = self._session.attach(
                    run_id,
                    request=item.prompt.request,
                    created_at=created_at if here else None,
                    lane=lane,
                )
            except GPTImageError as exc:
                self._finish(item, "failed", error=exc, run_id=run_id, on_rerun="attach")
                return
            item.entry = stamp_lane(
                msgspec.structs.replace(
                    item.entry, run_id=run_id, created_at=utc(created_at) or item.entry.created_at
                ),
                run.lane,
            )
            self._set_phase(item, "in_flight")
            self._emit("attached", item.entry)
            await self._follow(item, run, lost_is_unknown=here)
            # Re-attached only if its provider still knew it: a 404 (a new simulator) is not.
            self.attached += item.entry.error_type != RunNotFoundError.__name__
        finally:
            self._release_slot()

    async def _follow(self, item: BatchItem, run: Run, *, lost_is_unknown: bool = True) -> None:
        run_id = run.id
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            if self._stopping and not self._finish_runs:
                scope.cancel()
            try:
                result = await run
                files = await self._save(item, result)
            except SessionClosedError:
                return  # closed under us: the run may still finish; a rerun attaches it
            except DownloadError as exc:
                # The run exists and succeeded: a rerun attaches it for fresh URLs.
                if out_of_space(exc):
                    self._disk_failed(exc)
                self._finish(item, "failed", error=exc, run_id=run_id, on_rerun="attach")
            except RunFailedError as exc:
                # Failed runs are refunded: only a new create helps.
                self._finish(item, "failed", error=exc, run_id=run_id, on_rerun="submit")
            except RunNotFoundError as exc:
                if lost_is_unknown:
                    # The provider accepted this run (it has an id), so it may exist and be
                    # paid for: its read side may lag, or have lost it. Never created again
                    # unasked (issue 20, item 2).
                    self._finish(item, "unknown", error=exc, run_id=run_id, on_rerun="ask")
                else:  # looked up where it was not created, as asked: create it anew
                    self._finish(item, "failed", error=exc, run_id=run_id, on_rerun="submit")
            except GPTImageError as exc:
                if isinstance(exc, STOPS_THE_BATCH):
                    self._halt(stop_cause(exc), str(exc), finish_runs=True)
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

    async def _save(self, item: BatchItem, result: Result) -> tuple[str, ...]:
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

    def _disk_failed(self, exc: BaseException) -> None:
        self._halt(disk_stop_cause(exc), disk_stop_reason(exc, self._out))

    def _count_failed_create(self, exc: GPTImageError) -> None:
        # A connection error that is not uncertain never had its request written
        # (a TLS failure, a refused connect): counted as sent at on_send, it was not.
        exc = what_it_met(exc)  # a pool's: judged by what it met where it was sent
        if isinstance(exc, APIConnectionError):
            self.submitted -= 1
        elif isinstance(exc, APIStatusError):
            self.refused += 1  # sent and answered, but no run was made

    def _create_failed(self, item: BatchItem, exc: GPTImageError) -> None:
        if isinstance(exc, SpendCapError):
            # Refused here and never sent: the prompt stays pending (a rerun with a
            # larger cap sends it), not failed; what waits with spend reserved still goes.
            self._withdraw(item)
            self._halt(BatchStop.SPEND_CAP, str(exc), finish_runs=True, keep_queued=True)
            return
        self._finish(item, "failed", error=exc, on_rerun="submit")
        self._create_failures += 1
        stop = failed_create_stop(exc, self._create_failures, self._session.cannot_connect)
        if stop is not None:  # plain failures in a row let the runs in flight go; others not
            self._halt(*stop, finish_runs=stop[0] is not BatchStop.CREATE_ERRORS)

    def _finish(
        self,
        item: BatchItem,
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
            error=None if error is None else batch_words(str(error)),
            error_type=None if error is None else type(error).__name__,
        )
        entry = stamp_finished(entry, self._session)  # options, lane, times, cost
        assert self._journal is not None
        try:
            self._journal.finished(entry, on_rerun=on_rerun)
        except OSError as exc:  # the run's created record stands: a rerun attaches it
            self._disk_failed(exc)
        item.entry = entry
        self._set_phase(item, "finished")
        self._statuses[status] += 1
        self._finish_times.append(time.monotonic())
        self._emit("finished", entry)

    def _gallery_entries(self) -> list[ManifestEntry]:
        return [item.entry for item in self._items] + list(self._earlier)

    def _set_phase(self, item: BatchItem, phase: Phase) -> None:
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
