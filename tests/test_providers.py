"""Provider adapters: every documented answer shape decodes; everything else is a typed error.

The decoders are pure functions of the body bytes, so the variants are fed in
directly here; the simulator-driven tests in test_errors.py send them over HTTP.
"""

from __future__ import annotations

import typing

import msgspec
import pytest

import gptimage_async as gi
from gptimage_async._providers import ADAPTERS, ProviderName, get_provider, provider_names
from gptimage_async._providers.apiinone import ApiInOne
from gptimage_async._providers.runbase import Runbase

runbase = Runbase()
aio = ApiInOne()


def body(obj: object) -> bytes:
    return msgspec.json.encode(obj)


def test_runbase_create_body_omits_unset_options() -> None:
    sent = msgspec.json.decode(runbase.encode_create(gi.ImageRequest("a lamp")))
    assert sent == {"model": "openai/gpt-image-1.5", "input": {"prompt": "a lamp"}}
    full = gi.ImageRequest("a lamp", "3:2", "high", ("https://x.io/r.png",))
    assert msgspec.json.decode(runbase.encode_create(full))["input"] == {
        "prompt": "a lamp",
        "aspect_ratio": "3:2",
        "quality": "high",
        "image_urls": ["https://x.io/r.png"],
    }


def test_apiinone_create_body() -> None:
    full = gi.ImageRequest("a lamp", "2:3", "medium", ("https://x.io/r.png",))
    assert msgspec.json.decode(aio.encode_create(full)) == {
        "model": "gpt-image-1-5",
        "prompt": "a lamp",
        "aspect_ratio": "2:3",
        "quality": "medium",
        "input_urls": ["https://x.io/r.png"],
    }


@pytest.mark.parametrize(
    ("obj", "status", "urls"),
    [
        ({"id": "r1", "status": "pending"}, gi.RunStatus.PENDING, []),
        ({"id": "r1", "status": "processing", "extra": {"x": 1}}, gi.RunStatus.RUNNING, []),
        (
            {"id": "r1", "status": "succeeded", "output": {"urls": ["u1", "u2"]}},
            gi.RunStatus.SUCCEEDED,
            ["u1", "u2"],
        ),
        ({"id": 17, "status": "SUCCEEDED", "output": ["u1"]}, gi.RunStatus.SUCCEEDED, ["u1"]),
        ({"id": "r1", "status": "failed", "error": "nsfw"}, gi.RunStatus.FAILED, []),
        (
            {"id": "r1", "status": "failed", "error": {"message": "m", "code": "c"}},
            gi.RunStatus.FAILED,
            [],
        ),
        ({"id": "r1", "status": "brand_new_state"}, gi.RunStatus.RUNNING, []),
    ],
)
def test_runbase_run_variants(
    obj: dict[str, object], status: gi.RunStatus, urls: list[str]
) -> None:
    snap = runbase.decode_run(body(obj), run_id=None)
    assert snap.status is status
    assert snap.urls == urls
    assert snap.id == str(obj["id"])


def test_runbase_failed_error_fields() -> None:
    snap = runbase.decode_run(
        body({"id": "r", "status": "failed", "error": {"message": "m", "code": "c"}}), run_id="r"
    )
    assert (snap.error_message, snap.error_code) == ("m", "c")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"id": "r", "status": "succ',
        b"[]",
        b'{"status": "pending"}',
        b'{"id": "r"}',
        b'{"id": "r", "status": 5}',
        b'{"id": "r", "status": "succeeded"}',
        b'{"id": "r", "status": "succeeded", "output": {"urls": []}}',
        b'{"id": "r", "status": "succeeded", "output": {"urls": [1]}}',
    ],
)
def test_runbase_unreadable_answers_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(gi.ProtocolError):
        runbase.decode_run(raw, run_id="r")


URL_SHAPES: list[dict[str, object]] = [
    {"output": {"urls": ["u"]}},
    {"output": ["u"]},
    {"output": [{"url": "u"}]},
    {"urls": ["u"]},
    {"result": {"urls": ["u"]}},
    {"images": [{"url": "u"}]},
]


