"""Retry-After in every form, capped; backoff delays jittered and bounded."""

from __future__ import annotations

import email.utils

import pytest

from gptimage_async._retry import MAX_RETRY_AFTER, backoff_delays, parse_retry_after

NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.35"}, 0.35),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "100000"}, MAX_RETRY_AFTER),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
        ({"retry-after": email.utils.formatdate(NOW + 7, usegmt=True)}, 7.0),
        ({"retry-after": email.utils.formatdate(NOW - 60, usegmt=True)}, 0.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=clock) == expected


def test_backoff_delays_grow_and_stay_capped() -> None:
    delays = backoff_delays(0.1, cap=1.0)
    values = [next(delays) for _ in range(50)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert max(values[:2]) <= 0.2
    assert max(values[10:]) > 0.2  # the ceiling grew past the base
