"""The one classifier of errors, shared by creates, polls and downloads: a table per decision."""

from __future__ import annotations

import logging

import pytest

from gptimage_async._classify import (
    Verdict,
    classify_no_answer,
    classify_status,
    classify_unreadable,
    is_transient_status,
)
from gptimage_async._exceptions import status_error
from gptimage_async._retry import BACKOFF_BASE, BACKOFF_MAX, backoff_ceiling, backoff_delays
from gptimage_async._transport import SendError

R, W, F, U = Verdict.RETRY, Verdict.WAIT, Verdict.FAIL, Verdict.UNCERTAIN


@pytest.mark.parametrize(
    ("status", "code", "on_create", "on_poll"),
    [
        (400, "invalid_input", F, F),
        (401, None, F, F),
        (402, None, F, F),
        (403, None, F, F),
        (404, None, F, R),  # a run can be briefly invisible right after its create
        (408, None, R, R),
        (429, "RATE_LIMITED", W, W),
        (429, None, W, W),
        (429, "USAGE_EXCEEDED", F, F),  # the quota is gone: waiting cannot help
        (500, None, U, R),  # a create's run may exist
        (502, None, U, R),
        (503, None, R, R),  # refused before any processing
        (504, None, U, R),
        (418, None, F, F),
    ],
)
def test_status_verdicts(
    status: int, code: str | None, on_create: Verdict, on_poll: Verdict
) -> None:
    error = status_error(status, "m", code=code)
    assert classify_status(error, create=True) is on_create
    assert classify_status(error, create=False) is on_poll


def test_no_answer_is_uncertain_only_for_a_create_that_may_have_arrived() -> None:
    refused = SendError("could not connect", maybe_received=False)
    reset = SendError("reset", maybe_received=True)
    assert classify_no_answer(refused, create=True) is R
    assert classify_no_answer(reset, create=True) is U
    assert classify_no_answer(reset, create=False) is R
    assert classify_unreadable(create=True) is U
    assert classify_unreadable(create=False) is R


@pytest.mark.parametrize(
    ("status", "transient"),
    [(200, False), (304, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_downloads_sort_statuses_the_same_way(status: int, transient: bool) -> None:
    assert is_transient_status(status) is transient


def test_every_branch_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gptimage_async")
    classify_status(status_error(503, "down"), create=True)
    classify_no_answer(SendError("reset", maybe_received=True), create=True)
    classify_unreadable(create=False)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 3
    assert "retry" in caplog.records[0].getMessage()
    assert "uncertain" in caplog.records[1].getMessage()


def test_one_backoff_formula() -> None:
    assert [backoff_ceiling(n, base=0.5, cap=10.0) for n in range(6)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 10.0,
    ]  # fmt: skip
    assert backoff_ceiling(10_000, base=1e-3, cap=float("inf")) == 1e-3 * 2.0**16  # no overflow
    assert (BACKOFF_BASE, BACKOFF_MAX) == (0.5, 10.0)  # the downloads' figures
    delays = backoff_delays()
    for n in range(8):
        assert 0.0 <= next(delays) <= backoff_ceiling(n)


@pytest.mark.parametrize(
    ("status", "on_create", "on_poll"),
    [(503, W, W), (502, U, W), (504, U, W), (408, W, W), (500, U, W), (400, F, F), (429, W, W)],
)
def test_a_retry_the_server_gave_a_wait_for_is_a_wait(
    status: int, on_create: Verdict, on_poll: Verdict
) -> None:
    # Retry-After on any status: a wait as told, costing no attempt; a create that
    # may have had effect stays uncertain whatever the server says.
    error = status_error(status, "m", retry_after=3.0)
    assert classify_status(error, create=True) is on_create
    assert classify_status(error, create=False) is on_poll
