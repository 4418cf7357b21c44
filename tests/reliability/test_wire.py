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

import gptimage_async as gi
from gptimage_async._transport import SendError, Transport

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


@pytest.mark.parametrize(("prompts", "connections"), [(8, 2), (12, 1), (16, 4)])
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
