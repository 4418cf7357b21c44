"""The crash-safe journal of a batch: what was about to be created, what was, how it ended.

An append-only JSON-lines file, each record written in one ``write`` and
``fsync``'d before the journal returns::

    {"record": "intent",   "key": "5f0c...-1", "line": 3, "at": ..., "provider": ...,
     "key_fingerprint": ..., "base_url": ...}      as the create goes out, on that lane
    {"record": "created",  "key": "5f0c...-1", "run_id": "run_abc", ...} once it was accepted
    {"record": "withdrawn", "key": "5f0c...-1", ...}  or: no create was made (a clean stop)
    {"record": "finished", "entry": {...manifest entry...}, "on_rerun": "skip", ...}

Replaying it tells a restarted batch, for every prompt key, what to do: an
``intent`` with no ``created`` after it is a create whose fate is unknown (the
process died between sending and hearing back), a ``created`` run is attached
by its id and never created again, and a ``finished`` one says itself whether
a rerun skips it, attaches it again, or submits it again.

A full disk must not cost the record of a run already paid for: while the
journal is open it keeps ``RESERVE_BYTES`` of space in a hidden file beside
it, given back (deleted) the first time a record does not fit, so the records
of the creates then on the wire still reach the disk. A record that does not
fit is never left half-written.

A process killed in the middle of a write leaves at most a torn last line; it
is cut off when the journal is opened again. Dropping it is safe: the record
it held was never followed by the step it announced.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import msgspec

from ._exceptions import JournalError
from ._journal_records import (
    CreatedRecord,
    Endpoint,
    FinishedRecord,
    IntentRecord,
    JournalEntry,
    Record,
    RerunAction,
    StartRecord,
    WithdrawnRecord,
    decoder,
    encoder,
)
from ._manifest import ManifestEntry
from ._models import ImageRequest

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["RESERVE_BYTES", "Endpoint", "Journal", "JournalEntry", "JournalError", "RerunAction"]

#: Space kept beside an open journal for its records once the disk is full
#: (a record is about 300-500 bytes: this holds a few hundred).
RESERVE_BYTES = 128 * 1024
_NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class Journal:
    """An fsync'd, append-only record of a batch's creates; replayed when opened.

    ::

        with Journal("out/journal.jsonl") as journal:
            previous = journal.get(key)          # what an earlier process recorded
            journal.intent(key, line=3)          # BEFORE sending the create
            run = await session.submit(request)
            journal.created(key, run.id, line=3, provider=session.provider)
            ...
            journal.finished(entry, on_rerun="skip")

    Only one process may hold a journal at a time (an advisory ``flock``):
    a second one gets ``JournalError`` instead of racing the first into paying
    twice. ``fsync=False`` keeps records safe from a killed process but not
    from a power cut.
    """

    __slots__ = (
        "_before_intent",
        "_entries",
        "_fd",
        "_fsync",
        "_last_start",
        "_path",
        "_reserve",
    )

    _fd: int | None
    _reserve: Path | None

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._init(path, fsync)
        existed = self._path.exists()
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            _lock(fd, self._path)
            if not existed and fsync:
                _sync_directory(self._path.parent)
            self._replay(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._reserve = _make_reserve(self._path.with_name(f".{self._path.name}.reserve"))

    def _init(self, path: str | os.PathLike[str], fsync: bool) -> None:
        self._path = Path(path)
        self._fsync = fsync
        self._fd = None
        self._reserve = None
        self._entries: dict[str, JournalEntry] = {}
        # What each key was before its pending intent, for a withdrawn one to restore.
        self._before_intent: dict[str, JournalEntry | None] = {}
        self._last_start: Endpoint | None = None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Journal:
        """Replay the journal at ``path`` without locking or changing it: a closed, read-only copy.

        For a look at a directory before running a batch into it (another process
        may hold the journal). Raises ``OSError`` or ``JournalError``.
        """
        journal = cls.__new__(cls)
        journal._init(path, False)
        data = Path(path).read_bytes()
        journal._replay_bytes(data[: data.rfind(b"\n") + 1])  # a torn last line is not read
        return journal

    # -- reading -----------------------------------------------------------------

    @property
    def path(self) -> Path:
        """Where the journal lives."""
        return self._path

    @property
    def entries(self) -> Mapping[str, JournalEntry]:
        """The current state of every key the journal has seen."""
        return self._entries

    @property
    def last_endpoint(self) -> Endpoint | None:
        """Where the last batch process into this directory sent its requests, if any did."""
        return self._last_start

    def get(self, key: str) -> JournalEntry | None:
        """The state of ``key``, or ``None`` if the journal never saw it."""
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[JournalEntry]:
        return iter(list(self._entries.values()))

    def _replay(self, fd: int) -> None:
        data = _read_all(fd)
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # A torn last record from a killed writer: cut it off, or the next
            # append would be glued onto it.
            os.ftruncate(fd, end)
            data = data[:end]
        self._replay_bytes(data)

    def _replay_bytes(self, data: bytes) -> None:
        for number, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                record = decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise JournalError(
                    f"{self._path}:{number}: damaged journal record ({exc}); "
                    "repair or remove that line to go on"
                ) from None
            self._apply(record)

    def _apply(self, record: Record) -> None:
        entries = self._entries
        if isinstance(record, StartRecord):
            self._last_start = Endpoint(record.provider, record.base_url)
        elif isinstance(record, IntentRecord):
            previous = entries.get(record.key)
            if previous is None or previous.state != "intent":
                self._before_intent[record.key] = previous
            entries[record.key] = JournalEntry(
                key=record.key,
                line=record.line,
                state="intent",
                input=record.input or (previous.input if previous is not None else None),
                provider=record.provider,
                base_url=record.base_url,
                key_fingerprint=record.key_fingerprint,
                sent_at=record.at,
            )
        elif isinstance(record, WithdrawnRecord):
            if record.key in entries and entries[record.key].state == "intent":
                before = self._before_intent.pop(record.key, None)
                if before is None:
                    del entries[record.key]
                else:
                    entries[record.key] = before
        elif isinstance(record, CreatedRecord):
            self._before_intent.pop(record.key, None)
            previous = entries.get(record.key)
            last = self._last_start
            entries[record.key] = JournalEntry(
                key=record.key,
                line=record.line,
                state="created",
                run_id=record.run_id,
                provider=record.provider,
                # Journals before base_url was recorded: the process's own, from its start.
                base_url=record.base_url or (last.base_url if last is not None else None),
                input=previous.input if previous is not None else None,
                key_fingerprint=record.key_fingerprint,
                # Settled by hand: created about when it was sent, if that is known.
                created_at=(
                    (previous.sent_at if previous is not None else None)
                    if record.settled
                    else record.at
                ),
                sent_at=previous.sent_at if previous is not None else None,
                settled=record.settled,
            )
        elif isinstance(record, FinishedRecord):
            entry = record.entry
            self._before_intent.pop(entry.key, None)
            previous = entries.get(entry.key)
            entries[entry.key] = JournalEntry(
                key=entry.key,
                line=entry.line,
                state="finished",
                run_id=entry.run_id,
                provider=(previous.provider if previous is not None else None) or entry.provider,
                base_url=previous.base_url if previous is not None else None,
                input=entry.input,
                entry=entry,
                on_rerun=record.on_rerun,
                key_fingerprint=entry.key_fingerprint
                or (previous.key_fingerprint if previous is not None else None),
                created_at=_created_at(entry, previous),
                sent_at=previous.sent_at if previous is not None else None,
            )

    # -- writing -----------------------------------------------------------------

    def start(self, *, provider: str, base_url: str) -> None:
        """Note that a batch process started, and where it sends its requests."""
        record = StartRecord(at=time.time(), provider=provider, base_url=base_url)
        self._write(record)
        self._apply(record)

    def intent(
        self,
        key: str,
        *,
        line: int,
        request: ImageRequest | None = None,
        lane: str | None = None,
        root: str | None = None,
    ) -> None:
        """Record that a create for ``key`` is about to be sent. Call it BEFORE sending.

        ``request`` lets the manifest describe the prompt even when a later run
        of the batch no longer has it in its prompt file; ``lane`` is the lane
        it is sent through (``Run.lane``, ``"provider:fingerprint"``) and
        ``root`` that lane's API root, so a create of unknown fate says where
        it went. The record's time is its send time (``JournalEntry.sent_at``).
        """
        provider, _, fingerprint = (lane or "").partition(":")
        record = IntentRecord(
            key=key,
            line=line,
            at=time.time(),
            input=request,
            provider=provider or None,
            key_fingerprint=fingerprint or None,
            base_url=root,
        )
        self._write(record)
        self._apply(record)

    def withdrawn(self, key: str, *, line: int) -> None:
        """Record that no create announced by ``key``'s intents was made.

        For a batch stopping before a retry: every attempt it sent was certainly
        refused (a 429, a 503, a connection never made), so the prompt is
        back to what it was before, not ``unknown``.
        """
        record = WithdrawnRecord(key=key, line=line, at=time.time())
        self._write(record)
        self._apply(record)

    def created(
        self,
        key: str,
        run_id: str,
        *,
        line: int,
        provider: str,
        base_url: str | None = None,
        key_fingerprint: str | None = None,
        settled: bool = False,
    ) -> None:
        """Record that the create for ``key`` was accepted as run ``run_id`` (at ``base_url``).

        ``key_fingerprint`` names the key it went through (``Run.lane``'s hash, never the key).
        ``settled``: the run was found by hand (``gptimage-async settle``), so the
        record's time is not its creation's: ``created_at`` is then the create's
        send time if the journal has it, else ``None`` (unknown, never wrong).
        """
        record = CreatedRecord(
            key=key,
            line=line,
            run_id=run_id,
            provider=provider,
            base_url=base_url,
            at=time.time(),
            key_fingerprint=key_fingerprint,
            settled=settled,
        )
        self._write(record)
        self._apply(record)

    def finished(self, entry: ManifestEntry, *, on_rerun: RerunAction) -> None:
        """Record how ``entry.key`` ended and what a rerun should do with it."""
        record = FinishedRecord(entry=entry, on_rerun=on_rerun, at=time.time())
        self._write(record)
        self._apply(record)

    def _write(self, record: Record) -> None:
        if self._fd is None:
            raise JournalError(f"the journal {self._path} is closed")
        data = encoder.encode(record) + b"\n"
        try:
            self._append(self._fd, data)
        except OSError as exc:
            if exc.errno not in _NO_SPACE or self._reserve is None:
                raise
            # The disk is full: give back the space kept for this, and write again.
            reserve, self._reserve = self._reserve, None
            reserve.unlink(missing_ok=True)
            self._append(self._fd, data)
        if self._fsync:
            os.fsync(self._fd)

    def _append(self, fd: int, data: bytes) -> None:
        # One write of a whole line, so a crash can only ever tear the last one; a
        # write the disk cut short is taken back, never left as a torn line.
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = os.write(fd, data)
        except OSError:
            os.ftruncate(fd, end)
            raise
        if written != len(data):
            os.ftruncate(fd, end)
            raise OSError(errno.ENOSPC, f"short write to {self._path}")

    # -- lifetime ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closed; a closed journal refuses writes."""
        return self._fd is None

    def close(self) -> None:
        """Release the file and its lock. Closing twice is harmless."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        reserve, self._reserve = self._reserve, None
        if reserve is not None:
            reserve.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"entries={len(self._entries)}"
        return f"<Journal {self._path} {state}>"


def _created_at(entry: ManifestEntry, previous: JournalEntry | None) -> float | None:
    # The created record's time if there was one, else the manifest row's own.
    if previous is not None and previous.created_at is not None:
        return previous.created_at
    return None if entry.created_at is None else entry.created_at.timestamp()


def _lock(fd: int, path: Path) -> None:
    if fcntl is None:  # pragma: no cover
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalError(
            f"{path} is in use by another process: two batches writing to the same "
            "directory could create the same images twice"
        ) from None


def _make_reserve(path: Path) -> Path | None:
    """A file of ``RESERVE_BYTES`` at ``path``; ``None`` if the disk has not that much."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        return None
    try:
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except (AttributeError, OSError):  # not every filesystem allocates: write it
            os.write(fd, bytes(RESERVE_BYTES))
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        return None
    os.close(fd)
    return path


def _sync_directory(path: Path) -> None:
    # A new file's name is only durable once its directory is synced.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
