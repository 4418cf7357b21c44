"""``gptimage-async unknown`` and ``settle``: prompts whose create has an unknown fate.

A batch interrupted while a create was on the wire (``kill -9``, a second
Ctrl-C, a timeout after sending) cannot know whether a run was made and paid
for, so it never sends that prompt again on its own. ``unknown DIR`` lists
those prompts; once the user has looked at the provider's dashboard,
``settle DIR LINE RUN_ID`` records the run found (the next ``batch`` attaches
it, never creating it again) and ``settle DIR LINE --not-created`` records
that none exists (the next ``batch`` sends it). Both only write to the
journal, which a running batch holds locked.

In a job over a pool of keys, a run id is known only to the key that made
it: ``settle ... RUN_ID --lane LANE`` names that lane, as ``unknown`` lists
the job's lanes (``provider:fingerprint``, as ``Run.lane`` and the manifest
name them; never the key), so the next batch attaches the run through it.
The job's lanes are those its journal has seen runs created through, plus,
with ``--pool POOL.toml``, the pool's (by ``provider:fingerprint`` or label).
A create of unknown fate never moves to another lane, so its journal
records the lane it was sent through and when: ``unknown`` shows both, and
``settle`` attaches the run through that lane unless ``--lane`` says
otherwise. A lane not among them, or no ``--lane`` when the job has several
and the line's own lane is not recorded (older journals), is a usage error
(exit 2) before anything is written or sent; so is a run id the journal
already gives to another prompt (attached for both, one image would be
saved as the other's). A line settled with a run id can be settled again
until a batch attaches that run (a mistyped id is corrected, not stuck);
``unknown`` lists such lines.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from .._batch_plan import entry_lane
from .._batch_types import JOURNAL_NAME
from .._exceptions import ConfigurationError
from .._journal import Journal, JournalEntry, JournalError
from .._manifest import ManifestEntry
from .._models import check_run_id
from .._pool import OLD_FINGERPRINT_DIGITS, Pool, same_lane
from .._secrets import mixed_case_token, shown
from ._common import EXIT_OK, UsageError
from ._sessions import load_pool

__all__ = ["settle", "unknown"]

#: Why a prompt settled ``--not-created`` is sent again by the next batch.
NOT_CREATED = "settled by hand: no run was created for this prompt"


def _unknown_entries(journal: Journal) -> list[JournalEntry]:
    return sorted(
        (
            entry
            for entry in journal
            if entry.state == "intent" or (entry.state == "finished" and entry.on_rerun == "ask")
        ),
        key=lambda e: (e.line, e.key),
    )


def _settled_by_hand(journal: Journal) -> list[JournalEntry]:
    """Runs recorded with ``settle LINE RUN_ID`` that no batch has attached yet.

    They can be settled again: a mistyped run id is corrected before the
    next batch tries it (after, a run not found is of unknown fate again).
    """
    return sorted(
        (entry for entry in journal if entry.state == "created" and entry.settled),
        key=lambda e: (e.line, e.key),
    )


def _pool(args: argparse.Namespace) -> Pool | None:
    # The job's pool file, if given: its keys are read to name its lanes (never shown).
    return load_pool(args.pool) if getattr(args, "pool", None) is not None else None


def _path(args: argparse.Namespace) -> str:
    path = args.out / JOURNAL_NAME
    if not path.is_file():
        raise UsageError(f"no batch journal in {args.out} ({JOURNAL_NAME} is missing)")
    return str(path)


def _refuse_while_a_batch_runs(path: str, out: object) -> None:
    # A running batch holds the journal's flock: its intents are creates on the
    # wire right now, not of unknown fate, so listing them would mislead.
    if fcntl is None:  # pragma: no cover - not POSIX: no advisory lock
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(
            f"a batch is running into {out} (its journal is in use): the creates it has "
            "on the wire are not of unknown fate; run this once it has stopped"
        ) from None
    finally:
        os.close(fd)


def unknown(args: argparse.Namespace) -> int:
    """List the prompts of ``args.out``'s journal whose create has an unknown fate.

    Refused (``UsageError``, exit 2) while a batch runs into ``args.out``, as ``settle`` is.
    """
    try:
        _refuse_while_a_batch_runs(_path(args), args.out)
        journal = Journal.read(_path(args))
    except (OSError, JournalError) as exc:
        raise UsageError(f"cannot read the journal in {args.out}: {exc}") from None
    lanes = _job_lanes(journal, _pool(args))  # a bad --pool is refused before any listing
    entries = _unknown_entries(journal)
    _print_settled(journal, args)
    if not entries:
        print(f"no prompt of unknown fate in {args.out}")
        return EXIT_OK
    print(f"{len(entries)} prompt(s) in {args.out} have a create of unknown fate:")
    for entry in entries:
        prompt = entry.input.prompt if entry.input is not None else "(prompt not recorded)"
        short = prompt if len(prompt) <= 60 else prompt[:57] + "..."
        print(f"  line {entry.line:>5}  key {entry.key}  {short!r}")
        print(f"               {_where(entry)}")
    print(
        f"settle each: gptimage-async settle {shlex.quote(str(args.out))} LINE RUN_ID "
        "(a run you found), or LINE --not-created (none exists: the next batch sends it)"
    )
    if len(lanes) > 1:
        # A run id is known only to its own key: look for it on the lane shown.
        print(
            f"this job ran over {len(lanes)} lanes; a run is attached through its line's own "
            "lane (shown), or --lane LANE, one of:"
        )
        for lane in lanes:
            print(f"  {lane}")
    return EXIT_OK


def _print_settled(journal: Journal, args: argparse.Namespace) -> None:
    settled = _settled_by_hand(journal)
    if not settled:
        return
    print(f"{len(settled)} prompt(s) settled by hand, attached by the next batch run:")
    for entry in settled:
        print(f"  line {entry.line:>5}  key {entry.key}  run {entry.run_id}")
    print(
        "a mistyped run id: settle the line again (gptimage-async settle "
        f"{shlex.quote(str(args.out))} LINE RUN_ID, or LINE --not-created)"
    )


def _sent_at(entry: JournalEntry) -> float | None:
    """When ``entry``'s create of unknown fate was sent (UNIX seconds), if recorded."""
    if entry.sent_at is not None:
        return entry.sent_at
    made = entry.entry.created_at if entry.entry is not None else None
    return None if made is None else made.timestamp()


