"""What a batch reports (progress, events, its report) and how it keys its prompts."""

from __future__ import annotations

import enum
import errno
import hashlib
import os
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import msgspec

from ._create import RESEND_HINT, resending_uncertain
from ._download import slugify
from ._exceptions import (
    APIConnectionError,
    AuthenticationError,
    EndpointNotFoundError,
    GPTImageError,
    InsufficientCreditsError,
    PermissionDeniedError,
    PoolExhaustedError,
    QuotaExceededError,
    SpendCapError,
    TLSCertificateError,
)
from ._manifest import EntryStatus, ManifestEntry
from ._models import ImageRequest
from ._prompts import BatchPrompt

__all__ = [
    "JOURNAL_NAME",
    "MAX_CREATE_FAILURES_IN_A_ROW",
    "STOPS_THE_BATCH",
    "MANIFEST_NAME",
    "UNKNOWN_FATE",
    "BatchEvent",
    "BatchItem",
    "BatchProgress",
    "BatchReport",
    "BatchStop",
    "EventKind",
    "IntentNotWritten",
    "Phase",
    "batch_words",
    "disk_stop_cause",
    "disk_stop_reason",
    "failed_create_stop",
    "out_of_space",
    "prompt_key",
    "stop_cause",
]

#: Creates failing one after another (no success between) before the batch gives up:
#: the provider is down or refusing, and trying every remaining prompt would not help.
MAX_CREATE_FAILURES_IN_A_ROW = 10
#: Errors that no other prompt can escape either: the batch stops creating at the
#: first, and follows the runs already created (paid for) to their end.
STOPS_THE_BATCH = (
    PoolExhaustedError,
    SpendCapError,
    AuthenticationError,
    InsufficientCreditsError,
    PermissionDeniedError,
    QuotaExceededError,
    EndpointNotFoundError,
    TLSCertificateError,
)


class BatchStop(enum.Enum):
    """Why a batch stopped early: ``BatchReport.stop_cause``, next to its words (``stop_reason``).

    Decide on this value, never on the words (they may change). The causes:
    """

    #: ``Batch.stop()`` was called: a Ctrl-C, a signal, the caller.
    INTERRUPTED = "interrupted"
    #: A create could take the spend past the pool's cap (``SpendCapError``).
    SPEND_CAP = "spend_cap"
    #: The key was refused: 401, 402, 403 or a 429 ``USAGE_EXCEEDED``.
    KEY_REFUSED = "key_refused"
    #: No lane of the pool could take a create (``PoolExhaustedError``).
    NO_LANE = "no_lane"
    #: No lane could be connected to: each closed or unreachable (``Session.cannot_connect``).
    CANNOT_CONNECT = "cannot_connect"
    #: The API root answers 404 to every request (``EndpointNotFoundError``).
    WRONG_ENDPOINT = "wrong_endpoint"
    #: The server's certificate was refused (``TLSCertificateError``).
    TLS = "tls"
    #: ``MAX_CREATE_FAILURES_IN_A_ROW`` creates failed one after another.
    CREATE_ERRORS = "create_errors"
    #: A write into the output directory was refused for lack of space (``out_of_space``).
    DISK_FULL = "disk_full"
    #: A write into the output directory failed otherwise (permissions, a gone directory).
    CANNOT_WRITE = "cannot_write"


#: The cause of each error of ``STOPS_THE_BATCH``; the first class ``exc`` is an instance of.
_CAUSES: tuple[tuple[type[GPTImageError], BatchStop], ...] = (
    (SpendCapError, BatchStop.SPEND_CAP),
    (PoolExhaustedError, BatchStop.NO_LANE),
    (EndpointNotFoundError, BatchStop.WRONG_ENDPOINT),
    (TLSCertificateError, BatchStop.TLS),
    (AuthenticationError, BatchStop.KEY_REFUSED),
    (InsufficientCreditsError, BatchStop.KEY_REFUSED),
    (PermissionDeniedError, BatchStop.KEY_REFUSED),
    (QuotaExceededError, BatchStop.KEY_REFUSED),
)


def stop_cause(exc: BaseException) -> BatchStop:
    """The ``BatchStop`` for an error of ``STOPS_THE_BATCH``; ``CREATE_ERRORS`` for any other."""
    return next(
        (cause for kind, cause in _CAUSES if isinstance(exc, kind)), BatchStop.CREATE_ERRORS
    )


def failed_create_stop(
    exc: GPTImageError, failures: int, cannot_connect: Callable[[], bool]
) -> tuple[BatchStop, str] | None:
    """Whether a create that failed with ``exc`` stops the batch: its cause and words, or ``None``.

    ``failures``: creates failed in a row, this one included; ``cannot_connect``:
    ``Session.cannot_connect`` (a session of one lane whose creates end at
    once stops as a pool's). ``SpendCapError`` is the caller's: nothing was sent.
    """
    if isinstance(exc, STOPS_THE_BATCH):
        return stop_cause(exc), str(exc)
    if cannot_connect():
        return BatchStop.CANNOT_CONNECT, f"no lane can be connected to: {exc}"
    if failures >= MAX_CREATE_FAILURES_IN_A_ROW:
        return BatchStop.CREATE_ERRORS, f"{failures} creates failed in a row; the last: {exc}"
    return None


JOURNAL_NAME = "journal.jsonl"
#: The errno values of a disk that is full (ENOSPC) or a quota reached (EDQUOT).
_NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
MANIFEST_NAME = "manifest.jsonl"
#: Why a prompt whose create has an unknown fate is not sent again.
#: What a batch's user does about a create of unknown fate (``RESEND_HINT`` is a session's).
BATCH_RESEND_HINT = (
    "or send it again at the risk of paying twice: rerun with --resubmit-unknown "
    "(Batch: resubmit_unknown=True)."
)


