"""Fuzzing server answers: anything a server sends ends in a retry or a typed error, never a hang.

The hostile server (``conftest.HostileServer``) creates a run, then answers
its polls with what hypothesis draws: any status, any body (wrong types,
missing fields, huge values, non-JSON, cut short), any content type, odd
``Retry-After`` headers, delays past the request timeout, resets and bytes
that are not HTTP. Once its queue is empty it answers "succeeded".

* Transient answers (5xx, 408, 429, unreadable 2xx, no answer at all) must
  be retried: the run still ends with its ``Result``.
* Any answer at all must end the run, within a bounded time, with a
  ``Result`` or a ``GPTImageError``; nothing else may escape, and the
  scheduler's "unexpected error" catch-all must never fire.
* The session stays usable after every example.

Each property runs twice: in memory (``HostileServer.respond`` through a
``MemoryTransport``, on the fake loop clock: a stall past the request timeout
or a ``Retry-After`` costs no wall time), where a dropped connection is a
reset; and with fewer examples against the real server on 127.0.0.1, with
every kind of broken bytes (resets, bodies cut short, garbage that is not HTTP).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gptimage_async as gi
from gptimage_async._transport import MAX_BODY_BYTES

from .conftest import (
    PROVIDERS,
    Action,
    Answer,
    HostileServer,
    Wire,
    hostile_server,
    memory_hostile_session,
    on_wire,
)

REQUEST_TIMEOUT = 0.2
#: An example that takes longer than this is hung.
EXAMPLE_BOUND = 10.0

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# -- strategies ------------------------------------------------------------------------

STATUS_WORDS = [
    "pending", "queued", "IN_PROGRESS", "processing", "running", "succeeded", "completed",
    "SUCCESS", "failed", "error", "canceled", "cancelled", "", "???", "Succeeded ", "null",
]  # fmt: skip

# Bounded depth: deeper nesting is a known core bug, tested apart below.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: 2**200 is valid JSON
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(STATUS_WORDS),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
urls = st.lists(
    st.one_of(st.text(max_size=30), st.just("https://x.example/1.png"), json_values), max_size=3
)
run_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=10), st.integers(), json_values),
        "task_id": st.one_of(st.text(max_size=10), st.integers(), json_values),
        "status": st.one_of(st.sampled_from(STATUS_WORDS), json_values),
        "output": st.one_of(st.fixed_dictionaries({"urls": urls}), urls, json_values),
        "urls": urls,
        "result": st.one_of(st.fixed_dictionaries({"urls": urls}), json_values),
        "images": st.lists(
            st.one_of(st.fixed_dictionaries({"url": json_values}), json_values), max_size=3
        ),
        "error": st.one_of(
            st.text(max_size=20),
            st.fixed_dictionaries(
                {}, optional={"message": json_values, "code": json_values, "type": json_values}
            ),
            json_values,
        ),
    },
)
envelope = st.fixed_dictionaries(
    {},
    optional={
        "code": st.one_of(
            st.sampled_from([200, "200", 400, 401, 404, 429, 500, 0, -1, 2**70]), json_values
        ),
        "message": json_values,
        "data": st.one_of(run_like, json_values),
    },
)


def _encode(value: Any) -> bytes:
    # The standard library writes any int and, with allow_nan, the non-JSON NaN/Infinity.
    return json.dumps(value, allow_nan=True).encode()


json_bodies = st.one_of(run_like, envelope, json_values).map(_encode)
unreadable_bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    st.just(b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    st.just(b'{"id": "run_1", "status": "succ'),
    st.just(b'{"id": NaN, "status": Infinity}'),
    st.just(b"\xef\xbb\xbf{}"),
    st.integers(1, 400).map(lambda d: b"[" * d + b"]" * d),
    st.just(b" " * (MAX_BODY_BYTES + 1)),
)
content_types = st.sampled_from(
    ["application/json", "text/html", "text/plain", "application/octet-stream",
     "application/json; charset=latin-1", "application/problem+json", None]
)  # fmt: skip
retry_after = st.sampled_from(
    ["0", "0.01", "-5", "abc", "", "1e309", "nan", "inf", "0x10", "Wed, 21 Oct 2015 07:28:00 GMT",
     "Mon, 99 Foo 2024 99:99:99 GMT"]
).map(lambda value: (("Retry-After", value),))  # fmt: skip
headers = st.one_of(st.just(()), retry_after)
delays = st.sampled_from([0.0, 0.0, 0.0, 0.01])
no_answers: list[Action] = ["reset", "short", "garbage"]
no_answer = st.sampled_from(no_answers).map(
    lambda action: Answer(action=action, body=b'{"id": "run_')
)

#: Answers that must be retried: the run still succeeds afterwards.
_error_statuses = st.builds(
    Answer,
    status=st.sampled_from([500, 502, 503, 504, 520, 599, 408, 429]),
    body=unreadable_bodies,
    content_type=content_types,
    headers=headers,
)
_unreadable_successes = st.builds(
    Answer,
    status=st.sampled_from([200, 201, 202, 204]),
    body=unreadable_bodies,
    content_type=content_types,
)
transient_answers = st.one_of(_error_statuses, _unreadable_successes, no_answer)
#: The same, with only what has an in-memory form: a reset, not bytes cut short.
memory_transient_answers = st.one_of(
    _error_statuses, _unreadable_successes, st.just(Answer(action="reset"))
)
#: An answer held past the request timeout: transient too, but it costs real time,
#: so an example gets at most one (see ``_with_one_slow``).
SLOW = Answer(delay=REQUEST_TIMEOUT * 1.5)


def _any(transient: st.SearchStrategy[Answer]) -> st.SearchStrategy[Answer]:
    return st.one_of(
        transient,
        st.builds(
            Answer,
            status=st.one_of(
                st.sampled_from([200, 201, 301, 400, 401, 402, 403, 404, 409, 418, 429, 500]),
                st.integers(200, 599),
            ),
            body=st.one_of(json_bodies, unreadable_bodies),
            content_type=content_types,
            headers=headers,
            delay=delays,
        ),
    )


#: Anything at all.
any_answers = _any(transient_answers)
memory_any_answers = _any(memory_transient_answers)


@st.composite
def _with_one_slow(draw: st.DrawFn, answers: st.SearchStrategy[Answer]) -> list[Answer]:
    """1-4 answers, one of which may be held past the request timeout."""
    drawn = draw(st.lists(answers, min_size=1, max_size=4))
    if draw(st.integers(0, 3)) == 0:
        drawn.insert(draw(st.integers(0, len(drawn))), SLOW)
    return drawn


# -- the harness -----------------------------------------------------------------------


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Hostile:
    """The hostile server, and a fresh session for each example.

    A fresh session per example keeps examples independent: the poll
    scheduler learns run durations, and the "durations" of runs whose polls
    were sabotaged would slow every later example down.
    """

    server: HostileServer
    errors: _ErrorLog
    #: ``"memory"``: the server answers in memory, on the fake loop clock.
    wire: Wire = "socket"

    def new_session(self, provider: str) -> gi.Session:
        options: dict[str, Any] = {
            "api_key": "sk-fuzz" if provider == "runbase" else "aio_fuzz",
            # A belief nobody reaches, with a short window: retries back off at
            # most one window, so examples stay fast.
            "rate_limit": gi.RateLimit(100_000, 0.02),
            "request_timeout": REQUEST_TIMEOUT,
            "run_timeout": 5.0,
            "on_exit": "cancel",
        }
        if self.wire == "memory":
            return memory_hostile_session(self.server, provider, **options)
        return gi.Session(provider, base_url=self.server.base_url(provider), **options)  # type: ignore[arg-type]

    async def run_once(
        self, provider: str, creates: list[Answer], polls: list[Answer]
    ) -> gi.Result | gi.GPTImageError:
        """One run against the queued answers, then a clean one on the same session.

        Anything but a ``Result`` or a typed error escapes and fails the example.
        """
        return await on_wire(self.wire, self._run_once(provider, creates, polls))

    async def _run_once(
        self, provider: str, creates: list[Answer], polls: list[Answer]
    ) -> gi.Result | gi.GPTImageError:
        self.server.clear()
        self.server.creates.extend(creates)
        self.server.polls.extend(polls)
        outcome: gi.Result | gi.GPTImageError
        async with self.new_session(provider) as session:
            with anyio.fail_after(EXAMPLE_BOUND):
                try:
                    run = await session.submit(f"fuzzed {provider} run")
                    outcome = await run
                except gi.GPTImageError as exc:
                    outcome = exc
            # The session stays usable after whatever happened.
            self.server.clear()
            with anyio.fail_after(EXAMPLE_BOUND):
                result = await session.generate("after the fuzzing")
            assert result.urls
        unexpected = [r.getMessage() for r in self.errors.records]
        assert not unexpected, f"the library logged errors: {unexpected}"
        return outcome


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    """One hostile server, shared by all examples of a test."""
    errors = _ErrorLog()
    logger = logging.getLogger("gptimage_async")
    logger.addHandler(errors)
    try:
        async with hostile_server() as server:
            yield Hostile(server, errors)
    finally:
        logger.removeHandler(errors)


@settings(FUZZ, max_examples=100)
@given(provider=st.sampled_from(PROVIDERS), polls=_with_one_slow(memory_transient_answers))
async def test_transient_poll_answers_are_retried(
    hostile: Hostile, provider: str, polls: list[Answer]
) -> None:
    hostile.wire = "memory"
    outcome = await hostile.run_once(provider, [], polls)
    assert isinstance(outcome, gi.Result), f"{type(outcome).__name__}: {outcome}"


@pytest.mark.slow  # against the real server: ~3 s
@settings(FUZZ, max_examples=30)
@given(provider=st.sampled_from(PROVIDERS), polls=_with_one_slow(transient_answers))
async def test_transient_poll_answers_are_retried_over_a_socket(
    hostile: Hostile, provider: str, polls: list[Answer]
) -> None:
    outcome = await hostile.run_once(provider, [], polls)
    assert isinstance(outcome, gi.Result), f"{type(outcome).__name__}: {outcome}"


def _ended_well(outcome: gi.Result | gi.GPTImageError) -> None:
    assert isinstance(outcome, gi.Result | gi.GPTImageError)
    if isinstance(outcome, gi.GPTImageError):
        # Never the library's own catch-all for an exception it did not expect.
        assert "unexpected error" not in str(outcome)


@FUZZ
@given(
    provider=st.sampled_from(PROVIDERS),
    creates=st.lists(memory_any_answers, max_size=1),
    polls=_with_one_slow(memory_any_answers),
)
async def test_any_answer_ends_in_a_result_or_a_typed_error(
    hostile: Hostile, provider: str, creates: list[Answer], polls: list[Answer]
) -> None:
    hostile.wire = "memory"
    _ended_well(await hostile.run_once(provider, creates, polls))


@pytest.mark.slow  # against the real server: ~3 s
@settings(FUZZ, max_examples=40)
@given(
    provider=st.sampled_from(PROVIDERS),
    creates=st.lists(any_answers, max_size=1),
    polls=_with_one_slow(any_answers),
)
async def test_any_answer_over_a_socket_ends_in_a_result_or_a_typed_error(
    hostile: Hostile, provider: str, creates: list[Answer], polls: list[Answer]
) -> None:
    _ended_well(await hostile.run_once(provider, creates, polls))


# -- known holes (core bugs) ------------------------------------------------------------

DEEP = b'{"id": "run_0", "status": "pending", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [200, 500])
async def test_deeply_nested_poll_answer_is_retried(
    hostile: Hostile, status: int, provider: str
) -> None:
    outcome = await hostile.run_once(provider, [], [Answer(status=status, body=DEEP)])
    assert isinstance(outcome, gi.Result), f"{type(outcome).__name__}: {outcome}"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [200, 500])
async def test_deeply_nested_create_answer_raises_a_typed_error(
    hostile: Hostile, status: int, provider: str
) -> None:
    outcome = await hostile.run_once(provider, [Answer(status=status, body=DEEP)], [])
    assert isinstance(outcome, gi.UncertainCreateError)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_generate_many_survives_a_deeply_nested_create_answer(
    hostile: Hostile, provider: str
) -> None:
    hostile.server.creates.append(Answer(body=DEEP))
    async with hostile.new_session(provider) as session:
        with anyio.fail_after(1):
            out = await session.generate_many(["one run", "another run"], return_exceptions=True)
    assert all(isinstance(o, gi.Result | gi.GPTImageError) for o in out)
