"""The one bulk engine: a job's creates fed through a window, its last ones marked, a clean stop.

Three callers run many creates: ``Session.as_completed`` / ``generate_many``,
:class:`~gptimage_async.Batch` and the CLI's ``generate``. They share:

- **The tail rule** (:class:`TailRule`). A bulk job ends when its last run is
  done and polled, so its last creates go ahead of polls
  (``submit(ahead_of_polls=True)``, ``PRIORITY_LAST_CREATE`` in the limiter):
  the runs they start are the ones the job waits for, and the polls they
  overtake (runs already finished) then fill the budget while those last runs
  are in progress, instead of the budget idling after the last create. How
  many creates that takes is ``Session.tail_size()``: the believed rate
  (requests per second) times the time a run may take. This module is the
  only place that *decides* which creates are marked; the creator, limiter
  and poll scheduler only act on the mark.
- **The feed** (:class:`Countdown`). A sized input (a list) says how many
  requests remain. Any other iterable is read ahead by up to the tail
  (at most ``MAX_LOOKAHEAD``) so the end is seen coming; an error the
  iterable raises is held until the requests before it have been handed out,
  as if nothing were read ahead.
- **The clean stop** (:class:`Sender`). After ``stop()`` nothing is created:
  a create still waiting for the rate limiter is dropped, a retry is not
  sent. A create already on the wire is let be answered, so the run it made
  (paid for) gets an id to record.
- **The window** (:func:`stream`): at most a window of runs started ahead of
  the consumer, so a consumer that stops pulling stops the creates too.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from ._exceptions import ConfigurationError, GPTImageError, InvalidRequestError, SessionClosedError
from ._models import ImageRequest

if TYPE_CHECKING:
    from ._budget import Limiter
    from ._durations import DurationModel
    from ._lifecycle import Lifecycle
    from ._models import Result
    from ._run import Run

__all__ = [
    "FEEDERS",
    "MAX_LOOKAHEAD",
    "TAIL_FACTOR",
    "TAIL_QUANTILE",
    "WINDOW_FACTOR",
    "Countdown",
    "Sender",
    "Stopped",
    "TailRule",
    "check_many",
    "default_window",
    "in_input_order",
    "is_last",
    "stream",
    "tail_size",
]

T = TypeVar("T")

#: An unsized iterable is never read further ahead than this many requests.
MAX_LOOKAHEAD = 1024
#: Workers that feed creates for ``as_completed`` / ``generate_many``: enough to
#: keep the limiter busy when each create takes a round trip.
FEEDERS = 32
#: ``as_completed`` / ``generate_many`` without ``concurrency`` start at most this
#: many times the runs the key's budget keeps in flight ahead of their consumer.
WINDOW_FACTOR = 2.0
#: A bulk job's last creates go ahead of polls for the rate times this
#: quantile of the run duration (:func:`tail_size`).
TAIL_QUANTILE = 0.99
TAIL_FACTOR = 2.0


def tail_size(limiter: Limiter | None, model: DurationModel | None, rate: float) -> int:
    """How many of a bulk job's last creates go ahead of polls (``int``, >= 1).

    ``TAIL_FACTOR`` (2) times the believed ``rate`` (requests per second)
    times the time a run may take: ``model``'s ``TAIL_QUANTILE`` (99th
    percentile) duration, or the limiter's window (seconds) before enough
    runs have finished to know it. While those creates go out, about half of
    them worth of polls falls due and waits; those polls then fill the budget
    for as long as the job's last runs take. 1 with no limiter (not open).
    """
    if limiter is None or model is None:
        return 1
    longest = model.quantile(TAIL_QUANTILE) if model.ready else limiter.window
    return max(1, math.ceil(TAIL_FACTOR * rate * longest))


def default_window(limiter: Limiter | None, model: DurationModel | None, rate: float) -> int:
    """Runs ``as_completed`` / ``generate_many`` may start ahead of their consumer.

    Without ``concurrency``: ``WINDOW_FACTOR`` (2) times the runs the key's
    budget can keep in flight (its believed ``rate`` times the longer of the
    limiter's window and ``model``'s 95th-percentile run duration), at least
    ``FEEDERS``. So a consumer that keeps pulling is never held back by it,
    and one that stops leaves at most this many runs nobody takes.
    """
    if limiter is None or model is None:
        return FEEDERS
    duration = limiter.window
    if model.ready:
        duration = max(duration, model.quantile(0.95))
    return max(FEEDERS, math.ceil(WINDOW_FACTOR * rate * duration))


def check_many(requests: object) -> None:
    """Raise ``InvalidRequestError`` for a single prompt or request passed as a job."""
    # A str is an iterable of characters: one paid run per letter is never what was meant.
    if isinstance(requests, str | bytes | bytearray | ImageRequest):
        raise InvalidRequestError(
            "requests must be an iterable of prompts or ImageRequests, not a single "
            f"{type(requests).__name__}; wrap it in a list, or use generate()/submit()"
        )


def check_concurrency(concurrency: object) -> None:
    """Raise ``ConfigurationError`` unless ``concurrency`` is ``None`` or an int >= 1, not a bool.

    The bulk verbs' option, checked the same way by the async and the sync API.
    """
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ConfigurationError("concurrency must be a positive int or None")


def is_last(*, before: int, after: int, tail: int, longer_than: int) -> bool:
    """Whether a request with ``before`` requests ahead of it and ``after`` behind is marked.

    One of the last ``tail``, in a job longer than ``longer_than``: a shorter
    job has no tail (all its creates ahead of every poll would hold results
    back for nothing, and a stream of small jobs would starve the polls).
    """
    return before >= longer_than and after < tail


class Countdown(Generic[T]):
    """Hands out ``items`` in order; ``take()`` also says whether one is among the last.

    ``tail`` is read at each ``take()``: the number of last items that are
    marked (an ``int`` >= 0, which may change as the session learns).
    ``sized``: what ``len()`` counts the items by, when ``items`` wraps a
    sized input (``enumerate(a_list)``); by default ``items`` itself if sized.
    ``longer_than`` (default ``tail``): items are marked only after this many
    came before them, so a short job has no tail.
    """

    __slots__ = ("_ahead", "_error", "_exhausted", "_items", "_longer", "_sized", "_tail", "_taken")

    def __init__(
        self,
        items: Iterable[T],
        tail: Callable[[], int],
        *,
        sized: object = None,
        longer_than: Callable[[], int] | None = None,
    ) -> None:
        if sized is None:
            sized = items
        self._sized: Sized | None = sized if isinstance(sized, Sized) else None
        self._items: Iterator[T] = iter(items)
        self._tail = tail
        self._longer = tail if longer_than is None else longer_than
        self._taken = 0
        self._ahead: collections.deque[T] = collections.deque()
        self._error: Exception | None = None
        self._exhausted = False

    def take(self) -> tuple[T, bool]:
        """The next item and whether it is one of the last ``tail()`` (see ``is_last``).

        Raises ``StopIteration`` when there is none left, or the error the
        iterable raised, in its place in the order.
        """
        tail = self._tail()
        before, longer = self._taken, self._longer()
        if self._sized is not None:
            item = next(self._items)  # StopIteration, or the iterable's error, as it comes
            self._taken += 1
            # A list that grows while it is read is still counted right.
            after = len(self._sized) - self._taken
            return item, is_last(before=before, after=after, tail=tail, longer_than=longer)
        self._fill(min(tail, MAX_LOOKAHEAD) + 1)
        if not self._ahead:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopIteration
        item = self._ahead.popleft()
        self._taken += 1
        # Whatever remains is in the buffer once the end was read.
        after = len(self._ahead)
        last = is_last(before=before, after=after, tail=tail, longer_than=longer)
        return item, last and self._exhausted and self._error is None

    def _fill(self, want: int) -> None:
        ahead = self._ahead
        while len(ahead) < want and not self._exhausted:
            try:
                ahead.append(next(self._items))
            except StopIteration:
                self._exhausted = True
            except Exception as exc:  # the caller's iterable: raised in its place
                self._error = exc
                self._exhausted = True


class TailRule:
    """Which of a bulk job's creates are its last ones (its *tail*): the one place that decides.

    ``size`` gives the tail's length (``Session.tail_size``: an ``int`` >= 1,
    read at each decision since it grows as the session learns); ``waiting``
    the creates already waiting for a rate-limit slot: the first marked create
    promotes them ahead of polls too, so they count against the tail.
    A create is marked when it is one of the last ``left()`` of a job longer
    than ``size()`` (see :func:`is_last`). Get one with ``Session.tail_rule()``.
    """

    __slots__ = ("_size", "_waiting")

    def __init__(self, size: Callable[[], int], waiting: Callable[[], int] = lambda: 0) -> None:
        self._size = size
        self._waiting = waiting

    def size(self) -> int:
        """How many of a job's last creates go ahead of polls."""
        return self._size()

    def left(self) -> int:
        """The tail less the creates already waiting (they are promoted with the first)."""
        return max(0, self._size() - self._waiting())

    def marks(self, *, before: int, after: int) -> bool:
        """Whether the create with ``before`` creates ahead of it and ``after`` behind is marked."""
        return is_last(before=before, after=after, tail=self.left(), longer_than=self.size())

    def countdown(self, items: Iterable[T], *, sized: object = None) -> Countdown[T]:
        """``items`` handed out in order, each with this rule's mark (see :class:`Countdown`)."""
        return Countdown(items, self.left, sized=sized, longer_than=self.size)