@pytest.mark.parametrize("where", URL_SHAPES)
@pytest.mark.parametrize("word", ["completed", "SUCCEEDED", "Success"])
def test_apiinone_urls_found_in_every_location_and_shape(
    where: dict[str, object], word: str
) -> None:
    flat = {"id": "task_1", "status": word, "model": "gpt-image-1-5", **where}
    envelope = {
        "code": 200,
        "message": "success",
        "data": {"task_id": "task_1", "status": word, **where},
    }
    for obj in (flat, envelope):
        snap = aio.decode_run(body(obj), run_id="task_1")
        assert snap.status is gi.RunStatus.SUCCEEDED
        assert snap.urls == ["u"]
        assert snap.id == "task_1"


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("pending", gi.RunStatus.PENDING),
        ("QUEUED", gi.RunStatus.PENDING),
        ("IN_PROGRESS", gi.RunStatus.RUNNING),
        ("processing", gi.RunStatus.RUNNING),
        ("Running", gi.RunStatus.RUNNING),
        ("failed", gi.RunStatus.FAILED),
        ("ERROR", gi.RunStatus.FAILED),
        ("cancelled", gi.RunStatus.CANCELED),
        ("canceled", gi.RunStatus.CANCELED),
    ],
)
def test_apiinone_status_words(word: str, status: gi.RunStatus) -> None:
    assert aio.decode_run(body({"id": "t", "status": word}), run_id="t").status is status


def test_apiinone_envelope_with_error_code_is_an_error_even_on_http_200() -> None:
    raw = body({"code": 402, "message": "insufficient credits", "data": None})
    with pytest.raises(gi.InsufficientCreditsError) as info:
        aio.decode_run(raw, run_id=None)
    assert info.value.status_code == 402
    assert "insufficient" in info.value.message


def test_apiinone_succeeded_without_urls_is_a_protocol_error() -> None:
    with pytest.raises(gi.ProtocolError):
        aio.decode_run(
            body({"code": 200, "data": {"task_id": "t", "status": "completed"}}), run_id="t"
        )


@pytest.mark.parametrize(
    ("status", "raw", "cls", "code"),
    [
        (
            400,
            {"error": {"message": "bad", "code": "invalid_input"}},
            gi.BadRequestError,
            "invalid_input",
        ),
        (
            401,
            {"error": {"message": "no", "code": "invalid_api_key"}},
            gi.AuthenticationError,
            "invalid_api_key",
        ),
        (
            402,
            {"error": {"message": "no", "code": "insufficient_balance"}},
            gi.InsufficientCreditsError,
            "insufficient_balance",
        ),
        (
            403,
            {"error": {"message": "no", "code": "ip_not_allowed"}},
            gi.PermissionDeniedError,
            "ip_not_allowed",
        ),
        (
            404,
            {"error": {"message": "no", "code": "run_not_found"}},
            gi.RunNotFoundError,
            "run_not_found",
        ),
        (
            429,
            {"error": {"message": "slow", "code": "RATE_LIMITED"}},
            gi.RateLimitError,
            "RATE_LIMITED",
        ),
        (
            429,
            {"error": {"message": "gone", "code": "USAGE_EXCEEDED"}},
            gi.QuotaExceededError,
            "USAGE_EXCEEDED",
        ),
        (500, {"error": {"message": "oops", "code": "internal"}}, gi.ServerError, "internal"),
        (502, "<html>bad gateway</html>", gi.ServerError, None),
        (418, {"error": "teapot"}, gi.APIStatusError, None),
    ],
)
def test_runbase_error_statuses(
    status: int, raw: object, cls: type[gi.APIStatusError], code: str | None
) -> None:
    data = raw.encode() if isinstance(raw, str) else body(raw)
    err = runbase.decode_error(status, data, run_id="r", retry_after=1.5)
    assert type(err) is cls
    assert err.status_code == status and err.code == code and err.run_id == "r"
    assert err.retry_after == 1.5
    assert str(status) in str(err)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 429, 500])
def test_apiinone_error_statuses(status: int) -> None:
    raw = body({"error": {"code": status, "message": "m", "type": "t"}})
    err = aio.decode_error(status, raw, run_id=None, retry_after=None)
    assert err.status_code == status and err.message == "m" and err.code == "t"


def test_registry_of_providers() -> None:
    assert set(ADAPTERS) == {"runbase", "apiinone"}
    # The Literal type checkers see and the registry the code reads stay one list.
    assert typing.get_args(ProviderName) == provider_names()
    assert typing.get_args(gi.ProviderName) == provider_names()
    assert get_provider("runbase").name == "runbase"
    with pytest.raises(gi.ConfigurationError):
        get_provider("nope")
