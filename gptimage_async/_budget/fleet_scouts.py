"""The fleet's cold start: one scout for every process on a key, as one process runs.

Before any run has finished, a bulk job learns how long runs take from a few
scouts (``_planner.SCOUTS``, one): the scout is polled finely, the other runs
are parked until its duration is known. Each process alone kept its own
scouts, so a fleet of four probed four runs finely before any finished
(issue 22: 5-13 polls beyond one a run in its first 1.5 windows).

So the processes on a key elect one scout holder through a lease in Redis,
``gptimage:{<budget>}:scout`` (its value a process's random id, never a key),
taken with the durations' sync round trip (``shared_durations.DurationFeed``):

* a process with a cold model (no duration known: ``DurationModel.longest``
  is 0) takes the lease when it is free and the durations' stream empty
  (else the duration it reads there gives the scale), while it has runs in
  flight or within ``SCOUT_LEASE_SYNCS`` syncs of its start (so the fleet's
  first creates already know who probes), and renews it on every sync;
* while another process holds it, this one counts one scout elsewhere
  (``PollScheduler.scouts_elsewhere``) and parks all its runs;
* it lapses ``SCOUT_LEASE_WINDOWS`` rate windows after its holder's last
  renewal (a process that died, or lost Redis, never blocks the others for
  longer), and its holder drops it once a duration is known;
* the scout's duration reaches the others through the durations' stream,
  and ``PollScheduler.fleet_changed`` releases their parked runs from it;
  when the lease is free again and no duration came, a parked run probes.

Redis not answering is never an error here (the sync fails as a whole): the
process then scouts on its own, as one process does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from .._durations import DurationModel

__all__ = [
    "SCOUT_LEASE_SYNCS",
    "SCOUT_SCRIPT",
    "FleetColdStart",
    "Scouting",
    "apply",
    "lease_seconds",
    "scout_key",
    "wants_lease",
]

#: A process asks for the lease in its first this many syncs even with no run in
#: flight yet (its first creates are on their way).
SCOUT_LEASE_SYNCS = 5
#: The lease lasts this many rate windows past its holder's last renewal: many
#: syncs (a tenth of a window apart), so a loaded machine's late sync, or one
#: failed sync and its wait (``shared_durations.FAILED_WAIT``), keeps it.
SCOUT_LEASE_WINDOWS = 2.0

#: KEYS[1] the lease, KEYS[2] the durations' stream; ARGV: this process's id,
#: '1' if it wants the lease, its time to live (ms). Returns the holder after
#: the call (nil: none). Nobody takes a free lease once the stream holds a
#: duration: the process asking reads it in this same round trip.
SCOUT_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  if ARGV[2] == '1' and redis.call('XLEN', KEYS[2]) == 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
    return ARGV[1]
  end
  return false
end
if holder == ARGV[1] then
  if ARGV[2] == '1' then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  else
    redis.call('DEL', KEYS[1])
    return false
  end
end
return holder
"""


class Scouting(Protocol):
    """What the lease needs of a poll scheduler (``_scheduler.PollScheduler``)."""

    scouts_elsewhere: int

    def __len__(self) -> int: ...

    def fleet_changed(self) -> None: ...


class _ColdState(Protocol):
    """The poll scheduler's cold-start state that ``FleetColdStart`` reads and writes."""

    model: DurationModel
    _loop: asyncio.AbstractEventLoop
    _cold_scale: float
    _parked: list[str]
    _scouting: int

    def _replan(self, run_id: str, now: float) -> bool: ...

    def _take_over(self) -> None: ...


class FleetColdStart:
    """Mixed into ``_scheduler.PollScheduler``: its side of the fleet's one scout.

    ``scouts_elsewhere`` (0 or 1) is added to its own scouts when it decides
    whether to park a run (``_planner.should_park``).
    """

    #: Scouts other processes on the key run now (0: none, or alone).
    scouts_elsewhere: int = 0

    def fleet_changed(self: _ColdState) -> None:
        """The fleet's cold start moved on: a duration learned elsewhere, or its scout gone.

        A duration another process saw gives the scale of durations, as one
        of this process's own would: the parked runs are planned from it
        (their first poll at ``_planner.COLD_RELEASE`` times it). With none
        known and no scout of its own, the oldest parked run probes.
        """
        if self._cold_scale:
            return
        if self.model.longest > 0.0:
            self._cold_scale = self.model.longest
            parked = list(self._parked)
            self._parked.clear()
            for run_id in parked:
                self._replan(run_id, self._loop.time())
        elif not self._scouting:
            self._take_over()


def scout_key(budget: str) -> str:
    """The lease's Redis key: ``gptimage:{<budget>}:scout`` (``budget``: ``budget_id``)."""
    return f"gptimage:{{{budget}}}:scout"


def lease_seconds(window: float) -> float:
    """Seconds the lease outlives its last renewal, for a rate window of ``window`` seconds."""
    return SCOUT_LEASE_WINDOWS * window


def wants_lease(*, cold: bool, in_flight: int, syncs: int) -> bool:
    """Whether a process asks for (or keeps) the lease at its ``syncs``-th sync (0: the first).

    Only with a cold model; then while it has runs in flight, or early on
    (its first creates are on their way: the fleet learns who probes first).
    """
    return cold and (in_flight > 0 or syncs < SCOUT_LEASE_SYNCS)


def apply(scheduler: Scouting, holder: Any, me: str) -> None:
    """Tell ``scheduler`` what the lease's ``holder`` (as Redis returned it) means for it."""
    if isinstance(holder, bytes):
        holder = holder.decode("ascii", "replace")
    elsewhere = int(bool(holder) and holder != me)
    if elsewhere != scheduler.scouts_elsewhere:
        scheduler.scouts_elsewhere = elsewhere
        if not elsewhere:
            scheduler.fleet_changed()  # the fleet's scout is gone: one of ours may probe