class Stopped(Exception):
    """Raised by a :class:`Sender`'s ``on_send`` once it stops: that create is not sent."""


#: ``Session.submit``'s shape, as a :class:`Sender` calls it.
Submit = Callable[..., Awaitable["Run"]]


class Sender:
    """Sends a bulk job's creates and stops them cleanly.

    ``submit`` is ``Session.submit`` (or a function of the same shape).
    :meth:`send` returns the run, or ``None`` when :meth:`stop` came first:
    a create waiting for the rate limiter is then dropped (cancelled) and a
    retry is not sent. A create already on the wire is never cancelled by a
    stop: it is let be answered, so its run (paid for) can be recorded.
    ``on_wire`` counts creates sent and not yet answered.
    """

    __slots__ = ("_submit", "_unsent", "on_wire", "stopping")

    def __init__(self, submit: Submit) -> None:
        self._submit = submit
        self._unsent: set[anyio.CancelScope] = set()
        self.stopping = False
        self.on_wire = 0

    def stop(self) -> None:
        """Send no more creates; drop those waiting for the limiter. Idempotent."""
        self.stopping = True
        for scope in list(self._unsent):
            scope.cancel()

    async def send(
        self,
        request: ImageRequest,
        *,
        last: bool = False,
        on_send: Callable[[], None] | None = None,
    ) -> Run | None:
        """Create a run for ``request`` unless stopped; ``last``: one of the job's tail.

        ``on_send`` is called as each attempt goes on the wire (after the stop
        check, before the send): where a journal writes its intent. If it
        raises, nothing is sent and the error propagates. Raises the create's
        typed error as ``Session.submit`` does.
        """
        if self.stopping:
            return None
        unsent = anyio.CancelScope()
        self._unsent.add(unsent)
        sent = False

        def sending() -> None:
            nonlocal sent
            if self.stopping:
                raise Stopped  # a retry, or a stop that came as the limiter let it through
            if on_send is not None:
                on_send()
            if not sent:
                sent = True
                self._unsent.discard(unsent)  # on the wire: a stop must not cancel it
                self.on_wire += 1

        try:
            with unsent:
                return await self._submit(request, on_send=sending, ahead_of_polls=last)
            return None  # cancelled by stop() while waiting for the limiter
        except Stopped:
            return None
        finally:
            self._unsent.discard(unsent)
            if sent:
                self.on_wire -= 1


