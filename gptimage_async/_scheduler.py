"""One poll scheduler per provider: a heap of due times, not a task per run.

Where a poll goes is the whole performance of the library: under Runbase's
default limit every poll spends budget a new run could have used. So:

* Each run has a *planned* poll at the age by which most runs like it are
  done (the ``PLANNED_DONE_SHARE`` quantile of the learned duration
  distribution, conditional on the run still going at its last poll).
  Planned polls go before creates in the limiter. When the budget is the
  bottleneck these are the only polls, and they cost close to one per run.
* Whenever the limiter has a free slot and nobody waits for it, the run at
  the top of the heap (the one nearest its planned poll, so the likeliest to
  be done) is polled early: a *speculative* poll. These buy latency with
  budget nobody else wanted, never delay a waiting request, and fill the idle
  tail of a batch as well as the gaps of a light load. Each run's speculative
  polls spread a window's worth of slots over its likely finish (the model's
  2%-98% quantiles), so on an idle budget runs shorter than a rate window are
  polled more densely where they end (the limiter's spare slots allow it,
  with a few runs in flight).
* Before enough runs have finished to learn from, polls probe geometrically,
  scaled by the create's round trip: no interval in seconds is written down,
  so the same code fits 3-10 s runs and a simulator compressing them 20-fold.
  In a bulk job only ``SCOUTS`` runs probe; the others are parked, so the
  budget goes to creates, until a scout has finished and its duration gives
  the scale: parked runs are then first polled at ``COLD_RELEASE`` times it,
  where nearly all of them are done.
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

from ._budget import PRIORITY_POLL, Limiter
from ._classify import (
    Verdict,
    classify_no_answer,
    classify_status,
    read_answer,
    report_answer,
    report_no_answer,
    wait_as_told,
)
from ._durations import DurationModel
from ._exceptions import (
    APIStatusError,
    GPTImageError,
    ProtocolError,
    RunFailedError,
    RunNotFoundError,
    RunTimeoutError,
)
from ._models import Result, RunStatus
from ._providers import Provider, RunSnapshot
from ._retry import backoff_ceiling, poll_jitter
from ._run import Run
from ._stats import SessionStats
from ._transport import SendError, Transport

__all__ = ["PollScheduler"]

logger = logging.getLogger("gptimage_async")

#: Share of runs a planned poll should find done.
PLANNED_DONE_SHARE = 0.95
#: Speculative polls are spread between the ages where these shares of runs are done ...
SPECULATIVE_FROM = 0.02
SPECULATIVE_TO = 0.98
#: ... a window's worth of the limiter's slots less this many (the create, and room for demand) ...
SPREAD_KEEP = 3.0
#: ... and poll one run at most once per this share of the median duration.
SPECULATIVE_SPACING = 0.03
#: With at most this many runs in flight (a session making a few images, not a
#: batch's tail, where the extra polls would add up), speculative polls may take
#: the limiter's spare slots ahead of its even pace.
SPARE_RUNS = 8
#: A model fitted on n runs speculates from n / (n + this) of its early quantile
#: (and to its late one over that): few runs say little about the extremes.
MATURITY_PRIOR = 2.0
#: Two planned polls of one run are at least this share of the median apart.
MIN_STEP = 0.05
#: Cold start: first poll after this many create round trips, then this growth per poll.
COLD_FIRST_RTTS = 4.0
COLD_GROWTH = 2.0
#: Cold start on an idle budget, with at most COLD_SCOUTS runs in flight:
#: speculative polls grow by this factor per poll.
COLD_SPECULATIVE_GROWTH = 1.1
COLD_SCOUTS = 8
#: Cold start in bulk: runs polled before any has finished; the others are parked.
SCOUTS = 1
#: Until the model is ready, first polls go at this multiple of the first
#: finished run's duration: nearly every run is done there, so learning costs
#: few polls (and, in bulk, no throughput: creates use the budget meanwhile).
COLD_RELEASE = 2.0
#: Past the longest duration seen, the gap grows by this factor per poll.
TAIL_GROWTH = 1.25
#: A run not polled by then is polled this share of its run_timeout before its deadline.
FINAL_POLL_LEAD = 0.05
#: Consecutive unreadable answers, and 404s, before a run is given up on.
MAX_PROTOCOL_ERRORS = 6
MAX_NOT_FOUND = 3

_Spawn = Callable[..., Any]


class PollScheduler:
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
        # Heap entries are (due time, key, run id) and hold no object the garbage
        # collector tracks: with 10,000 runs in flight, its full collections
        # (pauses of the whole event loop) walk one object fewer per run, and a
        # re-planned run's new entry is never promoted to its oldest generation.
        # The id finds the run (``lookup``: the session's registry of runs in
        # flight); an entry whose key is not the run's latest is stale.
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Future[None] | None = None
        self._rtt = 0.0  # smoothed create round trip
        self._cold_floor = 0.0  # the longest age any run was seen still going during cold start
        self._cold_scale = 0.0  # the first finished run's upper bound, seconds (0: none yet)
        self._in_flight = 0
        # Cold start: the runs probing for the first duration, and the runs waiting for one.
        self._scouts: list[Run] = []
        self._parked: list[Run] = []
        # No more polls on the wire than connections: beyond that they would only
        # queue inside aiohttp, holding memory and going stale.
        self._poll_slots = asyncio.Semaphore(max_polls_in_flight)
        # Runs created in [from, until] (loop time) are a bulk job's tail cohort.
        self._cohort_from = math.inf
        self._cohort_until = math.inf

    # -- public surface --------------------------------------------------------

    def add(self, run: Run, *, rtt: float | None = None, poll_now: bool = False) -> None:
        """Start polling ``run``; ``rtt`` is its create's round trip, if known.

        ``run`` has an id, and ``lookup`` finds it by that id until it is resolved.
        """
        assert run.run_id is not None
        if rtt is not None:
            self._rtt = rtt if self._rtt == 0.0 else 0.8 * self._rtt + 0.2 * rtt
        self._in_flight += 1
        now = self._loop.time()
        if poll_now:
            self._push(run, now)
        else:
            self._plan(run, now)

    def tail_began(self) -> None:
        """A bulk job's last creates go ahead of polls from now (see ``_observe``)."""
        now = self._loop.time()
        # Runs still going now have their polls held too: from one long run back.
        longest = self.model.quantile(0.99) if self.model.ready else 0.0
        # A tail that ended a moment ago (between two of a stream's last
        # creates) goes on; one long over gives way to a new cohort.
        if self._cohort_from == math.inf or self._cohort_until < now - longest:
            self._cohort_from = now - longest
        self._cohort_until = math.inf

    def tail_ended(self) -> None:
        """The last create marked so has been sent."""
        self._cohort_until = self._loop.time()

    def __len__(self) -> int:
        return self._in_flight

    def release(self, run: Run) -> None:
        """``run`` was resolved elsewhere; its heap entries go stale."""
        self._in_flight -= 1
        self._unscout(run)

    async def run_forever(self) -> None:
        """Take due polls off the heap until cancelled."""
        heap = self._heap
        lookup = self._lookup
        limiter = self._limiter
        while True:
            if not heap:
                await self._sleep(None)
                continue
            when, key, run_id = heap[0]
            run = lookup(run_id)
            if run is None or run._poll.entry != key or run.done():
                heapq.heappop(heap)  # stale: resolved, or re-planned since
                continue
            now = self._loop.time()
            if when > now:
                early = self._early_at(run, now)
                if (
                    early <= now
                    and not limiter.waiting
                    and not self._poll_slots.locked()
                    and limiter.try_acquire(speculative=self._in_flight <= SPARE_RUNS)
                ):
                    heapq.heappop(heap)
                    self._stats.speculative_polls += 1
                    await self._poll_slots.acquire()  # free: checked above
                    self._spawn(self._poll, run, now)
                    continue
                await self._sleep(min(when, max(early, now)))
                continue
            heapq.heappop(heap)
            if now >= run.deadline:
                self._fail(run, RunTimeoutError(self._timeout_message(run), run_id=run.run_id))
                continue
            self._stats.lateness.append(now - when)
            await self._poll_slots.acquire()
            if run.done():  # resolved while waiting for a connection: no request for it
                self._poll_slots.release()
                continue
            if limiter.try_acquire():
                self._spawn(self._poll, run, self._loop.time())
            else:
                # Waits in the limiter ahead of creates; the loop goes on, so a
                # batch of due polls is granted together, not one per wake-up.
                self._spawn(self._poll_after_slot, run)

    def _early_at(self, run: Run, now: float) -> float:
        """When ``run`` may be polled ahead of plan, budget permitting (``inf``: not now)."""
        limiter = self._limiter
        if limiter.waiting:
            # Busy now; look again once the waiters have had the next slot, so
            # budget freed later (a batch's tail) is not missed.
            return max(limiter.next_free(), now, run._poll.not_before) + limiter.interval
        model = self.model
        n = model.observed
        if n == 0 or (not model.ready and self._in_flight > COLD_SCOUTS):
            # Nothing learned yet. A few runs in flight (a session making its
            # first images) probe idle budget finely, geometrically, so polls
            # per run grow with the log of its duration; many runs wait for
            # the model rather than storm a large budget.
            if self._in_flight > COLD_SCOUTS:
                return math.inf
            last = run._poll.last_pending_age
            first = max(COLD_FIRST_RTTS * self._rtt, limiter.interval) / 2
            earliest_age = max(last * COLD_SPECULATIVE_GROWTH, last + limiter.interval, first)
        else:
            # Even one finished run gives the scale (the planned polls wait for
            # a few more). A model fitted on few runs knows little of the
            # shortest and longest ones: the window it speculates over starts
            # earlier and ends later until it has seen more.
            maturity = n / (n + MATURITY_PRIOR)
            earliest_age = model.quantile(SPECULATIVE_FROM) * maturity
            if run._poll.polls:
                # Spread a window's worth of slots (less a few, for the create
                # and for demand) over the likely finish: closer than the even
                # pace when runs are shorter than a window, and the limiter's
                # spare slots allow it.
                latest_age = model.quantile(SPECULATIVE_TO) / maturity
                slots = max(1.0, limiter.rate * limiter.window - SPREAD_KEEP)
                spacing = min((latest_age - earliest_age) / slots, limiter.interval)
                spacing = max(spacing, SPECULATIVE_SPACING * model.quantile(0.5))
                earliest_age = max(earliest_age, run._poll.last_pending_age + spacing)
        # Never ahead of a wait the server asked for (Retry-After on a 503, say).
        free = limiter.next_spare() if self._in_flight <= SPARE_RUNS else limiter.next_free()
        return max(run.created_at + earliest_age, free, run._poll.not_before)

    # -- planning --------------------------------------------------------------

    def _plan(self, run: Run, now: float) -> None:
        if run._poll.polls == 0 and self._park(run):
            return
        age = self.plan_age(run, interval=self._limiter.interval)
        self._push(run, max(run.created_at + age, now))

    def _park(self, run: Run) -> bool:
        """Cold start: hold ``run`` unpolled if enough scouts already probe (True if parked).

        Only while requests wait for the budget (a bulk job): a session making
        a few images polls each of them, on idle budget.
        """
        if self.model.ready or self._cold_scale or run in self._scouts:
            return False
        scouts = self._scouts
        scouts[:] = [r for r in scouts if not r.done()]
        if len(scouts) < SCOUTS or not self._limiter.waiting:
            scouts.append(run)
            return False
        self._parked.append(run)
        self._push(run, math.inf)  # held at its deadline, which still applies
        return True

    def _unpark(self, now: float) -> None:
        """A duration is known: plan every parked run from it."""
        parked, self._parked = self._parked, []
        self._scouts.clear()
        for run in parked:
            if not run.done():
                self._plan(run, now)

    def _unscout(self, run: Run) -> None:
        """A scout ended with no duration (failed, cancelled): the oldest parked run takes over."""
        if run not in self._scouts:
            return
        self._scouts.remove(run)
        while self._parked and not self._cold_scale:
            nxt = self._parked.pop(0)
            if not nxt.done():
                self._scouts.append(nxt)
                self._plan(nxt, self._loop.time())
                return

    def plan_age(self, run: Run, *, interval: float) -> float:
        """The age at which to poll ``run`` next, if the budget is the bottleneck.

        Pure: depends on the run, the learned model and ``interval`` only.
        """
        last = run._poll.last_pending_age
        model = self.model
        if not model.ready:
            # Probe geometrically from a few round trips, but never below what
            # earlier runs showed: still going at cold_floor, done by longest.
            first = max(
                COLD_FIRST_RTTS * self._rtt,
                interval,
                self._cold_floor,
                # A run done by then (or, restored, the longest one seen) sets the scale.
                COLD_RELEASE * (self._cold_scale or model.longest),
            )
            if run._poll.polls == 0:
                return first
            return max(last * COLD_GROWTH, last + interval, first)
        target = model.conditional_quantile(last, PLANNED_DONE_SHARE)
        if target is None:
            target = last * TAIL_GROWTH
        if run._poll.polls:
            target = max(target, last + MIN_STEP * model.quantile(0.5))
        return target

    def _push(self, run: Run, when: float) -> None:
        deadline = run.deadline
        poll = run._poll
        if when >= deadline:
            # Never time a run out unpolled (a model that believes runs take
            # longer than run_timeout, say): one last poll goes a little before
            # the deadline, unless a poll already found it still going there,
            # or the server asked for a wait past it (Retry-After).
            final = deadline - FINAL_POLL_LEAD * (deadline - run.created_at)
            polled = run.created_at + poll.last_pending_age >= final
            when = deadline if polled or poll.not_before > final else final
        poll.next_poll = when
        poll.entry = key = next(self._seq)  # its older entry, if any, is stale from now on
        assert run.run_id is not None
        heap = self._heap
        heapq.heappush(heap, (when, key, run.run_id))
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

    async def _poll_after_slot(self, run: Run) -> None:
        try:
            # A long Retry-After can hold the limiter: the run's deadline still holds.
            with anyio.move_on_at(run.deadline) as waiting:
                sent_at = await self._limiter.acquire(PRIORITY_POLL)
        except BaseException:
            self._poll_slots.release()
            raise
        if waiting.cancelled_caught:
            self._poll_slots.release()
            self._fail(run, RunTimeoutError(self._timeout_message(run), run_id=run.run_id))
        elif run.done():
            self._poll_slots.release()
        else:
            await self._poll(run, sent_at)

    async def _poll(self, run: Run, sent_at: float) -> None:
        # Everything is caught: a poll must never take the session down.
        try:
            await self._poll_once(run, sent_at)
        except Exception as exc:  # pragma: no cover - a bug, reported on the run
            logger.exception("unexpected error while polling run %s", run.run_id)
            self._fail(run, ProtocolError(f"unexpected error while polling: {exc!r}"))
        finally:
            self._poll_slots.release()

    async def _poll_once(self, run: Run, sent_at: float) -> None:
        assert run.run_id is not None
        age = sent_at - run.created_at
        run._poll.polls += 1
        self._stats.polls += 1
        self._stats.requests += 1
        try:
            answer = await self._transport.send("GET", self._provider.poll_path(run.run_id))
        except SendError as exc:
            report_no_answer(limiter=self._limiter, stats=self._stats)
            classify_no_answer(exc, create=False)  # always a retry: a poll changes nothing
            self._retry_later(run, exc)
            return
        except ProtocolError as exc:
            self._protocol_error(run, exc)
            return
        except APIStatusError as exc:  # a redirect the transport would not follow
            report_answer(exc, limiter=self._limiter, stats=self._stats, sent_at=sent_at)
            self._status_error(run, exc)
            return
        if run.done():
            return
        try:
            snapshot = read_answer(self._provider, answer, run_id=run.run_id)
        except APIStatusError as exc:
            report_answer(exc, limiter=self._limiter, stats=self._stats, sent_at=sent_at)
            self._status_error(run, exc)
            return
        except ProtocolError as exc:
            report_answer(None, limiter=self._limiter, stats=self._stats, sent_at=sent_at)
            self._protocol_error(run, exc)
            return
        report_answer(None, limiter=self._limiter, stats=self._stats, sent_at=sent_at)
        self._observe(run, snapshot, age)

    def _observe(self, run: Run, snapshot: RunSnapshot, age: float) -> None:
        run._poll.errors = 0
        if snapshot.status_word is not None:
            run._poll.status_word = snapshot.status_word
        status = snapshot.status
        if not status.is_terminal:
            run.status = status
            run._poll.last_pending_age = max(run._poll.last_pending_age, age)
            if not self.model.ready:
                self._cold_floor = max(self._cold_floor, age)
            self._plan(run, self._loop.time())
            return
        model = self.model
        if not (model.ready and self._cohort_from <= run.created_at <= self._cohort_until):
            # Not the runs of a bulk job's tail: their polls were held back on
            # purpose, so they saw durations only coarsely, and the EM would
            # smear those wide intervals over the grid. Chosen by creation time,
            # never by outcome, so leaving them out does not bias the sample.
            model.observe(run._poll.last_pending_age, age)
        now = self._loop.time()
        if not self._cold_scale:
            # The scale of durations, from a run probed finely: not from the
            # runs polled at a multiple of it, or the multiples would compound.
            self._cold_scale = self.model.longest
        if self._parked and self._cold_scale:
            self._unpark(now)
        if status is RunStatus.SUCCEEDED:
            result = Result(
                run_id=run.run_id or snapshot.id,
                provider=run.provider,
                urls=list(snapshot.urls),
                request=run.request,
                elapsed=now - run.created_at,
            )
            if run._resolve(result):
                self._on_resolved(run)
            return
        if status is RunStatus.CANCELED:
            message = snapshot.error_message or "the run was canceled on the provider's side"
        else:
            message = snapshot.error_message or "the provider reports that the run failed"
        error = RunFailedError(message, run_id=run.run_id or snapshot.id, code=snapshot.error_code)
        if run._fail(error, status):
            self._on_resolved(run)

    def _status_error(self, run: Run, error: APIStatusError) -> None:
        verdict = classify_status(error, create=False)
        if verdict is Verdict.WAIT:
            # After a 429 the limiter holds it back; after a Retry-After on any
            # other status, it waits that long itself (within its deadline).
            run._poll.not_before = self._loop.time() + wait_as_told(error)
            self._push(run, run._poll.not_before)
        elif verdict is Verdict.RETRY and not (
            isinstance(error, RunNotFoundError) and run._poll.errors + 1 >= MAX_NOT_FOUND
        ):
            self._retry_later(run, error)
        else:
            self._fail(run, error)

    def _protocol_error(self, run: Run, error: ProtocolError) -> None:
        self._stats.poll_errors += 1
        if run._poll.errors + 1 >= MAX_PROTOCOL_ERRORS:
            self._fail(run, error)
        else:
            self._retry_later(run, error)

    def _retry_later(self, run: Run, error: GPTImageError) -> None:
        run._poll.errors += 1
        logger.debug("poll of run %s failed (%s); retrying", run.run_id, error)
        scale = self.model.quantile(0.5) * MIN_STEP if self.model.ready else self._rtt
        base = max(self._limiter.interval, scale)
        delay = backoff_ceiling(run._poll.errors, base=base, cap=self._limiter.window)
        # Jitter keeps a crowd of runs that failed together from retrying together.
        self._push(run, self._loop.time() + poll_jitter(delay))

    def _fail(self, run: Run, error: GPTImageError) -> None:
        status = RunStatus.FAILED if isinstance(error, RunFailedError) else RunStatus.ERRORED
        if run._fail(error, status):
            self._on_resolved(run)
        self._unscout(run)

    def _timeout_message(self, run: Run) -> str:
        return _timeout_message(run, run._poll.status_word)

    def __repr__(self) -> str:
        return f"<PollScheduler {self._provider.name} in_flight={self._in_flight} {self.model!r}>"


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _timeout_message(run: Run, word: str | None = None) -> str:
    seen = "" if word is None else f", last seen with status {word!r}"
    return (
        f"run {run.run_id} was not done by the session's run_timeout "
        f"(polled {run._poll.polls} times{seen}); it may still finish: attach() it to keep waiting"
    )
