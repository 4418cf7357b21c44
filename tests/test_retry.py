"""Retry-After in every form, capped; backoff delays jittered and bounded."""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time
from collections.abc import Iterator

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


# -- HTTP-dates are UTC in every form, whatever the local zone (issue 11, item 7) ----------

#: 2026-11-30 10:00:00 UTC, a Monday.
NOON_ISH = 1_796_032_800.0
ZONES = ["UTC", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe", "Pacific/Kiritimati"]
THREE_AHEAD = [
    "Mon, 30 Nov 2026 10:00:03 GMT",  # IMF-fixdate
    "Monday, 30-Nov-26 10:00:03 GMT",  # RFC 850
    "Mon Nov 30 10:00:03 2026",  # asctime: no zone, UTC by definition
    "Mon Nov 30 10:00:03 2026 ",
    "Mon, 30 Nov 2026 10:00:03 -0000",  # "-0000": UTC, zone unknown
    "Mon, 30 Nov 2026 10:00:03 +0000",
    "Mon, 30 Nov 2026 10:00:03 UTC",
    "Mon, 30 Nov 2026 10:00:03",  # no zone at all: still UTC, never local
    "Mon, 30 Nov 2026 11:00:03 +0100",  # an explicit offset is honoured
]


@pytest.fixture(params=ZONES)
def local_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    try:
        yield request.param
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("date", THREE_AHEAD)
def test_http_dates_are_utc_in_every_zone(local_zone: str, date: str) -> None:
    assert parse_retry_after({"retry-after": date}, now=lambda: NOON_ISH) == pytest.approx(3.0)


def test_the_issue_input_in_a_subprocess_per_zone() -> None:
    code = (
        "from gptimage_async._retry import parse_retry_after as p;"
        f"print(p({{'retry-after': 'Mon Nov 30 10:00:03 2026'}}, now=lambda: {NOON_ISH}))"
    )
    for zone in ("America/New_York", "Asia/Tokyo"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "TZ": zone},
            capture_output=True,
            text=True,
            check=True,
        )
        assert float(out.stdout) == 3.0, (zone, out.stdout, out.stderr)


@pytest.mark.parametrize("bad_ms", ["junk", "", "nan", "inf", "-inf", "-250", " "])
def test_an_invalid_retry_after_ms_does_not_hide_retry_after(bad_ms: str) -> None:
    assert parse_retry_after({"retry-after-ms": bad_ms, "retry-after": "2"}, now=clock) == 2.0
    date = email.utils.formatdate(NOW + 5, usegmt=True)
    assert parse_retry_after({"retry-after-ms": bad_ms, "retry-after": date}, now=clock) == 5.0
    assert parse_retry_after({"retry-after-ms": bad_ms}, now=clock) is None


@pytest.mark.parametrize(
    "raw", ["Mon, 99 Nov 2026 10:00:03 GMT", "Mon Nov 30 25:61:03 2026", "30 Nov", "GMT", ""]
)
def test_an_unreadable_date_is_no_retry_after(raw: str) -> None:
    assert parse_retry_after({"retry-after": raw}, now=clock) is None