async def stream(
    source: Countdown[tuple[int, ImageRequest | str]],
    create: Callable[[ImageRequest | str, int, bool, Callable[[], None]], Awaitable[Run]],
    *,
    full: Callable[[int], bool],
    feeders: int,
    tasks: set[asyncio.Task[None]],
    keep: Lifecycle | None = None,
) -> AsyncGenerator[Run, None]:
    """Runs created from ``source``, yielded as each resolves (``as_completed``'s engine).

    ``create(item, index, last, on_send)`` makes the run (a failed create is a
    run carrying its error; ``on_send`` as ``Session.submit``'s); ``full(ahead)``
    says whether ``ahead`` runs started and not yet yielded fill the window;
    ``feeders`` tasks create at once, each kept in ``tasks`` while it lives
    (the session cancels them when it closes); a cut lets a create on the
    wire be answered (its run is held) and sends no other. An error the
    ``source`` iterable raised is raised after every run created before it
    (paid for) was yielded. ``keep`` (the session's ``Lifecycle``) is told of
    the runs resolved and not yet yielded: if the stream is cut (closed early,
    or the session closes), they are kept in ``session.runs.undelivered``.
    """
    # Feeders put resolved runs here; None when a feeder ends, or an error that
    # is a bug (never a hang).
    done: asyncio.Queue[Run | BaseException | None] = asyncio.Queue()
    source_error: list[Exception] = []
    feeders_left = feeders
    outstanding = 0
    # Runs started and not yet handed to the consumer. Bounded by the window, so
    # a consumer that stops pulling (a ``break`` with the generator still
    # referenced) stops the creates too: nothing is bought that nobody takes.
    ahead = 0
    room = asyncio.Event()
    # Created, so paid for: a run resolved and never yielded is never dropped unnamed.
    held = keep.holding() if keep is not None else None
    cut = False  # the stream ended: no create attempt goes on the wire after it
    on_wire: set[asyncio.Task[Any]] = set()  # feeders a cut lets have their create's answer

    def arrived(run: Run) -> None:
        if held is not None:
            held.add(run)
        done.put_nowait(run)

    async def feed() -> None:
        nonlocal outstanding, ahead
        me = asyncio.current_task()
        assert me is not None

        def sending() -> None:
            if cut:
                raise Stopped  # a retry after the cut: not sent
            on_wire.add(me)  # a cut lets it be answered (see below)

        try:
            while True:
                while full(ahead):
                    room.clear()
                    await room.wait()
                ahead += 1
                try:
                    (index, item), last = source.take()
                except Exception as exc:
                    ahead -= 1
                    room.set()  # the next feeder must not wait forever
                    if not isinstance(exc, StopIteration):
                        source_error.append(exc)  # the caller's iterable failed
                    return
                try:
                    run = await create(item, index, last, sending)
                except Exception as exc:  # a bug, not a run's error: never a hang
                    done.put_nowait(exc)
                    return
                finally:
                    on_wire.discard(me)
                outstanding += 1
                run._future.add_done_callback(functools.partial(_call_with_run, arrived, run))
                if cut:
                    return
        finally:
            done.put_nowait(None)

    loop = asyncio.get_running_loop()
    started = [loop.create_task(feed()) for _ in range(feeders)]
    for task in started:
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    try:
        while feeders_left or outstanding:
            got = await done.get()
            if got is None:
                feeders_left -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                outstanding -= 1
                ahead -= 1  # handed over: its place goes to the next create
                room.set()
                if held is not None:
                    held.discard(got)
                yield got
        if source_error:
            raise source_error[0]
    finally:
        cut = True
        if keep is not None and held is not None:
            keep.release(held)
        stopped = [task for task in started if task not in on_wire]  # those end by themselves
        for task in stopped:
            task.cancel()
        await asyncio.gather(*stopped, return_exceptions=True)