def batch_words(message: str) -> str:
    """``message`` with a session's advice on uncertain creates replaced by a batch's."""
    return message.replace(RESEND_HINT, BATCH_RESEND_HINT)


UNKNOWN_FATE = (
    "an earlier run sent this prompt's create and stopped before hearing back: "
    "a run may or may not exist (and be paid for), so it was not sent again"
)

EventKind = Literal["skipped", "unknown", "created", "attached", "finished", "stopping"]
"""What a :class:`BatchEvent` reports.

``skipped``: done by an earlier run. ``unknown``: an earlier run's create
has an unknown fate, so the prompt is not sent. ``created``: a run was
created (``entry.run_id``). ``attached``: an earlier run's run is followed
again. ``finished``: the prompt ended (``entry.status``). ``stopping``: the
batch stops sending (``message`` says why).
"""

Phase = Literal["waiting", "submitting", "in_flight", "finished"]


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


#: Seconds of recent finishes the throughput (and so the ETA) is measured over.
RATE_WINDOW = 30.0


def progress_at(
    now: float,
    *,
    total: int,
    statuses: Mapping[EntryStatus, int],
    phases: Mapping[Phase, int],
    skipped: int,
    rate_limited: int,
    started: float | None,
    finish_times: deque[float],
) -> BatchProgress:
    """A batch's ``BatchProgress`` at ``now`` (monotonic seconds).

    ``finish_times`` (monotonic seconds, oldest first) loses the finishes older
    than ``RATE_WINDOW``; the rate is over what is left.
    """
    elapsed = 0.0 if started is None else now - started
    while finish_times and finish_times[0] < now - RATE_WINDOW:
        finish_times.popleft()
    span = min(RATE_WINDOW, elapsed)
    rate = len(finish_times) / span if finish_times and span > 0 else None
    finished = statuses["succeeded"] + statuses["failed"] + statuses["unknown"]
    left = total - finished
    return BatchProgress(
        total=total,
        succeeded=statuses["succeeded"],
        failed=statuses["failed"],
        unknown=statuses["unknown"],
        skipped=skipped,
        submitting=phases["submitting"],
        in_flight=phases["in_flight"],
        waiting=phases["waiting"],
        rate_limited=rate_limited,
        elapsed=elapsed,
        rate=rate,
        eta=left / rate if rate else (0.0 if left == 0 else None),
    )


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
    ``stop_reason`` is that error (``None`` for a plain ``stop()``), in words;
    ``stop_cause`` (a ``BatchStop``, ``None`` when not stopped) is its cause as
    a value, the one to decide on.
    ``submitted``, ``attached`` and ``skipped`` count what this process did;
    ``refused`` the creates sent that the provider answered with an error status
    (a 404, a 400 ...): sent, but no run was made. ``gallery`` is the page
    written at the end (``out/index.html``), ``None`` when it is off or could
    not be written (a warning was logged).
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
    refused: int = 0
    gallery: Path | None = None
    stop_cause: BatchStop | None = None

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


class BatchItem:
    """One prompt of a batch: its request, its file stem, where it stands."""

    __slots__ = ("entry", "left", "phase", "prompt", "stem", "unsent")

    def __init__(self, prompt: BatchPrompt, key: str) -> None:
        self.prompt = prompt
        self.phase: Phase = "waiting"
        #: An attempt of its create reached the server, or may have (it was answered).
        self.left = False
        #: Its latest attempt certainly never left (it could not connect).
        self.unsent = False
        self.entry = ManifestEntry(
            line=prompt.line, key=key, input=prompt.request, status="pending"
        )
        # The key's hash in the name: another request on the same line (an edited
        # prompt, another --quality) never writes over this one's paid images.
        tag = hashlib.sha256(key.encode()).hexdigest()[:8]
        self.stem = f"{prompt.line:05d}-{slugify(prompt.request.prompt)}-{tag}"

    def attempt_met(self, error: GPTImageError) -> None:
        """What an attempt of its create met (``_pool.ATTEMPT_MET``): did it leave?

        A connection error the create is sent again (or moved) after never
        left: the creator treats one that may have as uncertain instead.
        """
        never_left = isinstance(error, APIConnectionError) and not resending_uncertain()
        self.unsent = never_left
        self.left = self.left or not never_left

    @property
    def sent_nothing(self) -> bool:
        """Whether no attempt of its create has left: withdrawn now, it was never sent."""
        return self.unsent and not self.left


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a write refused for lack of space."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    # DownloadError carries the OS's words, not its errno.
    text = str(exc)
    return any(os.strerror(code) in text for code in _NO_SPACE)


def disk_stop_cause(exc: BaseException) -> BatchStop:
    """``DISK_FULL`` when a write failed with ``exc`` for lack of space, else ``CANNOT_WRITE``."""
    return BatchStop.DISK_FULL if out_of_space(exc) else BatchStop.CANNOT_WRITE


def disk_stop_reason(exc: BaseException, out: Path) -> str:
    """Why a batch stops when a write into ``out`` failed with ``exc``.

    The first write refused for lack of space stops every create: what was
    paid for is kept (its runs are attached again by a rerun), nothing more is bought.
    """
    if out_of_space(exc):
        return f"the disk is full ({out}): {exc}; free some space and rerun"
    return f"cannot write to {out}: {exc}"


class IntentNotWritten(Exception):
    """The journal could not write a create's intent (``cause``, the ``OSError``): nothing sent.

    A type of its own, so that an ``OSError`` the create itself raises on its
    way (``RunTimeoutError`` is a ``TimeoutError``, hence an ``OSError``) is
    never taken for a failed write of the journal.
    """

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause
