"""A bulk job's requests, handed out in order, its last ones marked (``_bulk.Countdown``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gptimage_async._bulk import MAX_LOOKAHEAD, Countdown


def _drain(countdown: Countdown[int]) -> list[tuple[int, bool]]:
    out = []
    while True:
        try:
            out.append(countdown.take())
        except StopIteration:
            return out


@pytest.mark.parametrize("tail", [0, 1, 3, 10, 50])
def test_the_last_tail_items_of_a_list_are_marked(tail: int) -> None:
    items = list(range(10))
    taken = _drain(Countdown(items, lambda: tail))
    assert [item for item, _ in taken] == items
    # Only a job longer than its tail has one.
    assert [last for _, last in taken] == [tail <= i and i >= 10 - tail for i in items]


@pytest.mark.parametrize("tail", [0, 1, 3, 10, 50])
def test_a_generator_is_marked_the_same_by_reading_ahead(tail: int) -> None:
    taken = _drain(Countdown((i for i in range(10)), lambda: tail))
    assert taken == [(i, tail <= i and i >= 10 - tail) for i in range(10)]


def test_a_wrapped_sized_input_is_counted_by_what_it_wraps() -> None:
    requests = ["a", "b", "c", "d"]
    countdown = Countdown(enumerate(requests), lambda: 2, sized=requests, longer_than=lambda: 0)
    assert [countdown.take() for _ in range(4)] == [
        ((0, "a"), False),
        ((1, "b"), False),
        ((2, "c"), True),
        ((3, "d"), True),
    ]
    with pytest.raises(StopIteration):
        countdown.take()


def test_a_list_that_grows_while_it_is_read_is_counted_as_it_is() -> None:
    items = [0, 1, 2]
    countdown = Countdown(items, lambda: 1, longer_than=lambda: 0)
    assert countdown.take() == (0, False)
    items.extend([3, 4])
    assert _drain(countdown) == [(1, False), (2, False), (3, False), (4, True)]


def test_the_tail_is_read_at_each_take() -> None:
    tails = iter([0, 0, 5, 5, 5])
    countdown = Countdown(list(range(5)), lambda: next(tails, 5), longer_than=lambda: 1)
    assert [last for _, last in _drain(countdown)] == [False, False, True, True, True]


@pytest.mark.parametrize("n", [1, 5, 40, 41, 60])
def test_a_job_no_longer_than_its_tail_has_none(n: int) -> None:
    # Every create of a short job ahead of every poll would only hold results
    # back, and a stream of small jobs would starve the polls.
    taken = _drain(Countdown(list(range(n)), lambda: 10, longer_than=lambda: 40))
    assert [i for i, last in taken if last] == [i for i in range(n) if i >= 40 and i >= n - 10]


def test_a_generator_is_read_no_further_ahead_than_the_tail() -> None:
    pulled: list[int] = []

    def requests() -> Iterator[int]:
        for i in range(100):
            pulled.append(i)
            yield i

    countdown = Countdown(requests(), lambda: 3)
    assert countdown.take() == (0, False)
    assert len(pulled) == 1 + 3  # the one handed out, and the tail to see past it
    for _ in range(10):
        countdown.take()
    assert len(pulled) == 11 + 3


def test_lookahead_is_bounded_whatever_the_tail() -> None:
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        while True:
            pulled += 1
            yield pulled

    countdown = Countdown(endless(), lambda: 10**9)
    assert countdown.take() == (1, False)
    assert pulled == MAX_LOOKAHEAD + 1  # the one handed out, and MAX_LOOKAHEAD


@pytest.mark.parametrize("tail", [0, 2, 20])
def test_an_error_in_the_iterable_comes_in_its_place(tail: int) -> None:
    def requests() -> Iterator[int]:
        yield 0
        yield 1
        raise ValueError("line 3 is unreadable")

    countdown = Countdown(requests(), lambda: tail)
    # Items before the error are handed out first, none marked last: the job
    # does not end there, it fails.
    assert countdown.take() == (0, False)
    assert countdown.take() == (1, False)
    with pytest.raises(ValueError, match="line 3"):
        countdown.take()
    with pytest.raises(StopIteration):
        countdown.take()


def test_an_error_from_a_sized_input_is_raised_as_it_comes() -> None:
    class Broken(list[int]):
        def __iter__(self) -> Iterator[int]:
            yield 7
            raise OSError("disk gone")

    countdown = Countdown(Broken([7, 8]), lambda: 1)
    assert countdown.take() == (7, False)
    with pytest.raises(OSError, match="disk gone"):
        countdown.take()
