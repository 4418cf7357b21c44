"""What a batch does with each prompt, read from its journal: submit, attach, or settle it.

One planner for :class:`~gptimage_async.Batch` and the CLI's ``--dry-run``,
so a dry run counts exactly what a real run would send. Pure: it reads the
journal (locked by a running batch, or read without a lock by a dry run) and
the output directory, and writes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ._batch_types import UNKNOWN_FATE, BatchItem, EventKind
from ._journal import Endpoint, Journal, JournalEntry, RerunAction
from ._manifest import EntryStatus, ManifestEntry, utc
from ._pool import same_lane

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "Plan",
    "Settled",
    "attach_lane",
    "attachable_here",
    "earlier_entries",
    "endpoint_notice",
    "entry_lane",
    "missing_lane_notice",
    "own_lane",
    "plan",
    "same_root",
    "session_lanes",
]


def session_lanes(session: Session) -> dict[str, str]:
    """``session``'s lanes as ``{run.lane: API root}`` (``"provider:fingerprint"``, no key)."""
    return {lane.lane: lane.base_url for lane in session.lanes}


def own_lane(recorded: str | None, lanes: Mapping[str, str]) -> str | None:
    """The lane of ``lanes`` (``session_lanes``) a journaled ``recorded`` lane is, or ``None``.

    A journal or manifest written before fingerprints had one length names a
    lane by 8 hex digits: it is the lane whose fingerprint starts with them
    (``_pool.same_lane``).
    """
    if recorded is None:
        return None
    if recorded in lanes:
        return recorded
    return next((lane for lane in lanes if same_lane(recorded, lane)), None)


def entry_lane(entry: JournalEntry) -> str | None:
    """The lane a journaled run was created on (``Run.lane``), ``None`` if not recorded."""
    if entry.provider is None or entry.key_fingerprint is None:
        return None
    return f"{entry.provider}:{entry.key_fingerprint}"


def missing_lane_notice(lane: str, runs: int) -> str:
    """The sentence for ``runs`` journaled runs whose ``lane`` this job does not have."""
    return (
        f"{lane} is not in this job's lanes: its {runs} run(s) are left alone; "
        "add that key back to resume them"
    )


class Settled(msgspec.Struct, frozen=True, kw_only=True):
    """A prompt the journal settles without sending anything: its entry and event kind."""

    item: BatchItem
    entry: ManifestEntry
    kind: EventKind


class Plan(msgspec.Struct, kw_only=True):
    """What a run of the batch does: ``attach`` these runs, ``submit`` these prompts.

    ``settled`` are done (``skipped``), of unknown fate, or left to another
    endpoint or lane; ``skipped`` counts the done ones; ``missing_lanes`` the
    runs left alone per lane (``Run.lane``) that this job's session lacks.
    """

    attach: list[tuple[BatchItem, str]]
    submit: list[BatchItem]
    settled: list[Settled]
    skipped: int = 0
    missing_lanes: dict[str, int] = msgspec.field(default_factory=dict)


def attachable_here(
    entry: JournalEntry,
    here: Endpoint,
    *,
    attach_elsewhere: bool,
    lanes: Mapping[str, str] | None = None,
) -> bool:
    """Whether a run the journal holds may be polled here.

    With ``lanes`` (``session_lanes``) and a run journaled with its lane: that
    lane is the session's, at the same API root. Otherwise: at ``here``, the
    same provider and API root.
    """
    lane = entry_lane(entry)
    if lanes is not None and lane is not None:
        mine = own_lane(lane, lanes)
        if mine is None:
            return False
        root = lanes[mine]
        if attach_elsewhere or entry.base_url is None:
            return True
        return entry.base_url.rstrip("/") == root.rstrip("/")
    if entry.provider is not None and entry.provider != here.provider:
        return False
    if attach_elsewhere or entry.base_url is None:
        return True
    return entry.base_url.rstrip("/") == here.base_url.rstrip("/")


