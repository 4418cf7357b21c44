"""What a batch does with each prompt, read from its journal: submit, attach, or settle it.

One planner for :class:`~gptimage_async.Batch` and the CLI's ``--dry-run``,
so a dry run counts exactly what a real run would send. Pure: it reads the
journal (locked by a running batch, or read without a lock by a dry run) and
the output directory, and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from ._batch_types import UNKNOWN_FATE, BatchItem, EventKind
from ._journal import Endpoint, Journal, JournalEntry, RerunAction
from ._manifest import EntryStatus, ManifestEntry

__all__ = ["Plan", "Settled", "attachable_here", "earlier_entries", "endpoint_notice", "plan"]


class Settled(msgspec.Struct, frozen=True, kw_only=True):
    """A prompt the journal settles without sending anything: its entry and event kind."""

    item: BatchItem
    entry: ManifestEntry
    kind: EventKind


class Plan(msgspec.Struct, kw_only=True):
    """What a run of the batch does: ``attach`` these runs, ``submit`` these prompts.

    ``settled`` are done (``skipped``), of unknown fate, or left to another
    endpoint; ``skipped`` counts the done ones.
    """

    attach: list[tuple[BatchItem, str]]
    submit: list[BatchItem]
    settled: list[Settled]
    skipped: int = 0


def attachable_here(entry: JournalEntry, here: Endpoint, *, attach_elsewhere: bool) -> bool:
    """Whether a run the journal holds may be polled at ``here`` (same provider and API root)."""
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
) -> Plan:
    """Sort ``items`` by what the journal knows of them (see ``Batch``'s docstring)."""
    out = Plan(attach=[], submit=[], settled=[])

    def settle(
        item: BatchItem,
        status: EntryStatus,
        *,
        kind: EventKind = "finished",
        run_id: str | None = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        entry = msgspec.structs.replace(
            item.entry, status=status, run_id=run_id, error=error, error_type=error_type
        )
        out.settled.append(Settled(item=item, entry=entry, kind=kind))

    def unknown(item: BatchItem, error: str, error_type: str | None) -> None:
        if resubmit_unknown:
            out.submit.append(item)
        else:
            settle(item, "unknown", error=error, error_type=error_type, kind="unknown")

    def attach_or_leave(item: BatchItem, known: JournalEntry, run_id: str) -> None:
        if attachable_here(known, here, attach_elsewhere=attach_elsewhere):
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
        )

    for item in items:
        known = journal.get(item.entry.key)
        if known is None:
            out.submit.append(item)
        elif known.state == "intent":
            unknown(item, UNKNOWN_FATE, "UncertainCreateError")
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
    unknown: Callable[[BatchItem, str, str | None], None],
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
        unknown(item, previous.error or "the create's fate is unknown", previous.error_type)
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
                )
            )
    return tuple(sorted(earlier, key=lambda e: (e.line, e.key)))


def endpoint_notice(
    journal: Journal, here: Endpoint, out: Path, *, attach_elsewhere: bool
) -> str | None:
    """A sentence if ``out``'s last batch used another provider or API root, else ``None``."""
    last = journal.last_endpoint
    if last is None or last == here:
        return None
    elsewhere = [
        entry
        for entry in journal
        if _resumable(entry) and not attachable_here(entry, here, attach_elsewhere=attach_elsewhere)
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


def _resumable(entry: JournalEntry) -> bool:
    # A run exists that a rerun would attach: created, or finished asking for it.
    return entry.run_id is not None and (entry.state == "created" or entry.on_rerun == "attach")
