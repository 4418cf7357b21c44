"""Run durations shared by every process on a key: the fleet learns one duration model.

Each process polls only its own runs, so alone it learns how long runs take
from its share of them: with four processes, a quarter. Its model is then
ready later (``_durations.MIN_OBSERVATIONS`` finished runs), fitted on fewer
runs, and its first polls probe (cold start) for longer; every process pays
that learning again, where one process would pay it once (issue 22: a fleet
polled about 1.07 times per run where one process polls 1.01).

So with ``redis=`` each process appends the durations it saw (``(lo, hi)``
seconds of age: done after ``lo``, by ``hi``, as ``DurationModel.observe``
takes them) to a capped Redis stream under the key's budget name, every
``sync_every(window)`` seconds, and feeds the other processes' entries into
its own model (``DurationModel.restore``): every process polls from the
fleet's runs, as one process would. Its own change detector still watches
only its own runs. The stream holds numbers only (never a key, a URL or a
prompt), is capped at ``STREAM_ENTRIES`` entries and expires ``STREAM_TTL``
seconds after the last write.

Redis not answering is never an error here: the process then learns from its
own runs, as it always could, and catches up with the fleet when Redis answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import fleet_scouts
from .protocol import SharedBudget
from .queue import _raise_if_cancelled

if TYPE_CHECKING:
    from .._durations import DurationModel
    from .fleet_scouts import Scouting
    from .protocol import Limiter

__all__ = [
    "BACKLOG",
    "STREAM_ENTRIES",
    "STREAM_TTL",
    "DurationFeed",
    "share_durations",
    "sync_every",
]

logger = logging.getLogger("gptimage_async")

#: Entries the stream keeps (one per process per sync with news): a few hundred
#: runs, about ``_durations.WINDOW``, the most one model uses.
STREAM_ENTRIES = 256
#: Entries a process that joins with a cold model reads back from the stream.
BACKLOG = 64
#: Entries read per sync at most (the rest come with the next one).
READ_MAX = 256
#: The stream outlives its last write this long (seconds): a fleet that starts
#: again within it starts from the runs its last processes saw.
STREAM_TTL = 24 * 3600.0
#: Seconds between syncs: this share of the rate window, within these bounds
#: (a window of 10 s: 1 s; a test's or a compressed benchmark's window: faster).
SYNC_WINDOW_SHARE = 0.1
SYNC_MIN = 0.02
SYNC_MAX = 1.0
#: News kept for the fleet while Redis is away (the most recent ones).
PENDING_MAX = 128
#: After a failed sync, wait this many sync intervals (Redis away: no storm of retries).
FAILED_WAIT = 8


def sync_every(window: float) -> float:
    """Seconds between two syncs for a rate window of ``window`` seconds."""
    return min(SYNC_MAX, max(SYNC_MIN, SYNC_WINDOW_SHARE * window))


def stream_key(budget: str) -> str:
    """The stream's Redis key: ``gptimage:{<budget>}:durations`` (``budget``: ``budget_id``)."""
    return f"gptimage:{{{budget}}}:durations"


def encode(pairs: Iterable[tuple[float, float]]) -> str:
    """``(lo, hi)`` pairs as one compact string (milliseconds' tenths are plenty)."""
    return " ".join(f"{lo:.4f} {hi:.4f}" for lo, hi in pairs)