def plan(
    items: Iterable[BatchItem],
    journal: Journal,
    *,
    here: Endpoint,
    attach_elsewhere: bool,
    resubmit_unknown: bool,
    files_present: Callable[[ManifestEntry], bool],
    lanes: Mapping[str, str] | None = None,
) -> Plan:
    """Sort ``items`` by what the journal knows of them (see ``Batch``'s docstring).

    ``lanes`` is the session's ``{run.lane: API root}`` (``session_lanes``):
    a run journaled with its lane is attached only through that lane, and left
    alone (``pending``, counted in ``Plan.missing_lanes``) when the session
    has no such lane: another key would not find it, and a rerun would pay
    for it again. ``None`` (or a run journaled without its lane): by provider
    and API root only (``here``).
    """
    out = Plan(attach=[], submit=[], settled=[])

    def settle(
        item: BatchItem,
        status: EntryStatus,
        *,
        kind: EventKind = "finished",
        run_id: str | None = None,
        error: str | None = None,
        error_type: str | None = None,
        where: JournalEntry | None = None,
    ) -> None:
        entry = msgspec.structs.replace(
            item.entry, status=status, run_id=run_id, error=error, error_type=error_type
        )
        if where is not None:  # a run left alone: the lane and time it was created stay shown
            entry = msgspec.structs.replace(
                entry,
                provider=where.provider,
                key_fingerprint=where.key_fingerprint,
                created_at=utc(where.created_at),
            )
        out.settled.append(Settled(item=item, entry=entry, kind=kind))

    def unknown(
        item: BatchItem, error: str, error_type: str | None, previous: ManifestEntry | None
    ) -> None:
        if resubmit_unknown:
            out.submit.append(item)
            return
        settle(item, "unknown", error=error, error_type=error_type, kind="unknown")
        if previous is not None:
            # What is known of it stays on its row: its run id (if it had one), lane, times.
            settled = out.settled[-1]
            entry = msgspec.structs.replace(
                settled.entry,
                run_id=previous.run_id,
                provider=previous.provider,
                key_fingerprint=previous.key_fingerprint,
                created_at=previous.created_at,
                finished_at=previous.finished_at,  # when the run that left it unknown ended
            )
            out.settled[-1] = Settled(item=item, entry=entry, kind=settled.kind)

    def attach_or_leave(item: BatchItem, known: JournalEntry, run_id: str) -> None:
        lane = entry_lane(known)
        if lanes is not None and lane is not None and own_lane(lane, lanes) is None:
            out.missing_lanes[lane] = out.missing_lanes.get(lane, 0) + 1
            settle(
                item,
                "pending",
                run_id=run_id,
                error=f"run {run_id} was created through {lane}, which is not in this "
                "job's lanes: add that key back to resume it",
                error_type="ConfigurationError",
                where=known,
            )
            return
        if attachable_here(known, here, attach_elsewhere=attach_elsewhere, lanes=lanes):
            out.attach.append((item, run_id))
            return
        # Polling a run where it was not created would "not find" it, and a rerun
        # would pay for it again: leave it for a session at its own endpoint.
        settle(
            item,
            "failed",
            run_id=run_id,
            error=f"run {run_id} was created on {known.provider} at {known.base_url}; "
            f"this session is {here.provider} at {here.base_url}: resume it from there",
            error_type="ConfigurationError",
            where=known,
        )

    for item in items:
        known = journal.get(item.entry.key)
        if known is None:
            out.submit.append(item)
        elif known.state == "intent":
            # Where and when it was sent, as its intent says (journals before: not known).
            sent = msgspec.structs.replace(
                item.entry,
                provider=known.provider,
                key_fingerprint=known.key_fingerprint,
                created_at=utc(known.sent_at),
            )
            unknown(item, UNKNOWN_FATE, "UncertainCreateError", sent)
        elif known.state == "created":
            assert known.run_id is not None
            attach_or_leave(item, known, known.run_id)
        else:
            _finished(item, known, out, files_present, attach_or_leave, unknown)
    return out


def _finished(
    item: BatchItem,
    known: JournalEntry,
    out: Plan,
    files_present: Callable[[ManifestEntry], bool],
    attach_or_leave: Callable[[BatchItem, JournalEntry, str], None],
    unknown: Callable[[BatchItem, str, str | None, ManifestEntry | None], None],
) -> None:
    previous = known.entry
    assert previous is not None
    action: RerunAction | None = known.on_rerun
    if action == "skip":
        if files_present(previous):
            out.skipped += 1
            entry = msgspec.structs.replace(previous, line=item.prompt.line)
            out.settled.append(Settled(item=item, entry=entry, kind="skipped"))
            return
        action = "attach"  # images deleted or never saved: fetch them again
    if action == "attach" and previous.run_id is not None:
        attach_or_leave(item, known, previous.run_id)
    elif action == "ask":
        unknown(
            item, previous.error or "the create's fate is unknown", previous.error_type, previous
        )
    else:
        out.submit.append(item)


