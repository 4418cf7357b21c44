"""What goes on the wire decides what a failure means (issue 11, items 1, 2 and 12).

* A create is uncertain only if its request may have been written: waiting
  for a pooled connection, or failing to connect, is a certain "not sent".
* A create is never written onto a pooled connection that may have died: a
  server closing keep-alive connections at once costs no create its fate.
* No internal exception class reaches a user.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from yarl import URL

import gptimage_async as gi
from gptimage_async._transport import HTTPTransport as Transport
from gptimage_async._transport import SendError
from gptimage_async._transport._written import _Exchange

from .._clock import FakeClock
from .wire_servers import Request, raw_server, runbase_handler

KEY = "sk-wire-test"
BIG = gi.RateLimit(10_000, 1.0)

PUBLIC_ERRORS = frozenset(
    obj
    for name in gi.__all__
    if isinstance(obj := getattr(gi, name), type) and issubclass(obj, BaseException)
)


def assert_public(error: BaseException) -> None:
    assert type(error) in PUBLIC_ERRORS, f"{type(error).__qualname__} reached the user: {error}"


def session(url: str, **options: object) -> gi.Session:
    options.setdefault("rate_limit", BIG)
    options.setdefault("run_timeout", 30.0)
    return gi.Session("runbase", api_key=KEY, base_url=url, **options)  # type: ignore[arg-type]


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- 1. the wait for a connection is not the request's time ---------------------------------


# (6, 1): the last create waits 3 s for the one connection, three times the timeout.
@pytest.mark.parametrize(("prompts", "connections"), [(8, 2), (6, 1), (16, 4)])
async def test_queued_creates_are_not_uncertain(prompts: int, connections: int) -> None:
    """The issue's input (8 prompts, 2 connections, 0.6 s creates, 1 s timeout) and variants."""
    handler, created = runbase_handler(create_delay=lambda r: 0.6)
    async with (
        raw_server(handler) as server,
        session(server.url("/api/v1"), max_connections=connections, request_timeout=1.0) as s,
    ):
        results = await s.generate_many(
            [f"prompt {i}" for i in range(prompts)], return_exceptions=True
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert sorted(created) == sorted(f"prompt {i}" for i in range(prompts))  # each once


async def test_only_creates_the_server_received_are_uncertain() -> None:
    # Creates of "slow" prompts outlast the timeout: those alone were written and unanswered.
    handler, created = runbase_handler(create_delay=lambda r: 1.5 if b"slow" in r.body else 0.3)
    prompts = [f"{'slow' if i % 3 == 0 else 'fast'} {i}" for i in range(9)]
    async with (
        raw_server(handler) as server,
        session(
            server.url("/api/v1"), max_connections=2, request_timeout=1.0, on_exit="cancel"
        ) as s,
    ):
        results = await s.generate_many(prompts, return_exceptions=True)
    for prompt, result in zip(prompts, results, strict=True):
        if prompt.startswith("slow"):
            assert isinstance(result, gi.UncertainCreateError), result
        else:
            assert isinstance(result, gi.Result), result
        assert created.count(prompt) == 1  # nothing resent, nothing unsent


async def test_refused_connection_is_a_certain_failure_and_public() -> None:
    url = f"http://127.0.0.1:{free_port()}/api/v1"
    async with session(url, max_create_attempts=2) as s:
        with pytest.raises(gi.APIConnectionError) as info:
            await s.submit("never left")
        assert_public(info.value)
        assert "could not connect" in str(info.value)
        results = await s.generate_many(["a", "b"], return_exceptions=True)
        for result in results:
            assert isinstance(result, gi.APIConnectionError)
            assert_public(result)
        async for run in s.as_completed(["c"]):
            assert run.error is not None
            assert_public(run.error)
        assert s.stats.uncertain_creates == 0


async def test_transport_timeout_counts_the_exchange_not_the_queue() -> None:
    async def slow(request: Request) -> tuple[int, dict[str, str], bytes]:
        await asyncio.sleep(0.3)
        return 200, {}, b"{}"

    async with raw_server(slow) as server:
        transport = Transport(server.url(), KEY, timeout=0.5, max_connections=1, user_agent="test")
        try:
            # Five requests on one connection: the last waits 1.2 s, each exchange 0.3 s.
            answers = await asyncio.gather(
                *(transport.send(m, "/x", b"{}" if m == "POST" else None) for m in ["GET"] * 5),
                *(transport.send("POST", "/x", b"{}") for _ in range(5)),
            )
        finally:
            await transport.aclose()
    assert [a.status for a in answers] == [200] * 10


class _Conn:
    """Stands in for aiohttp's Connection where only its protocol is read."""

    protocol = None


async def _timed(exchange: _Exchange) -> None:
    async with asyncio.timeout(None) as deadline:
        exchange.start(deadline)
        try:
            await asyncio.sleep(3600)
        finally:
            exchange.stop()


async def test_the_exchange_gets_its_own_timeout_once_written(fake_clock: FakeClock) -> None:
    # Connecting took 0.8 of the 1.0 s; the exchange then has a full second of its own.
    exchange = _Exchange(1.0, None)
    task = asyncio.ensure_future(_timed(exchange))
    await fake_clock.advance(0.8)
    exchange.sending(_Conn())  # type: ignore[arg-type]
    assert exchange.written
    await fake_clock.advance(0.9)  # 1.7 s in: past the connect deadline, not the exchange's
    assert not task.done()
    await fake_clock.advance(0.11)
    assert task.done()
    with pytest.raises(TimeoutError):
        task.result()


async def test_a_connect_phase_over_its_timeout_is_not_written(fake_clock: FakeClock) -> None:
    exchange = _Exchange(1.0, None)
    task = asyncio.ensure_future(_timed(exchange))
    await fake_clock.advance(0.99)
    assert not task.done()
    await fake_clock.advance(0.02)
    assert task.done() and isinstance(task.exception(), TimeoutError)
    assert not exchange.written
    assert not [h for h in fake_clock._loop._scheduled if not h.cancelled()]  # no timer left


@pytest.mark.parametrize(
    "base",
    [
        "http://127.0.0.1:8080/runbase/api/v1",
        "http://127.0.0.1:8080/runbase/api/v1/",
        "https://api.example.com",
        "https://h/a%20b/v1",
        "https://h/\u00e4/v1",
    ],
)
async def test_request_urls_are_the_base_url_and_the_path(base: str) -> None:
    transport = Transport(base, KEY, timeout=1.0, max_connections=1, user_agent="t")
    try:
        for path in ["/runs", "/runs/run%2F1", "/tasks/a%20b"]:
            assert str(transport._url(path)) == str(URL(base.rstrip("/") + path))
    finally:
        await transport.aclose()


# -- 2. creates never ride a pooled connection that may have died ----------------------------


@pytest.mark.parametrize("close_after", [0.0, 0.005, 0.02, 0.05])
async def test_keepalive_then_close_costs_no_create(close_after: float) -> None:
    """The issue's input (close 20 ms after answering, 40 prompts at 50/s) and variants."""
    handler, created = runbase_handler()
    prompts = [f"prompt {i}" for i in range(40)]
    async with (
        raw_server(handler, close_after=close_after) as server,
        session(server.url("/api/v1"), rate_limit=gi.RateLimit(50, 1.0)) as s,
    ):
        results = await s.generate_many(prompts, return_exceptions=True)
        assert s.stats.uncertain_creates == 0
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert sorted(created) == sorted(prompts)


async def test_a_create_never_reuses_a_connection() -> None:
    handler, created = runbase_handler()
    async with raw_server(handler) as server:
        async with session(server.url("/api/v1")) as s:
            for i in range(5):
                await s.generate(f"prompt {i}")
        posts = [r for r in server.requests if r.method == "POST"]
        assert len(posts) == 5
        assert all(r.headers.get("connection") == "close" for r in posts)


async def test_a_poll_dropped_on_a_reused_connection_is_sent_again_on_a_fresh_one() -> None:
    # The second request rides the first one's kept-alive connection and is dropped
    # unanswered; so is aiohttp's own resend of it. The transport knows the request
    # went out on a reused connection, so it sends the poll once more, on a fresh one.
    async def drop_two(request: Request) -> tuple[int, dict[str, str], bytes]:
        if len(server.requests) in (2, 3):
            raise ConnectionResetError
        return 200, {}, b"{}"

    async with raw_server(drop_two) as server:
        transport = Transport(server.url(), KEY, timeout=5.0, max_connections=1, user_agent="t")
        try:
            first = await transport.send("GET", "/x")
            second = await transport.send("GET", "/x")
        finally:
            await transport.aclose()
    assert first.status == second.status == 200
    assert len(server.requests) == 4
    assert server.requests[1].headers.get("connection") != "close"  # the reused one
    assert server.requests[3].headers.get("connection") == "close"  # the fresh resend


async def test_a_post_dropped_after_writing_is_uncertain_not_resent() -> None:
    # A create is written on a fresh connection only, so a drop after it was
    # written is a genuine "may have been received": never resent.
    async def drop_posts(request: Request) -> tuple[int, dict[str, str], bytes]:
        if request.method == "POST":
            raise ConnectionResetError
        return 200, {}, b"{}"

    async with raw_server(drop_posts) as server:
        transport = Transport(server.url(), KEY, timeout=5.0, max_connections=1, user_agent="t")
        try:
            await transport.send("GET", "/x")  # a pooled connection the POST must not use
            with pytest.raises(SendError) as info:
                await transport.send("POST", "/x", b"{}")
        finally:
            await transport.aclose()
    assert info.value.maybe_received
    assert [r.method for r in server.requests] == ["GET", "POST"]
    assert server.connections == 2


async def test_reset_after_a_fresh_create_was_written_is_uncertain() -> None:
    # The rule's other half: on a fresh connection, a reset after the request was
    # written may follow a create the server carried out. It is reported, not resent.
    async def reset(request: Request) -> tuple[int, dict[str, str], bytes]:
        raise ConnectionResetError

    async with raw_server(reset) as server:
        async with session(server.url("/api/v1")) as s:
            with pytest.raises(gi.UncertainCreateError) as info:
                await s.submit("written, then reset")
            assert_public(info.value)
        assert len(server.requests) == 1


async def test_batch_manifest_names_only_public_error_classes(tmp_path: Path) -> None:
    # The symptom: "failed: SendError: could not connect ..." in a manifest.
    url = f"http://127.0.0.1:{free_port()}/api/v1"
    async with session(url, max_create_attempts=1, on_exit="cancel") as s:
        report = await gi.Batch(s, ["a lamp", "a chair"], tmp_path).run()
    entries = gi.read_manifest(tmp_path / "manifest.jsonl")
    assert entries and report.counts["failed"] == 2
    public_names = {cls.__name__ for cls in PUBLIC_ERRORS}
    for entry in entries:
        assert entry.error_type in public_names, entry
        assert entry.error_type == "APIConnectionError"
