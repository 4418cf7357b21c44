"""The one classifier of errors, shared by creates, polls and downloads: a table per decision."""

from __future__ import annotations

import logging

import pytest

from gptimage_async._classify import (
    IncompleteBody,
    Kind,
    Verdict,
    classify_no_answer,
    classify_status,
    is_transient_status,
    read,
    read_poll,
)
from gptimage_async._exceptions import (
    EndpointNotFoundError,
    GPTImageError,
    ProtocolError,
    TLSCertificateError,
    status_error,
)
from gptimage_async._retry import BACKOFF_BASE, BACKOFF_MAX, backoff_ceiling, backoff_delays
from gptimage_async._transport import Answer, SendError

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


def _never(answer: Answer) -> None:
    raise AssertionError("decode must not be called")


CERT = SendError("bad cert", maybe_received=False, certificate_host="api.example")


@pytest.mark.parametrize(
    ("outcome", "on_create", "on_poll", "on_download"),
    [
        (SendError("refused", maybe_received=False), R, R, R),
        (SendError("reset", maybe_received=True), U, R, R),
        (CERT, F, F, F),  # issue 20 item 11: never retried
        (ProtocolError("header over the limit"), U, R, F),  # an answer came
        (IncompleteBody("cut"), U, R, R),
        (status_error(404, "m"), F, R, F),
        (status_error(503, "m", retry_after=2.0), W, W, W),
        (status_error(503, "m"), R, R, R),
        (status_error(500, "m"), U, R, R),
        (status_error(429, "m"), W, W, R),  # a download has no limiter to wait on
    ],
)
def test_one_reader_for_every_kind(
    outcome: GPTImageError, on_create: Verdict, on_poll: Verdict, on_download: Verdict
) -> None:
    kinds: tuple[Kind, ...] = ("create", "poll", "download")
    for kind, wanted in zip(kinds, (on_create, on_poll, on_download), strict=True):
        reading = read(outcome, _never, kind=kind, url="https://api.example/v1/runs?k=s")
        assert reading.verdict is wanted, kind
        assert reading.error is not None
        assert not isinstance(reading.error, SendError)  # always the public class
        assert reading.answered is not isinstance(outcome, SendError)
        if wanted is W:
            # A 429's wait is the limiter's; any other Retry-After is the caller's.
            assert reading.wait == (0.0 if outcome.__class__.__name__ == "RateLimitError" else 2.0)


def test_the_reader_decodes_an_answer_and_reads_the_errors_decode_raises() -> None:
    ok = read(Answer(200, {}, b"x", 0.1), lambda a: a.body * 2, kind="poll")
    assert (ok.verdict, ok.value, ok.error) == (Verdict.OK, b"xx", None)

    def cut(answer: Answer) -> bytes:
        raise IncompleteBody("the image has no end")

    assert read(Answer(200, {}, b"", 0.1), cut, kind="download").verdict is R


def test_a_certificate_refused_is_public_and_names_the_host() -> None:
    reading = read(CERT, _never, kind="create")
    assert isinstance(reading.error, TLSCertificateError)
    assert reading.error.host == "api.example"


def test_a_404_on_a_create_hints_at_the_base_url_without_secrets() -> None:
    reading = read(
        status_error(404, "Not Found"),
        _never,
        kind="create",
        url="https://user:pw@api.example/wrong/v1/runs?token=s",
    )
    assert reading.verdict is F
    assert isinstance(reading.error, EndpointNotFoundError)
    text = str(reading.error)
    assert "https://api.example/wrong/v1/runs" in text and "base URL" in text
    assert "pw" not in text and "token" not in text


@pytest.mark.parametrize(
    ("status", "transient"),
    [(200, False), (304, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_downloads_sort_statuses_the_same_way(status: int, transient: bool) -> None:
    assert is_transient_status(status) is transient


def test_every_verdict_is_logged_once_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gptimage_async")
    read(status_error(503, "down"), _never, kind="create")
    read(SendError("reset", maybe_received=True), _never, kind="create")
    read(ProtocolError("garbled"), _never, kind="poll")
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


def test_read_poll_decodes_with_the_providers_adapter() -> None:
    from gptimage_async._providers import get_provider

    provider = get_provider("runbase")
    body = b'{"id": "run_1", "status": "succeeded", "output": {"urls": ["https://i.x/a.png"]}}'
    reading = read_poll(Answer(200, {}, body, 0.01), provider, "run_1")
    assert reading.verdict is Verdict.OK and reading.value is not None
    assert list(reading.value.urls) == ["https://i.x/a.png"]
    assert read_poll(CERT, provider, "run_1").verdict is F
    assert read_poll(ProtocolError("bad"), provider, "run_1").verdict is R
