"""A server's Retry-After is honoured on any status, creates and polls (issue 11, item 8).

The small input: during a maintenance window the server answers creates 503
with ``Retry-After: 3``. The create must wait as told, again and again if
need be, without using up its attempts, and still within the run's deadline.

The hostile server answers in memory (``HostileServer.respond`` through a
``MemoryTransport``) on the fake loop clock: every wait is measured exactly,
and costs no wall time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import gptimage_async as gi

from .conftest import PROVIDERS, Answer, HostileServer, in_fake_time, memory_hostile_session

pytestmark = pytest.mark.parametrize("provider", PROVIDERS)

WAIT = 0.15  # seconds the server asks for, each time


def _session(server: HostileServer, provider: str, **options: Any) -> gi.Session:
    options.setdefault("rate_limit", gi.RateLimit(100_000, 0.02))
    options.setdefault("run_timeout", 10.0)
    options["api_key"] = "sk-wait" if provider == "runbase" else "aio_wait"
    return memory_hostile_session(server, provider, **options)


def _now() -> float:
    """The loop's (fake) clock, in seconds."""
    return asyncio.get_running_loop().time()


def _told(status: int, header: tuple[str, str]) -> Answer:
    return Answer(status=status, body=b'{"error": {"message": "busy"}}', headers=(header,))


@pytest.mark.parametrize(
    "header",
    [("Retry-After", f"{WAIT:g}"), ("retry-after-ms", f"{WAIT * 1000:g}")],
    ids=["seconds", "ms"],
)
@in_fake_time
async def test_a_create_waits_as_told_through_a_503_window(
    provider: str, header: tuple[str, str]
) -> None:
    server = HostileServer()
    # More 503s than attempts: only waits as told can get through them.
    server.creates.extend([_told(503, header)] * 4)
    async with _session(server, provider, max_create_attempts=2) as session:
        started = _now()
        result = await session.generate("a lamp")
        elapsed = _now() - started
    assert result.urls
    assert elapsed >= 4 * WAIT * 0.9  # it waited each time, not a jittered backoff
    assert session.stats.create_retries == 0  # waiting as told costs no attempt
    assert server.requests == 5 + 1  # four refused creates, the create, one poll


@pytest.mark.parametrize("status", [502, 504, 408])
@in_fake_time
async def test_other_statuses_with_retry_after_are_waits_too(provider: str, status: int) -> None:
    server = HostileServer()
    # 408 is safe to resend; a 502/504 with Retry-After on a poll too.
    if status == 408:
        server.creates.extend([_told(408, ("Retry-After", f"{WAIT:g}"))] * 3)
    else:
        server.polls.extend([_told(status, ("Retry-After", f"{WAIT:g}"))] * 3)
    async with _session(server, provider, max_create_attempts=1) as session:
        started = _now()
        result = await session.generate("a lamp")
        elapsed = _now() - started
    assert result.urls and elapsed >= 3 * WAIT * 0.9


@in_fake_time
async def test_a_poll_waits_as_told_on_a_503(provider: str) -> None:
    server = HostileServer()
    server.polls.extend([_told(503, ("Retry-After", f"{WAIT:g}"))] * 3)
    async with _session(server, provider) as session:
        run = await session.submit("a lamp")
        started = _now()
        result = await run
        elapsed = _now() - started
    assert result.urls
    assert elapsed >= 3 * WAIT * 0.9
    assert run.polls == 4


@in_fake_time
async def test_the_deadline_still_holds(provider: str) -> None:
    server = HostileServer()
    # A server that keeps asking for 99999 s (capped at 120): the run's deadline ends it.
    server.creates.extend([_told(503, ("Retry-After", "99999"))] * 50)
    async with _session(server, provider, run_timeout=0.5) as session:
        started = _now()
        with pytest.raises(gi.ServerError) as info:
            await session.generate("a lamp")
        elapsed = _now() - started
    assert info.value.status_code == 503 and info.value.retry_after == 120.0
    assert elapsed < 0.5  # no point waiting for the deadline: it fails at once
    assert server.requests == 1


@in_fake_time
async def test_without_retry_after_a_503_still_uses_attempts(provider: str) -> None:
    server = HostileServer()
    server.creates.extend([Answer(status=503, body=b"")] * 3)
    async with _session(server, provider, max_create_attempts=2) as session:
        with pytest.raises(gi.ServerError):
            await session.generate("a lamp")
    assert server.requests == 2


@in_fake_time
async def test_a_500_with_retry_after_is_still_uncertain_for_a_create(provider: str) -> None:
    # The run may exist: waiting as told would mean paying twice.
    server = HostileServer()
    server.creates.append(_told(500, ("Retry-After", "0.05")))
    async with _session(server, provider) as session:
        with pytest.raises(gi.UncertainCreateError):
            await session.generate("a lamp")
    assert server.requests == 1


@in_fake_time
async def test_many_short_waits_end_at_the_deadline(provider: str) -> None:
    server = HostileServer()
    server.creates.extend([_told(503, ("Retry-After", f"{WAIT:g}"))] * 50)
    async with _session(server, provider, run_timeout=0.5) as session:
        started = _now()
        with pytest.raises(gi.ServerError):
            await session.generate("a lamp")
        elapsed = _now() - started
    assert 0.3 <= elapsed < 0.7
    assert 3 <= server.requests <= 4  # one per wait, never a burst


@in_fake_time
async def test_a_poll_told_to_wait_past_the_deadline_times_out(provider: str) -> None:
    server = HostileServer()
    server.polls.extend([_told(503, ("Retry-After", "30"))] * 5)
    async with _session(server, provider, run_timeout=0.4) as session:
        run = await session.submit("a lamp")
        started = _now()
        with pytest.raises(gi.RunTimeoutError):
            await run
        elapsed = _now() - started
    assert elapsed < 0.8
    assert run.polls == 1  # no speculative poll slipped in before the told time


@in_fake_time
async def test_a_create_held_by_the_limiter_past_the_deadline_times_out(provider: str) -> None:
    # One request per hour: the second create waits for the limiter, never sent.
    server = HostileServer()
    hourly = gi.RateLimit(1, 3600.0, ceiling=True)
    async with _session(server, provider, rate_limit=hourly, run_timeout=0.3) as session:
        await session.submit("the one slot")
        started = _now()
        with pytest.raises(gi.RunTimeoutError, match="could not be sent within run_timeout"):
            await session.submit("waits for the next")
        elapsed = _now() - started
        assert session.stats.uncertain_creates == 0
    assert 0.2 <= elapsed < 1.0
    assert server.requests == 1  # the waiting create never went out


@in_fake_time
async def test_a_create_held_after_a_429_past_the_deadline_raises_the_429(provider: str) -> None:
    # The 429 that kept the create waiting says why, not a bare timeout.
    server = HostileServer()
    server.creates.append(_told(429, ("Retry-After", "30")))
    async with _session(server, provider, run_timeout=0.3) as session:
        with pytest.raises(gi.RateLimitError) as info:
            await session.submit("a lamp")
    assert info.value.status_code == 429
    assert server.requests == 1
