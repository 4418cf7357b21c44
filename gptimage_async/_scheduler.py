"""One poll scheduler per provider: a heap of due times, not a task per run.

This module only schedules: it keeps the heap, wakes up when the top entry
is due (or a speculative poll may go), sends the poll, and acts on the
verdict ``_classify.read_poll`` gives its answer (the reader creates and
downloads go through too). *When* each run is polled is decided by the pure
rules of ``_planner.py``; how a run ends is in ``_resolve.py``.

Each run's bookkeeping (``PollState``) is kept here, keyed by run id, and
never on the public ``Run``. Where a poll goes is the whole performance of
the library (under Runbase's default limit every poll spends budget a new run
could have used), so the hot path stays lean: heap entries hold run ids, not
objects, and the state structs are invisible to the garbage collector.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import anyio

from ._budget import PRIORITY_POLL, FleetColdStart, Limiter
from ._classify import Reading, Verdict, exchange, read_poll, report
from ._durations import DurationModel
from ._exceptions import GPTImageError, ProtocolError, RunNotFoundError
from ._models import Result, RunStatus
from ._planner import (
    MAX_PROTOCOL_ERRORS,
    PHASE_STEP,
    SHARE_RUNS,
    SPARE_RUNS,
    PollState,
    TailCohort,
    censored_ages,
    deadline_poll_at,
    fair_share_pick,
    not_found_ceiling,
    not_found_grace,
    not_found_is_final,
    plan_age,
    retry_ceiling,
    should_park,
    speculative_age,
)
from ._providers import Provider, RunSnapshot
from ._resolve import outcome_of, settle, timed_out
from ._retry import poll_jitter
from ._run import Run
from ._stats import SessionStats
from ._transport import Transport

__all__ = ["PollScheduler"]

logger = logging.getLogger("gptimage_async")

_Spawn = Callable[..., Any]


class PollScheduler(FleetColdStart):
    """Polls every run of one provider until it is resolved.

    Create it inside the running event loop: due times are on that loop's
    clock (``loop.time()``, seconds), the clock the limiter grants slots on.
    """

    def __init__(
        self,
        *,
        provider: Provider,
        transport: Transport,
        limiter: Limiter,
        stats: SessionStats,
        spawn: _Spawn,
        on_resolved: Callable[[Run], None],
        lookup: Callable[[str], Run | None],
        max_polls_in_flight: int = 100,
    ) -> None:
        self.model = DurationModel()
        self.model.in_flight = lambda: censored_ages(self._states.values())
        self._provider = provider
        self._transport = transport
        self._limiter = limiter
        self._stats = stats
        # The loop's clock, read with loop.time() and woken on with call_at, is
        # the limiter's too: due times and granted slots compare directly, and
        # a test moving the loop's clock moves both. Created inside the loop.
        self._loop = asyncio.get_running_loop()
        self._spawn = spawn
        self._on_resolved = on_resolved
        self._lookup = lookup
        # Heap entries are (due time, key, run id): no object the garbage collector
        # tracks (its full collections pause the loop, and walk every such object).
        # The id finds the run (``lookup``) and its state; an entry whose key is
        # not the state's latest is stale (-1: a poll of it is on its way).
        self._heap: list[tuple[float, int, str]] = []
        self._states: dict[str, PollState] = {}
        self._seq = itertools.count()
        self._phases = itertools.count(1)
        self._wake: asyncio.Future[None] | None = None
        self._rtt = 0.0  # smoothed create round trip
        self._cold_floor = 0.0  # the longest age any run was seen still going during cold start
        self._cold_scale = 0.0  # the first finished run's upper bound, seconds (0: none yet)
        # Cold start: how many runs in flight probe for the first duration (their
        # state says which), and the ids of the runs parked until one has finished.
        self._scouting = 0
        self._parked: list[str] = []
        # No more polls on the wire than connections (beyond, they queue in aiohttp).
        self._poll_slots = asyncio.Semaphore(max_polls_in_flight)
        self._tail = TailCohort()

    # -- public surface --------------------------------------------------------

    def add(
        self,
        run: Run,
        *,
        rtt: float | None = None,
        poll_now: bool = False,
        created_ago: float | None = None,
    ) -> None:
        """Start polling ``run``; ``rtt`` is its create's round trip, if known.

        ``run`` has an id, and ``lookup`` finds it by that id until it is
        resolved. ``poll_now`` marks a run this session did not create (an
        attached one): polled at once, its 404s' grace as ``not_found_grace``
        says from ``created_ago`` (seconds; an earlier process's run, say).
        """
        run_id = run.run_id
        assert run_id is not None
        if rtt is not None:
            self._rtt = rtt if self._rtt == 0.0 else 0.8 * self._rtt + 0.2 * rtt
        grace = not_found_grace(attached=poll_now, created_ago=created_ago)
        state = PollState(grace=grace, phase=next(self._phases) * PHASE_STEP % 1.0)
        self._states[run_id] = state
        now = self._loop.time()
        if poll_now:
            self._push(run, state, now)
        else:
            self._plan(run, state, now)

    def tail_began(self) -> None:
        """A bulk job's last creates go ahead of polls from now (see ``TailCohort``)."""
        longest = self.model.quantile(0.99) if self.model.ready else 0.0
        self._tail.began(self._loop.time(), longest=longest)

    def tail_ended(self) -> None:
        """The last create marked so has been sent."""
        self._tail.ended(self._loop.time())

    def __len__(self) -> int:
        return len(self._states)

    def release(self, run: Run) -> None:
        """``run`` was resolved (here or elsewhere): its state goes, its heap entries go stale."""
        if run.run_id is not None:
            self._drop(run.run_id)

    def _drop(self, run_id: str) -> None:
        state = self._states.pop(run_id, None)
        if state is not None and state.scout:
            self._scouting -= 1
            self._take_over()

    def state_of(self, run_id: str) -> PollState | None:
        """The poll state of a run in flight (for tests and diagnostics; never write it)."""
        return self._states.get(run_id)

    def next_poll(self, run_id: str) -> float | None:
        """Loop time (s) of the run's next poll (``inf``: parked; ``None``: none; a scan)."""
        state = self._states.get(run_id)
        if state is None:
            return None
        return next((when for when, key, _ in self._heap if key == state.entry), None)

    async def run_forever(self) -> None:
        """Take due polls off the heap until cancelled."""
        heap, states, lookup, limiter = self._heap, self._states, self._lookup, self._limiter
        while True:
            if not heap:
                await self._sleep(None)
                continue
            when, key, run_id = heap[0]
            state = states.get(run_id)
            if state is None or state.entry != key:
                heapq.heappop(heap)  # stale: resolved, or re-planned since
                continue
            run = lookup(run_id)
            if run is None or run.done():
                heapq.heappop(heap)  # resolved elsewhere (the session closing, say)
                self._drop(run_id)
                continue
            now = self._loop.time()
            if when > now:
                early, run, pick = self._early(run, state, now)
                if (
                    early <= now
                    and not limiter.waiting
                    and not self._poll_slots.locked()
                    and limiter.try_acquire(speculative=len(states) <= SPARE_RUNS)
                ):
                    if pick is state:
                        heapq.heappop(heap)
                    pick.entry = -1  # polled now: any entry of its is stale
                    self._stats.speculative_polls += 1
                    await self._poll_slots.acquire()  # free: checked above
                    self._spawn(self._poll, run, pick, now)
                    continue
                if early <= now:
                    # Refused (no poll slot, no spare budget, a waiter first): look again
                    # a slot after the next free one; "until now" would spin the loop.
                    early = max(limiter.next_free(), now) + limiter.interval
                await self._sleep(min(when, early))
                continue
            heapq.heappop(heap)
            state.entry = -1  # being polled: no fair-share poll until it is planned again
            if now >= run.deadline:
                self._time_out(run, state)
                continue
            self._stats.lateness.append(now - when)
            await self._poll_slots.acquire()
            if run.done():  # resolved while waiting for a connection: no request for it
                self._poll_slots.release()
                continue
            if limiter.try_acquire():
                self._spawn(self._poll, run, state, self._loop.time())
            else:
                # Waits in the limiter ahead of creates; the loop goes on, so a
                # batch of due polls is granted together, not one per wake-up.
                self._spawn(self._poll_after_slot, run, state)

    def _early(self, run: Run, state: PollState, now: float) -> tuple[float, Run, PollState]:
        """The next poll ahead of plan, budget permitting: when (``inf``: not now), of which run.

        ``run`` is the one planned next; with the model ready and few runs in
        flight, the run whose fair-share poll falls soonest (``fair_share_pick``).
        """
        limiter, model, in_flight = self._limiter, self.model, len(self._states)
        if limiter.waiting:
            # Busy now; look again once the waiters have had the next slot, so
            # budget freed later (a batch's tail) is not missed.
            return max(limiter.next_free(), now, state.not_before) + limiter.interval, run, state
        free = limiter.next_spare() if in_flight <= SPARE_RUNS else limiter.next_free()
        per = {"slots_per_window": limiter.rate * limiter.window}
        if model.ready and not self._parked and in_flight <= SHARE_RUNS:
            lookup = self._lookup
            # The runs in flight with no poll on its way (an entry of -1).
            runs = (
                ((r, st), r.created_at, st)
                for rid, st in self._states.items()
                if st.entry >= 0 and (r := lookup(rid)) is not None and not r.done()
            )
            # Its runs are a part of the fleet's: so is its rate.
            fair = {"rate": limiter.rate / limiter.live_processes, "window": limiter.window}
            pick = fair_share_pick(
                model, runs, now=max(now, free), default=(run, state), **fair, **per
            )
            return max(pick[0], free), *pick[1]
        age = speculative_age(
            model,
            last_pending_age=state.last_pending_age,
            polls=run._polls,
            in_flight=in_flight,
            rtt=self._rtt,
            interval=limiter.interval,
            **per,
        )
        # Never ahead of a wait the server asked for (Retry-After on a 503, say).
        return max(run.created_at + age, free, state.not_before), run, state

    # -- planning --------------------------------------------------------------

    def _plan(self, run: Run, state: PollState, now: float) -> None:
        if run._polls == 0 and self._park(run, state):
            return
        age = plan_age(
            self.model,
            last_pending_age=state.last_pending_age,
            polls=run._polls,
            interval=self._limiter.interval,
            rtt=self._rtt,
            cold_floor=self._cold_floor,
            cold_scale=self._cold_scale,
        )
        self._push(run, state, max(run.created_at + age, now))

    def _park(self, run: Run, state: PollState) -> bool:
        """Cold start: hold the run unpolled if enough scouts already probe (True if parked)."""
        ready, scale = self.model.ready, self._cold_scale
        if should_park(
            model_ready=ready,
            cold_scale=scale,
            is_scout=state.scout,
            scouts=self._scouting + self.scouts_elsewhere,
            waiting=self._limiter.waiting > 0,
        ):
            assert run.run_id is not None
            self._parked.append(run.run_id)
            self._push(run, state, math.inf)  # held at its deadline, which still applies
            return True
        if not (ready or scale or state.scout):
            state.scout = True  # it probes: one scout more, until it is released
            self._scouting += 1
        return False

    def _replan(self, run_id: str, now: float) -> bool:
        """Plan the run with this id afresh; False if it is no longer in flight."""
        state = self._states.get(run_id)
        run = self._lookup(run_id)
        if state is None or run is None or run.done():
            return False
        self._plan(run, state, now)
        return True

    def _take_over(self) -> None:
        """A scout ended with no duration (failed, cancelled): the oldest parked run takes over."""
        while self._parked and not self._cold_scale:
            if self._replan(self._parked.pop(0), self._loop.time()):
                return  # planned as a scout: ``_park`` found one fewer probing

    def _push(self, run: Run, state: PollState, when: float) -> None:
        run_id = run.run_id
        assert run_id is not None
        when = deadline_poll_at(
            when,
            created_at=run.created_at,
            deadline=run.deadline,
            last_pending_age=state.last_pending_age,
            not_before=state.not_before,
        )
        state.entry = key = next(self._seq)  # its older entry, if any, is stale from now on
        heap = self._heap
        heapq.heappush(heap, (when, key, run_id))
        if heap[0][1] == key and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _sleep(self, until: float | None) -> None:
        """Wait until loop time ``until`` (seconds; ``None``: no limit) or an earlier push."""
        loop = self._loop
        self._wake = wake = loop.create_future()
        handle = None if until is None else loop.call_at(until, _set_once, wake)
        try:
            await wake
        finally:
            if handle is not None:
                handle.cancel()
            self._wake = None

    # -- one poll ----------------------------------------------------------------

    async def _poll_after_slot(self, run: Run, state: PollState) -> None:
        try:
            # A long Retry-After can hold the limiter: the run's deadline still holds.
            with anyio.move_on_at(run.deadline) as waiting:
                sent_at = await self._limiter.acquire(PRIORITY_POLL)
        except BaseException:
            self._poll_slots.release()
            raise
        if waiting.cancelled_caught:
            self._poll_slots.release()
            self._time_out(run, state)
        elif run.done():
            self._poll_slots.release()
        else:
            await self._poll(run, state, sent_at)

    async def _poll(self, run: Run, state: PollState, sent_at: float) -> None:
        # Everything is caught: a poll must never take the session down.
        try:
            await self._poll_once(run, state, sent_at)
        except Exception as exc:  # pragma: no cover - a bug, reported on the run
            logger.exception("unexpected error while polling run %s", run.run_id)
            self._fail(run, ProtocolError(f"unexpected error while polling: {exc!r}"))
        finally:
            self._poll_slots.release()

    async def _poll_once(self, run: Run, state: PollState, sent_at: float) -> None:
        run_id = run.run_id
        assert run_id is not None
        run._polls += 1
        stats = self._stats
        stats.polls += 1
        stats.requests += 1
        provider = self._provider
        outcome = await exchange(self._transport, "GET", provider.poll_path(run_id))
        reading = read_poll(outcome, provider, run_id)
        # The limiter hears every answer, even one about a run resolved meanwhile.
        report(reading, limiter=self._limiter, stats=stats, sent_at=sent_at)
        if run.done():
            return
        self._act(run, state, reading, age=sent_at - run.created_at)

    def _act(
        self, run: Run, state: PollState, reading: Reading[RunSnapshot], *, age: float
    ) -> None:
        """Do what a poll's verdict says; ``age`` is the poll's, seconds since the create."""
        verdict = reading.verdict
        if verdict is Verdict.OK:
            assert reading.value is not None
            self._observe(run, state, reading.value, age)
            return
        error = reading.error
        assert error is not None
        if verdict is Verdict.WAIT:
            # After a 429 the limiter holds it back (wait 0); after a Retry-After
            # on any other status, the poll itself waits that long.
            state.not_before = self._loop.time() + reading.wait
            self._push(run, state, state.not_before)
        elif verdict is not Verdict.RETRY:
            self._fail(run, error)  # FAIL: a refused certificate, a 400, a quota gone ...
        elif isinstance(error, RunNotFoundError):
            if not_found_is_final(age=age, grace=state.grace, errors=state.errors):
                self._fail(run, error)
            else:
                # Not visible yet: poll again, paced like any retry, and never
                # sooner (not even speculatively): each 404 spends budget too.
                self._retry_later(run, state, error, hold=True)
        elif isinstance(error, ProtocolError):
            # An answer that cannot be used (unreadable, about another run):
            # asked again a few times, then the reason is the run's outcome.
            self._stats.poll_errors += 1
            if state.errors + 1 >= MAX_PROTOCOL_ERRORS:
                self._fail(run, error)
            else:
                self._retry_later(run, state, error)
        else:
            self._retry_later(run, state, error)  # no answer, a 5xx, a 408

    def _observe(self, run: Run, state: PollState, snapshot: RunSnapshot, age: float) -> None:
        state.errors = 0
        if snapshot.status_word is not None:
            state.status_word = snapshot.status_word
        status = snapshot.status
        if not status.is_terminal:
            run.status = status
            state.last_pending_age = max(state.last_pending_age, age)
            if not self.model.ready:
                self._cold_floor = max(self._cold_floor, age)
            self._plan(run, state, self._loop.time())
            return
        model = self.model
        if not (model.ready and run.created_at in self._tail):
            # Not a run of a bulk job's tail (see ``TailCohort``).
            model.observe(state.last_pending_age, age)
        now = self._loop.time()
        if not self._cold_scale:
            # The scale of durations, from a run probed finely: not from the
            # runs polled at a multiple of it, or the multiples would compound.
            self._cold_scale = self.model.longest
        if self._parked and self._cold_scale:
            # A duration is known: plan every parked run from it.
            parked, self._parked = self._parked, []
            for run_id in parked:
                self._replan(run_id, now)
        elapsed, root = now - run.created_at, self._transport.base_url  # the lane's API root
        self._settle(run, outcome_of(run, snapshot, elapsed=elapsed, root=root), status)

    def _retry_later(
        self, run: Run, state: PollState, error: GPTImageError, *, hold: bool = False
    ) -> None:
        state.errors += 1
        logger.debug("poll of run %s failed (%s); retrying", run.run_id, error)
        ceiling = not_found_ceiling if hold else retry_ceiling
        delay = ceiling(
            state.errors,
            model=self.model,
            rtt=self._rtt,
            interval=self._limiter.interval,
            window=self._limiter.window,
        )
        # Jitter keeps a crowd of runs that failed together from retrying together.
        when = self._loop.time() + poll_jitter(delay)
        if hold:
            state.not_before = when
        self._push(run, state, when)

    def _time_out(self, run: Run, state: PollState) -> None:
        self._settle(run, timed_out(run, state.status_word), None)

    def _fail(self, run: Run, error: GPTImageError) -> None:
        self._settle(run, error, None)

    def _settle(self, run: Run, outcome: Result | GPTImageError, status: RunStatus | None) -> None:
        settle(run, outcome, self._on_resolved, status=status)
        # Whoever resolved it, its state goes (``on_resolved`` may have done it already).
        self.release(run)

    def __repr__(self) -> str:
        return f"<PollScheduler {self._provider.name} in_flight={len(self)} {self.model!r}>"


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