def decode(text: Any) -> list[tuple[float, float]]:
    """The pairs of ``encode``; anything unreadable is skipped (another version wrote it)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        return []
    try:
        numbers = [float(x) for x in text.split()]
    except ValueError:
        return []
    pairs = zip(numbers[0::2], numbers[1::2], strict=False)
    return [(lo, hi) for lo, hi in pairs if math.isfinite(hi) and 0.0 <= lo < hi]


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


class DurationFeed:
    """Keeps one process's ``DurationModel`` and the fleet's stream of durations in step.

    ``budget`` returns where the key's budget lives now (``Limiter.shared``: a
    limiter that follows a new primary after a failover hands out its new
    client); ``None`` stops sharing. ``sync()`` is one round trip: it sends
    what this process's model learned since the last one and feeds the
    model what the others sent. It raises what redis-py raises. ``backlog``:
    a cold model's first sync takes the stream's last ``BACKLOG`` entries
    (runs the fleet saw before this process joined); False: only later ones.
    ``scouts``: the lane's poll scheduler, for the fleet's cold start (one
    scout for every process: ``fleet_scouts``), with ``lease`` the seconds
    its scout lease outlives a renewal; ``None``: each process scouts on its own.
    """

    def __init__(
        self,
        budget: Callable[[], SharedBudget | None],
        model: DurationModel,
        *,
        backlog: bool = True,
        scouts: Scouting | None = None,
        lease: float = 20.0,
    ) -> None:
        self._budget = budget
        self._scouts = scouts
        self._lease_ms = max(1, int(lease * 1000))
        self._syncs = 0  # syncs that got through
        self._holder: str | None = None  # the scout lease's holder at the last sync
        self.model = model
        self._backlog = backlog
        self.me = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._seen = model.observed
        self._changes = model.changes
        self._last_id: str | None = None  # the last stream entry read (None: none yet)
        self._pending: list[tuple[float, float]] = []  # news no sync got through yet
        #: Durations sent to the fleet, and taken from it.
        self.sent = 0
        self.taken = 0
        #: Syncs that failed (Redis away or slow).
        self.failures = 0

    def own_news(self) -> list[tuple[float, float]]:
        """The durations this process's model observed since the last call (oldest first).

        After a change of speed (the model restarted) the runs before it are
        not news: nothing is sent for that sync.
        """
        model = self.model
        if model.changes != self._changes:
            self._changes, self._seen = model.changes, model.observed
            return []
        new, self._seen = model.observed - self._seen, model.observed
        return model.observations(new) if new > 0 else []

    def take(self, pairs: list[tuple[float, float]]) -> None:
        """Feed the model durations another process saw (they are not this one's news)."""
        model = self.model
        before = model.observed
        model.restore(pairs)
        self._seen += model.observed - before
        self.taken += model.observed - before

    async def sync(self) -> None:
        """Send this process's news, read the fleet's since the last sync (one round trip)."""
        shared = self._budget()
        if shared is None:
            return
        key = stream_key(shared.budget)
        # Kept until a sync gets them through (Redis away: the last PENDING_MAX).
        self._pending = (self._pending + self.own_news())[-PENDING_MAX:]
        news = self._pending
        # A model warm already (a learned state loaded), or one told to start from
        # nothing (``remember=False``), takes only what comes from now on; a cold
        # one, the fleet's last runs too.
        first, warm = self._last_id is None, self.model.ready or not self._backlog
        cold = self.model.longest == 0.0
        scouts = self._scouts
        lease = scouts is not None and (cold or self._holder == self.me)
        async with asyncio.timeout(shared.timeout):
            async with shared.client.pipeline(transaction=False) as pipe:
                if news:
                    pipe.xadd(
                        key,
                        {"p": self.me, "d": encode(news)},
                        maxlen=STREAM_ENTRIES,
                        approximate=True,
                    )
                    pipe.pexpire(key, int(STREAM_TTL * 1000))
                if scouts is not None and lease:
                    want = fleet_scouts.wants_lease(
                        cold=cold, in_flight=len(scouts), syncs=self._syncs
                    )
                    scout = fleet_scouts.scout_key(shared.budget)
                    lease_args = (self.me, "1" if want else "0", self._lease_ms)
                    pipe.eval(fleet_scouts.SCOUT_SCRIPT, 2, scout, key, *lease_args)
                if first:
                    pipe.xrevrange(key, count=1 if warm else BACKLOG)
                else:
                    pipe.xrange(key, min=self._last_id, count=READ_MAX)
                replies = await pipe.execute()
        self.sent += len(news)
        self._pending = []
        self._syncs += 1
        taken = self.taken
        entries = list(replies[-1])
        if first:
            entries.reverse()
        for entry_id, fields in entries:
            entry = _text(entry_id)
            if entry == self._last_id:
                continue  # XRANGE's lower bound is inclusive
            self._last_id = entry
            fields = {_text(k): v for k, v in fields.items()}
            if _text(fields.get("p", b"")) == self.me or (first and warm):
                continue
            self.take(decode(fields.get("d")))
        if self._last_id is None:
            self._last_id = "0-0"  # an empty stream: everything from now on is news
        if scouts is not None:
            if cold and self.taken > taken:
                scouts.fleet_changed()  # a duration another process saw: parked runs go
            if lease:
                holder = replies[-2]
                self._holder = None if holder is None else _text(holder)
                fleet_scouts.apply(scouts, self._holder, self.me)

    def lost(self) -> None:
        """A sync failed: no scout elsewhere is known now, so this process may probe on its own.

        Else a scout seen elsewhere before Redis went away would keep this
        process's runs parked for as long as Redis stays away.
        """
        if self._scouts is not None:
            fleet_scouts.apply(self._scouts, None, self.me)

    async def run(self, every: float) -> None:
        """Sync every ``every`` seconds for good; a failed sync waits ``FAILED_WAIT`` of them.

        A cancel is honoured even when redis-py swallowed it (it may finish the
        command it was cancelled in and return normally): the loop would
        otherwise go on for good, and the lane's close wait for it.
        """
        task = asyncio.current_task()
        while True:
            _raise_if_cancelled(task)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.lost()
                logger.debug("durations not shared this time: %s", type(exc).__name__)
                await asyncio.sleep(FAILED_WAIT * every)
                continue
            _raise_if_cancelled(task)
            await asyncio.sleep(every)

    def __repr__(self) -> str:
        return f"<DurationFeed sent={self.sent} taken={self.taken} last={self._last_id}>"


async def share_durations(
    limiter: Limiter,
    model: DurationModel,
    backlog: bool = True,
    scouts: Scouting | None = None,
) -> None:
    """Share ``model``'s durations with every process on ``limiter``'s key, for good.

    Returns at once for a budget kept in this process (``limiter.shared`` is
    ``None``). A lane runs it as a task next to its scheduler; ``backlog`` is
    its ``remember`` option, ``scouts`` its scheduler (see ``DurationFeed``).
    """
    if limiter.shared is None:
        return
    every = sync_every(limiter.window)
    lease = fleet_scouts.lease_seconds(limiter.window)
    feed = DurationFeed(lambda: limiter.shared, model, backlog=backlog, scouts=scouts, lease=lease)
    await feed.run(every)