def _where(entry: JournalEntry) -> str:
    """The lane and the time an unknown create was sent: where to look for its run."""
    lane = entry_lane(entry)
    at = _sent_at(entry)
    when = (
        "send time not recorded"
        if at is None
        else "sent "
        + datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    )
    return f"{when}, through {lane or 'a lane not recorded'}"


def _job_lanes(journal: Journal, pool: Pool | None) -> dict[str, str | None]:
    """The job's lanes, ``{"provider:fingerprint": API root}``: the journal's, then ``pool``'s."""
    lanes: dict[str, str | None] = {}
    for entry in journal:
        lane = entry_lane(entry)
        if lane is not None and not any(same_lane(lane, known) for known in lanes):
            lanes[lane] = entry.base_url
    for spec in pool.lanes if pool is not None else ():
        full = spec.name
        for old in [known for known in lanes if same_lane(known, full)]:
            del lanes[old]  # an older journal's 8-digit name: the full one stands for it
        lanes[full] = spec.base_url
    return lanes


def _names(wanted: str, lane: str) -> bool:
    # "provider:fingerprint" (either length), or a bare fingerprint of 8 digits or more.
    if ":" not in wanted:
        return len(wanted) >= OLD_FINGERPRINT_DIGITS and lane.partition(":")[2].startswith(wanted)
    return lane == wanted or same_lane(wanted, lane) or same_lane(lane, wanted)


def _pick_lane(
    args: argparse.Namespace,
    lanes: dict[str, str | None],
    pool: Pool | None,
    own: str | None = None,
) -> str | None:
    """The lane ``args.lane`` names among the job's ``lanes``; else the line's ``own``.

    ``own`` is the lane the create was sent through (journaled with its
    intent); without it, the job's only lane.
    """
    if args.lane is None:
        mine = [lane for lane in lanes if own is not None and _names(own, lane)]
        if mine:
            return mine[0]
        if len(lanes) > 1:
            raise UsageError(
                f"this job ran over {len(lanes)} lanes and a run id is known only to the key "
                f"that made it: add --lane, one of {', '.join(lanes)}"
            )
        return next(iter(lanes), None)
    wanted = args.lane.strip()
    for spec in pool.lanes if pool is not None else ():
        if spec.label == wanted:
            wanted = spec.name
    found = [lane for lane in lanes if _names(wanted, lane)]
    if len(found) == 1:
        return found[0]
    if not lanes:
        raise UsageError(
            f"the journal in {args.out} names no lane yet (no run was created through one): "
            "pass --pool POOL.toml, the job's pool file, to name its lanes"
        )
    raise UsageError(
        f"lane {shown(wanted)} is not one of this job's lanes ({', '.join(lanes)}): a run id is "
        "known only to the key that made it; name that key's lane"
    )


