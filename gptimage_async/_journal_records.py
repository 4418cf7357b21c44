"""The journal's records and what replaying them tells of one prompt key (``_journal``).

Each record is one JSON line, told apart by its ``record`` field; fields
added later are optional, so journals written before them still read.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ._manifest import ManifestEntry
from ._models import ImageRequest

__all__ = [
    "CreatedRecord",
    "Endpoint",
    "FinishedRecord",
    "IntentRecord",
    "JournalEntry",
    "JournalState",
    "Record",
    "RerunAction",
    "StartRecord",
    "WithdrawnRecord",
    "decoder",
    "encoder",
]

RerunAction = Literal["skip", "attach", "submit", "ask"]
"""What running the batch again does with a finished prompt.

``skip`` it (done), ``attach`` its run again (the run exists and may still
give images), ``submit`` it again (no run was created, or the provider
failed it and refunded it), or ``ask``: its create's fate is unknown, so only
an explicit ``resubmit_unknown`` sends it again.
"""

JournalState = Literal["intent", "created", "finished"]


class JournalEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What the journal knows about one prompt key, after replay.

    ``state`` is the last step recorded: ``intent`` (a create was about to be
    sent, and nothing after), ``created`` (``run_id`` is known, no outcome
    yet) or ``finished`` (``entry`` holds the outcome, ``on_rerun`` what a
    rerun does with it). ``provider`` and ``base_url`` say where the run was
    created, ``key_fingerprint`` through which key (``None`` in journals that
    did not record it), ``created_at`` when (wall-clock UNIX seconds, the
    ``created`` record's ``at``; ``None`` before any, and for a run settled
    by hand when its create's send time is unknown); ``input`` is the request
    (``None`` in journals of version 0.x that did not record it).

    ``sent_at`` is when the last create for the key went on the wire
    (wall-clock UNIX seconds, its ``intent`` record's time), and for an
    ``intent``, ``provider``, ``key_fingerprint`` and ``base_url`` name the
    lane it was sent through (``None`` in journals that did not record it):
    a create of unknown fate says where and when it went.

    ``settled``: a ``created`` entry whose run id was recorded by hand
    (``gptimage-async settle``) and not yet attached by a batch; it can be
    settled again (a mistyped id is corrected, not stuck).
    """

    key: str
    line: int
    state: JournalState
    run_id: str | None = None
    provider: str | None = None
    base_url: str | None = None
    input: ImageRequest | None = None
    entry: ManifestEntry | None = None
    on_rerun: RerunAction | None = None
    key_fingerprint: str | None = None
    created_at: float | None = None
    sent_at: float | None = None
    settled: bool = False


class Endpoint(msgspec.Struct, frozen=True):
    """Where a batch process sent its requests: a provider and its API root."""

    provider: str
    base_url: str


class StartRecord(msgspec.Struct, tag="start", tag_field="record", kw_only=True):
    at: float
    provider: str
    base_url: str


class IntentRecord(msgspec.Struct, tag="intent", tag_field="record", kw_only=True):
    key: str
    line: int
    at: float
    input: ImageRequest | None = None
    # The lane it is sent through (creates are bound to one at send time).
    provider: str | None = None
    key_fingerprint: str | None = None
    base_url: str | None = None


class CreatedRecord(msgspec.Struct, tag="created", tag_field="record", kw_only=True):
    key: str
    line: int
    run_id: str
    provider: str
    at: float
    base_url: str | None = None
    key_fingerprint: str | None = None
    # Recorded by ``settle`` (a run found by hand), not as the create was answered:
    # ``at`` is not when the run was created.
    settled: bool = False


class WithdrawnRecord(msgspec.Struct, tag="withdrawn", tag_field="record", kw_only=True):
    key: str
    line: int
    at: float


class FinishedRecord(msgspec.Struct, tag="finished", tag_field="record", kw_only=True):
    entry: ManifestEntry
    on_rerun: RerunAction
    at: float


Record = StartRecord | IntentRecord | CreatedRecord | WithdrawnRecord | FinishedRecord
encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(Record)