def earlier_entries(journal: Journal, mine: set[str]) -> tuple[ManifestEntry, ...]:
    """What the journal knows of requests not in this run (keys not in ``mine``)."""
    earlier: list[ManifestEntry] = []
    for known in journal:
        if known.key in mine:
            continue
        if known.entry is not None:
            earlier.append(msgspec.structs.replace(known.entry, earlier=True))
        elif known.input is not None:  # created or sent, never finished
            is_unknown = known.state == "intent"
            earlier.append(
                ManifestEntry(
                    line=known.line,
                    key=known.key,
                    input=known.input,
                    status="unknown" if is_unknown else "pending",
                    run_id=known.run_id,
                    error=UNKNOWN_FATE if is_unknown else None,
                    error_type="UncertainCreateError" if is_unknown else None,
                    earlier=True,
                    provider=known.provider,
                    key_fingerprint=known.key_fingerprint,
                    created_at=utc(known.sent_at if is_unknown else known.created_at),
                )
            )
    return tuple(sorted(earlier, key=lambda e: (e.line, e.key)))


def endpoint_notice(
    journal: Journal,
    here: Endpoint,
    out: Path,
    *,
    attach_elsewhere: bool,
    lanes: Mapping[str, str] | None = None,
) -> str | None:
    """A sentence if ``out``'s last batch used another provider or API root, else ``None``.

    With ``lanes``: also one sentence per journaled lane this session lacks
    that still has runs to resume (``missing_lane_notice``).
    """
    missing: Counter[str] = Counter()
    if lanes is not None:
        for entry in journal:
            lane = entry_lane(entry)
            if _resumable(entry) and lane is not None and own_lane(lane, lanes) is None:
                missing[lane] += 1
    said_lanes = [missing_lane_notice(lane, n) + "." for lane, n in sorted(missing.items())]
    said_here = _endpoint_notice(journal, here, out, attach_elsewhere=attach_elsewhere, lanes=lanes)
    said = [s for s in (said_here, *said_lanes) if s]
    return " ".join(said) if said else None


def _endpoint_notice(
    journal: Journal,
    here: Endpoint,
    out: Path,
    *,
    attach_elsewhere: bool,
    lanes: Mapping[str, str] | None,
) -> str | None:
    last = journal.last_endpoint
    if last is None or last == here or _one_of(last, lanes):
        return None
    elsewhere = [
        entry
        for entry in journal
        if _resumable(entry)
        # Missing lanes are said apart.
        and (lanes is None or entry_lane(entry) is None or own_lane(entry_lane(entry), lanes))
        and not attachable_here(entry, here, attach_elsewhere=attach_elsewhere, lanes=lanes)
    ]
    said = (
        f"{out} was last used with {last.provider} at {last.base_url}; "
        f"this run uses {here.provider} at {here.base_url}"
    )
    if not elsewhere:
        return said + "."
    return (
        f"{said}: {len(elsewhere)} run(s) created there and not finished are left "
        f"alone, not looked up here (run again with {last.provider} at "
        f"{last.base_url} to resume them)."
    )


def _one_of(last: Endpoint, lanes: Mapping[str, str] | None) -> bool:
    # The last batch's endpoint is one of this pool's lanes (listed in another order,
    # the first lane differs, and nothing moved).
    return lanes is not None and any(
        lane.partition(":")[0] == last.provider and same_root(root, last.base_url)
        for lane, root in lanes.items()
    )


def _resumable(entry: JournalEntry) -> bool:
    # A run exists that a rerun would attach: created, or finished asking for it.
    return entry.run_id is not None and (entry.state == "created" or entry.on_rerun == "attach")


def same_root(base_url: str, root: str) -> bool:
    return base_url.rstrip("/") == root.rstrip("/")


def attach_lane(known: JournalEntry | None, lanes: Mapping[str, str]) -> str | None:
    """The lane to attach a journaled run through: its own, or ``None`` in a pool of one.

    A run journaled without its lane (an older journal) goes to the first lane
    of its provider (and API root, when recorded); the planner has already
    left alone any run whose own lane the session lacks.
    """
    lane = own_lane(None if known is None else entry_lane(known), lanes)
    if lane is not None or len(lanes) == 1:
        return lane
    if known is None or known.provider is None:
        return None
    for label, root in lanes.items():
        if label.startswith(f"{known.provider}:") and (
            known.base_url is None or same_root(known.base_url, root)
        ):
            return label
    return None