def settle(args: argparse.Namespace) -> int:
    """Record what became of an unknown prompt's create (a run id, or none)."""
    if args.run_id is not None and args.not_created:
        raise UsageError("give either RUN_ID (the run you found) or --not-created, not both")
    if args.lane is not None and args.not_created:
        raise UsageError("--lane names the key a run was found on; --not-created says none was")
    if args.run_id is None and not args.not_created:
        raise UsageError(
            f"say what became of line {args.line}: add the RUN_ID you found on the "
            "provider's dashboard, or --not-created if there is none"
        )
    if args.run_id is not None:
        try:
            check_run_id(args.run_id.strip(), "RUN_ID")
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        _refuse_a_key(args.run_id.strip())
    pool = _pool(args)  # a bad pool file: said before the journal is opened
    try:
        with Journal(_path(args)) as journal:
            entry = _pick(journal, args)
            lanes = _job_lanes(journal, pool) if args.run_id is not None else {}
            lane = None
            if args.run_id is not None:
                _refuse_a_run_of_another_line(journal, entry, args.run_id.strip())
                lane = _pick_lane(args, lanes, pool, entry_lane(entry))
            _record(journal, entry, args.run_id, lane, lanes.get(lane) if lane else None)
    except (OSError, JournalError) as exc:
        raise UsageError(f"cannot settle in {args.out}: {exc}") from None
    if args.run_id is not None:
        through = f" through {lane}" if lane is not None else ""
        print(
            f"line {entry.line}: run {args.run_id} recorded; the next batch run attaches "
            f"it{through}"
        )
    else:
        print(f"line {entry.line}: recorded as not created; the next batch run sends it")
    return EXIT_OK


def _refuse_a_key(run_id: str) -> None:
    """``UsageError`` if ``run_id``, typed by the user, is shaped as a bare API key.

    Kept, it would be journaled, put in every poll's URL path and printed in
    a ``RunTimeoutError``. Only what no provider's run id looks like is
    refused: 24 or more random letters and digits of mixed case with no
    separator (``Qx7Lm2Np9Rt4Vw8Zk3Hj6Fd1``). Ids of one case (base32,
    base36, ULIDs, hexadecimal, UUIDs) and ids with a type prefix
    (``task_abc123``, PROVIDERS.md) are kept. ``Session.attach`` does not
    apply this: it also attaches the ids servers answered, whatever they look like.
    """
    if mixed_case_token(run_id) and not any(c in "._-" for c in run_id):
        raise UsageError(
            "RUN_ID looks like an API key (random letters and digits of mixed case), not "
            "a run id; nothing was kept. Copy the run's id from the provider's dashboard"
        )


def _refuse_a_run_of_another_line(journal: Journal, entry: JournalEntry, run_id: str) -> None:
    """``UsageError`` if the journal already gives ``run_id`` to another prompt.

    Attached for both, that run's image would be saved as each of them.
    """
    for other in journal:
        if other.key != entry.key and other.run_id == run_id:
            raise UsageError(
                f"run {run_id} already belongs to line {other.line} (key {other.key}) of "
                "this batch: a run makes one prompt's image; find the run of line "
                f"{entry.line} instead"
            )


def _pick(journal: Journal, args: argparse.Namespace) -> JournalEntry:
    found = [
        e for e in _unknown_entries(journal) + _settled_by_hand(journal) if e.line == args.line
    ]
    if args.key is not None:
        found = [e for e in found if e.key == args.key]
    if not found:
        raise UsageError(
            f"line {args.line} of {args.out} has no prompt of unknown fate"
            + (f" with key {args.key}" if args.key else "")
            + f" (see: gptimage-async unknown {shlex.quote(str(args.out))})"
        )
    if len(found) > 1:
        keys = ", ".join(e.key for e in found)
        raise UsageError(
            f"line {args.line} has {len(found)} unknown prompts; add --key (one of {keys})"
        )
    return found[0]


def _record(
    journal: Journal,
    entry: JournalEntry,
    run_id: str | None,
    lane: str | None = None,
    root: str | None = None,
) -> None:
    if run_id is not None:
        # The endpoint of the batch that sent it: a rerun at another one leaves it alone.
        # With its lane: that key's provider and API root, and its fingerprint, so the
        # rerun attaches it through that lane only.
        where = journal.last_endpoint
        provider, _, fingerprint = (lane or "").partition(":")
        journal.created(
            entry.key,
            run_id.strip(),
            line=entry.line,
            provider=provider or (where.provider if where is not None else "unknown"),
            base_url=root or (where.base_url if where is not None else None),
            key_fingerprint=fingerprint or None,
            settled=True,  # found by hand now: its creation time is the send time, or unknown
        )
    elif entry.input is not None:
        journal.finished(
            ManifestEntry(
                line=entry.line,
                key=entry.key,
                input=entry.input,
                status="failed",
                error=NOT_CREATED,
                error_type="NotCreated",
            ),
            on_rerun="submit",
        )
    else:  # a journal of 0.x that did not record the request: undo the intent
        journal.withdrawn(entry.key, line=entry.line)
