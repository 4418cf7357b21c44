"""Every run a session has submitted, until it is resolved."""

from __future__ import annotations

import collections
from collections.abc import Iterator

from ._models import RunStatus
from ._run import Run

__all__ = ["Held", "RunRegistry"]


class RunRegistry:
    """The runs a session tracks: lookups by id and counts by status (read-only for users).

    Runs in flight are kept by id; a resolved run is dropped (so a long bulk
    job holds memory only for what is in flight) and counted by how it ended.
    Only the session adds and drops runs; ``add`` and ``discard`` are
    deprecated names of its private methods, kept so old code still runs.

    >>> session.runs.counts()   # doctest: +SKIP
    {'pending': 3, 'running': 5, 'succeeded': 120, 'failed': 1, ...}
    """

    __slots__ = ("_abandoned", "_active", "_ended", "_undelivered")

    def __init__(self) -> None:
        self._active: dict[str, Run] = {}
        self._ended: collections.Counter[RunStatus] = collections.Counter()
        self._abandoned: dict[str, Run] = {}
        self._undelivered: dict[str, Run] = {}

    # -- writes: the session's only ----------------------------------------------
    # A run added here by anyone else would never be polled, and one dropped
    # would be polled for nothing: a user reads the registry, never writes it.

    def _track(self, run: Run) -> None:
        """Start tracking ``run`` (it must have a provider id). The session's only."""
        assert run.run_id is not None
        self._active[run.run_id] = run

    def _untrack(self, run: Run) -> None:
        """Stop tracking ``run``; counted by how it ended if it was tracked. The session's only."""
        if run.run_id is not None and self._active.get(run.run_id) is run:
            del self._active[run.run_id]
            self._ended[run.status] += 1

    def _abandon(self, run: Run) -> None:
        """Stop tracking ``run`` unresolved (its session closed): kept in ``abandoned``."""
        if run.run_id is not None and self._active.get(run.run_id) is run:
            self._untrack(run)
            self._abandoned[run.run_id] = run

    def _undeliver(self, run: Run) -> None:
        """Keep ``run`` in ``undelivered``: resolved, its bulk call cut before handing it over."""
        # An abandoned run is named as such: its bulk call never had its result.
        if run.run_id is not None and run.run_id not in self._abandoned and run.done():
            self._undelivered[run.run_id] = run

    def _delivered(self, run: Run) -> None:
        """``run`` reached its caller after all (a bulk call that ended after the close)."""
        if run.run_id is not None and self._undelivered.get(run.run_id) is run:
            del self._undelivered[run.run_id]

    @property
    def undelivered(self) -> list[Run]:
        """Runs resolved whose bulk call never handed them to its caller, oldest first.

        A ``generate_many`` (or an ``as_completed`` stream) cut short, by an
        exception around it, a cancellation or the session's close, drops the
        runs it had and had not returned yet: they are kept here, each with
        its ``run_id`` and outcome (``await run`` gives its ``Result`` or
        raises its error at once). A run that succeeded was paid for.
        """
        # Kept in the order the cut reached them, which a busy loop may shuffle.
        return sorted(self._undelivered.values(), key=lambda run: run.created_at)

    @property
    def abandoned(self) -> list[Run]:
        """Runs left unresolved when the session closed, in the order they were created.

        Each keeps its ``run_id`` (a later session can ``attach`` it) and ends
        with ``SessionClosedError``; they may still finish on the provider's side.
        """
        return list(self._abandoned.values())

    #: Deprecated public names of ``_track`` / ``_untrack``, kept working: they
    #: were never meant for users (a run added by hand is never polled).
    def add(self, run: Run) -> None:
        self._track(run)

    def discard(self, run: Run) -> None:
        self._untrack(run)

    # -- reads ---------------------------------------------------------------------

    def get(self, run_id: str) -> Run | None:
        """The run in flight with this provider id, or abandoned with it at close, if any."""
        run = self._active.get(run_id)
        return run if run is not None else self._abandoned.get(run_id)

    def __contains__(self, run: object) -> bool:
        if isinstance(run, str):
            return run in self._active
        return (
            isinstance(run, Run) and run.run_id is not None and self._active.get(run.run_id) is run
        )

    def __len__(self) -> int:
        """Runs in flight."""
        return len(self._active)

    def __iter__(self) -> Iterator[Run]:
        """The runs in flight (a snapshot: safe while runs resolve)."""
        return iter(list(self._active.values()))

    @property
    def in_flight(self) -> int:
        """Runs submitted and not yet resolved."""
        return len(self._active)

    @property
    def total(self) -> int:
        """Runs ever tracked: in flight plus resolved."""
        return len(self._active) + sum(self._ended.values())

    def counts(self) -> dict[str, int]:
        """Runs by status: in flight by their last known status, resolved by how they ended."""
        counts = {status.value: 0 for status in RunStatus}
        for status, n in self._ended.items():
            counts[status.value] += n
        for run in self._active.values():
            counts[run.status.value] += 1
        return counts

    def __repr__(self) -> str:
        active = ", ".join(f"{k}={v}" for k, v in self.counts().items() if v)
        return f"<RunRegistry {active or 'empty'}>"


class Held:
    """A bulk call's runs resolved and not yet handed to its caller (``Lifecycle.holding``).

    ``add`` a run once resolved, ``discard`` it once handed over, ``release``
    when the call ends. What is left then was never delivered: it goes to the
    registry's ``undelivered``, and so does a run added after the release
    (one in flight when the call was cut, resolved later).
    """

    __slots__ = ("_registry", "_runs", "released")

    def __init__(self, registry: RunRegistry) -> None:
        self._registry = registry
        self._runs: dict[int, Run] = {}
        self.released = False

    def add(self, run: Run) -> None:
        if run.run_id is None:  # never created: nothing paid, nothing to name
            return
        if self.released:
            self._registry._undeliver(run)
        else:
            self._runs[id(run)] = run

    def discard(self, run: Run) -> None:
        self._runs.pop(id(run), None)

    def __len__(self) -> int:
        return len(self._runs)

    def release(self, delivered: bool = False) -> None:
        """The call ended: its runs were all ``delivered``, or the rest never will be."""
        self.released = True
        runs = sorted(self._runs.values(), key=lambda run: run.created_at)
        self._runs.clear()
        for run in runs:
            if delivered:
                self._registry._delivered(run)  # after a close had counted it undelivered
            else:
                self._registry._undeliver(run)
