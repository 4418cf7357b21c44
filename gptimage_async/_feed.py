"""The requests of a bulk job, handed out in order, each marked if it is one of the last.

A bulk job (``as_completed``, ``generate_many``, the CLI's ``batch``) ends
when its last run is done and polled. Its last creates therefore go ahead of
polls (``PRIORITY_LAST_CREATE``): the runs they start are the ones the job
waits for, and the polls they overtake (runs already finished) then fill the
budget while those last runs are in progress, instead of the budget idling
after the last create. How many creates that takes is the session's
``tail_size()``: the believed rate (requests per second) times the time a run
may take, so that the overtaken polls cover the last run's duration.

A sized input (a list) says how many requests remain. Any other iterable is
read ahead by up to ``tail_size()`` requests (at most ``MAX_LOOKAHEAD``) so
the end is seen coming; an error the iterable raises is held until the
requests before it have been handed out, as if nothing were read ahead.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Generic, TypeVar

__all__ = ["MAX_LOOKAHEAD", "Countdown", "is_last"]

T = TypeVar("T")

#: An unsized iterable is never read further ahead than this many requests.
MAX_LOOKAHEAD = 1024


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