async def in_input_order(
    runs: AsyncGenerator[Run, None],
    prepared: list[ImageRequest | GPTImageError],
    *,
    return_exceptions: bool,
    keep: Lifecycle | None = None,
) -> list[Result | GPTImageError]:
    """``generate_many``'s answer: each request's ``Result`` (or error) in input order.

    ``prepared`` holds each request, or the error its validation raised;
    ``runs`` (closed here) yields the runs of the valid ones, ``run.index``
    their place. With ``return_exceptions=False`` the first error is raised
    (and closing ``runs`` drops the creates not yet sent). ``keep`` (the
    session's ``Lifecycle``) holds the runs got until the list is returned:
    if the call is cut first (an error raised, a cancellation, the session's
    close) they go to ``session.runs.undelivered``.
    """
    out: list[Result | GPTImageError | None] = [
        entry if isinstance(entry, GPTImageError) else None for entry in prepared
    ]
    held = keep.holding() if keep is not None else None
    try:
        async for run in runs:
            assert run.index is not None
            if held is not None:
                held.add(run)
            error = run.error
            if error is not None and not return_exceptions:
                raise error
            out[run.index] = run._result_or_error()
    except BaseException:
        if keep is not None and held is not None:
            keep.release(held)
        raise
    finally:
        await runs.aclose()
    if None in out:
        # Only the session closing ends the feed early (it cancels the feeders):
        # creates already on the wire were answered and yielded, so these were never sent.
        if not return_exceptions:
            if keep is not None and held is not None:
                keep.release(held)
            raise _never_sent()
        out = [_never_sent() if entry is None else entry for entry in out]
    if keep is not None and held is not None:
        keep.release(held, delivered=True)
    return [entry for entry in out if entry is not None]


def _never_sent() -> SessionClosedError:
    return SessionClosedError(
        "the session was closed before this request was sent: "
        "no run was created and nothing was paid for"
    )


def _call_with_run(fn: Callable[[Run], None], run: Run, _future: object) -> None:
    """A future's done-callback that hands ``fn`` the resolved ``run`` (not the future)."""
    fn(run)
