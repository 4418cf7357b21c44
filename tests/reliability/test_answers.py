"""Answers a tolerant client reads (issue 11, item 11), against a real local server.

* A JSON body may start with a UTF-8 byte order mark (RFC 8259 allows
  ignoring it): creates, polls and error bodies, both providers.
* A poll redirected within the API's origin is followed (a few hops at most,
  the key stays on its host); any other redirect, and any redirect of a
  create, ends in an ``APIStatusError`` naming the ``Location`` (without
  credentials or query string), and nothing is resent.
* An unknown status word with an ``error`` is a ``RunFailedError`` carrying
  that message at once; without one the run keeps being polled and its
  timeout names the status last seen.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

import gptimage_async as gi
from gptimage_async._transport import MAX_REDIRECTS

from .conftest import PROVIDERS, Answer, HostileServer, created_body, hostile_server
from .test_wire import assert_public

BOM = b"\xef\xbb\xbf"
KEYS = {"runbase": "sk-answers-KEY-0c9d", "apiinone": "aio_answers_KEY_0c9d"}


@pytest.fixture
async def server() -> AsyncIterator[HostileServer]:
    async with hostile_server() as s:
        yield s


def session(server: HostileServer, provider: str, **options: Any) -> gi.Session:
    options.setdefault("rate_limit", gi.RateLimit(10_000, 1.0))
    options.setdefault("run_timeout", 20.0)
    options.setdefault("request_timeout", 2.0)
    return gi.Session(
        provider,  # type: ignore[arg-type]
        api_key=KEYS[provider],
        base_url=server.base_url(provider),
        **options,
    )


def run_body(provider: str, run_id: str, status: str, **extra: Any) -> bytes:
    if provider == "runbase":
        return json.dumps({"id": run_id, "status": status, **extra}).encode()
    task = {"task_id": run_id, "status": status, **extra}
    return json.dumps({"code": 200, "message": "success", "data": task}).encode()


# -- a byte order mark -------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("prefix", [BOM, BOM + b" \n"])
async def test_bom_bodies_are_read(server: HostileServer, provider: str, prefix: bytes) -> None:
    url = {"urls": ["https://i.example/a.png"]}
    server.creates.append(Answer(body=prefix + created_body(provider, "run_bom")))
    server.polls.append(Answer(body=prefix + run_body(provider, "run_bom", "processing")))
    server.polls.append(
        Answer(body=prefix + run_body(provider, "run_bom", "succeeded", output=url))
    )
    async with session(server, provider) as s:
        result = await s.generate("a lamp")
    assert result.run_id == "run_bom"
    assert result.urls == ["https://i.example/a.png"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_bom_error_body_keeps_its_message(server: HostileServer, provider: str) -> None:
    error = {"error": {"message": "prompt refused", "code": "invalid_input"}}
    server.creates.append(Answer(status=400, body=BOM + json.dumps(error).encode()))
    async with session(server, provider) as s:
        with pytest.raises(gi.BadRequestError) as info:
            await s.submit("a lamp")
    assert "prompt refused" in str(info.value)


# -- redirects -----------------------------------------------------------------------


def moved(status: int, location: str) -> Answer:
    return Answer(status=status, body=b"", headers=(("Location", location),))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("form", ["query", "absolute", "path"])
async def test_same_origin_poll_redirect_is_followed(
    server: HostileServer, provider: str, status: int, form: str
) -> None:
    root = server.base_url(provider)
    poll = "/runs/run_0" if provider == "runbase" else "/tasks/run_0"
    location = {
        "query": "?moved=1",
        "absolute": f"{root}{poll}?moved=2",
        "path": urlsplit(root).path + poll,
    }[form]
    server.polls.extend([moved(status, location), moved(status, location)])
    async with session(server, provider) as s:
        result = await s.generate("a lamp")
    assert result.run_id == "run_0"
    # The key went to the API host only, on every hop.
    assert set(server.auth_headers) == {f"Bearer {KEYS[provider]}"}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("https://user:pw@elsewhere.example/x?token=abc", "https://elsewhere.example/x?..."),
        ("//elsewhere.example/runs/run_0", "http://elsewhere.example/runs/run_0"),
        ("https://127.0.0.1:{port}/moved", "https://127.0.0.1:{port}/moved"),  # other scheme
        ("http://127.0.0.1:1/moved", "http://127.0.0.1:1/moved"),  # other port
        ("http://localhost:{port}/moved", "http://localhost:{port}/moved"),  # other host name
        ("http://[::1/moved", "<an unreadable URL>"),
        ("http://127.0.0.1:{port}:1/moved", "<an unreadable URL>"),
    ],
)
async def test_cross_origin_poll_redirect_is_named_not_followed(
    server: HostileServer, provider: str, location: str, shown: str
) -> None:
    location = location.format(port=server.port)
    server.polls.append(moved(302, location))
    async with session(server, provider) as s:
        run = await s.submit("a lamp")
        with pytest.raises(gi.APIStatusError) as info:
            await run
    error = info.value
    assert_public(error)
    assert error.status_code == 302
    assert error.run_id == "run_0"
    assert shown.format(port=server.port) in str(error)
    assert "pw" not in str(error) and "token" not in str(error) and "abc" not in str(error)
    assert server.requests == 2  # one create, one poll: nothing sent elsewhere


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_redirect_loop_ends_after_a_few_hops(server: HostileServer, provider: str) -> None:
    server.polls.extend(moved(307, "?again") for _ in range(50))
    async with session(server, provider) as s:
        run = await s.submit("a lamp")
        with pytest.raises(gi.APIStatusError) as info:
            await run
    assert "more than" in str(info.value)
    assert server.requests == 1 + MAX_REDIRECTS + 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirected_create_is_not_followed_nor_resent(
    server: HostileServer, provider: str, status: int
) -> None:
    key = KEYS[provider]
    server.creates.append(moved(status, f"?key={key}&next=1"))
    async with session(server, provider) as s:
        with pytest.raises(gi.APIStatusError) as info:
            await s.submit("a lamp")
    assert_public(info.value)
    assert "?..." in str(info.value) and key not in str(info.value)
    assert server.requests == 1


# -- unknown status words ------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("word", ["aborted", "expired", "content_filtered", "CONTENT_FILTERED"])
@pytest.mark.parametrize(
    "error", [{"message": "blocked by the safety system"}, "blocked by the safety system"]
)
async def test_unknown_status_with_an_error_fails_at_once(
    server: HostileServer, provider: str, word: str, error: Any
) -> None:
    server.polls.append(Answer(body=run_body(provider, "run_0", word, error=error)))
    async with session(server, provider) as s:
        run = await s.submit("a lamp")
        with pytest.raises(gi.RunFailedError) as info:
            await run
    assert str(info.value) == "blocked by the safety system"
    assert info.value.run_id == "run_0"
    assert run.polls == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unknown_status_with_a_bare_error_names_the_status(
    server: HostileServer, provider: str
) -> None:
    server.polls.append(Answer(body=run_body(provider, "run_0", "expired", error={"code": "e1"})))
    async with session(server, provider) as s:
        run = await s.submit("a lamp")
        with pytest.raises(gi.RunFailedError) as info:
            await run
    assert "'expired'" in str(info.value)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unknown_status_without_error_times_out_naming_it(
    server: HostileServer, provider: str
) -> None:
    server.polls.extend(
        Answer(body=run_body(provider, "run_0", "paused_for_review")) for _ in range(10_000)
    )
    async with session(server, provider, run_timeout=1.0) as s:
        run = await s.submit("a lamp")
        with pytest.raises(gi.RunTimeoutError) as info:
            await run
    assert "'paused_for_review'" in str(info.value)
    server.polls.clear()
