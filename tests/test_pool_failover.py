"""Failover: which errors close or cool a lane, and which creates may move."""

from __future__ import annotations

import math
import random

import pytest

from gptimage_async._classify import Verdict, classify_no_answer, classify_status
from gptimage_async._exceptions import (
    APIConnectionError,
    APIStatusError,
    BadRequestError,
    GPTImageError,
    InvalidRequestError,
    ProtocolError,
    RunNotFoundError,
    ServerError,
    UncertainCreateError,
    status_error,
)
from gptimage_async._fleet_closure import CLOSED_TTL as FLEET_CLOSED_TTL
from gptimage_async._pool import (
    CLOSED_TTL,
    CLOSING_ERRORS,
    COOL_BASE,
    COOL_JITTER_FLOOR,
    COOL_MAX,
    CreateMove,
    Failover,
    HealthPolicy,
    LaneAction,
    LaneHealth,
    LaneState,
    failover,
)
from gptimage_async._transport import SendError

CLOSE_MOVE = Failover(LaneAction.CLOSE, CreateMove.MOVE)
COOL_MOVE = Failover(LaneAction.COOL, CreateMove.MOVE)
COOL_UNCERTAIN = Failover(LaneAction.COOL, CreateMove.UNCERTAIN)
KEEP_MOVE = Failover(LaneAction.KEEP, CreateMove.MOVE)
KEEP_FAIL = Failover(LaneAction.KEEP, CreateMove.FAIL)
KEEP_UNCERTAIN = Failover(LaneAction.KEEP, CreateMove.UNCERTAIN)


def _status(
    status: int, code: str | None = None, retry_after: float | None = None
) -> APIStatusError:
    return status_error(status, "refused", code=code, retry_after=retry_after)


# (error, maybe_received, decision): every row built from the real classes.
TABLE: list[tuple[BaseException, bool, Failover]] = [
    (_status(401, "invalid_api_key"), True, CLOSE_MOVE),
    (_status(402, "insufficient_balance"), True, CLOSE_MOVE),
    (_status(403, "api_key_spend_limit_exceeded"), True, CLOSE_MOVE),
    (_status(403, "ip_not_allowed"), True, CLOSE_MOVE),
    (_status(429, "USAGE_EXCEEDED"), True, CLOSE_MOVE),
    (_status(429, "RATE_LIMITED"), True, KEEP_MOVE),
    (_status(429), True, KEEP_MOVE),
    (_status(503), True, COOL_MOVE),
    (_status(503, retry_after=5.0), True, COOL_MOVE),
    (_status(408), True, KEEP_MOVE),
    (_status(500), True, COOL_UNCERTAIN),
    (_status(502), True, COOL_UNCERTAIN),
    (_status(504, retry_after=2.0), True, COOL_UNCERTAIN),
    (_status(400, "invalid_input"), True, KEEP_FAIL),
    (_status(404, "model_not_found"), True, KEEP_FAIL),
    (_status(418), True, KEEP_FAIL),
    # An error answer is an answer: the status decides, whatever the transport said.
    (_status(500), False, COOL_UNCERTAIN),
    (_status(402), False, CLOSE_MOVE),
    (SendError("refused", maybe_received=False), False, COOL_MOVE),
    (SendError("reset after write", maybe_received=True), True, COOL_UNCERTAIN),
    (APIConnectionError("connect timeout"), False, COOL_MOVE),
    (APIConnectionError("read timeout"), True, COOL_UNCERTAIN),
    (UncertainCreateError("timed out after sending", prompt="p"), True, COOL_UNCERTAIN),
    (UncertainCreateError("timed out after sending", prompt="p"), False, COOL_UNCERTAIN),
    (ProtocolError("not JSON", status_code=200), True, KEEP_UNCERTAIN),
    (InvalidRequestError("prompt too short", field="prompt"), False, KEEP_FAIL),
    (RuntimeError("a bug"), False, KEEP_FAIL),
]


@pytest.mark.parametrize(("error", "maybe_received", "decision"), TABLE)
def test_the_failover_table(error: BaseException, maybe_received: bool, decision: Failover) -> None:
    assert failover(error, maybe_received=maybe_received) == decision


@pytest.mark.parametrize(
    "status", [400, 401, 402, 403, 404, 408, 409, 418, 429, 500, 501, 502, 503, 504, 520]
)
@pytest.mark.parametrize("code", [None, "USAGE_EXCEEDED", "RATE_LIMITED"])
def test_a_move_is_never_what_classify_calls_uncertain(status: int, code: str | None) -> None:
    error = _status(status, code)
    verdict = classify_status(error, create=True)
    move = failover(error, maybe_received=True).create
    assert (move is CreateMove.UNCERTAIN) == (verdict is Verdict.UNCERTAIN)
    if verdict in (Verdict.RETRY, Verdict.WAIT):
        assert move is CreateMove.MOVE  # certainly not created: it may go elsewhere


@pytest.mark.parametrize("maybe_received", [True, False])
def test_no_answer_agrees_with_classify(maybe_received: bool) -> None:
    error = SendError("no answer", maybe_received=maybe_received)
    verdict = classify_no_answer(error, create=True)
    move = failover(error, maybe_received=maybe_received).create
    assert (move is CreateMove.UNCERTAIN) == (verdict is Verdict.UNCERTAIN)


def test_a_404_on_create_fails_rather_than_moving() -> None:
    # On a poll a 404 is "not visible yet"; a create answered 404 has nowhere better to go.
    assert failover(RunNotFoundError("x", status_code=404), maybe_received=True) == KEEP_FAIL


# -- LaneHealth -----------------------------------------------------------------------------


def test_a_new_lane_is_open() -> None:
    health = LaneHealth()
    assert health.state(0.0) is LaneState.OPEN
    assert health.cause is None and health.cooling_until == -math.inf


def test_cooling_backs_off_exponentially_with_jitter_and_never_zero() -> None:
    health = LaneHealth(rng=random.Random(7))
    now = 100.0
    for n in range(12):
        until = health.cool(now)
        ceiling = min(COOL_MAX, COOL_BASE * 2.0**n)
        assert COOL_JITTER_FLOOR * ceiling <= until - now <= ceiling
        assert health.state(now) is LaneState.COOLING
        assert health.state(until) is LaneState.OPEN
        now = until
    health.recover()
    assert health.state(now) is LaneState.OPEN
    assert health.cool(now) - now <= COOL_BASE  # the backoff starts over


def test_cooling_obeys_retry_after_and_never_shortens() -> None:
    health = LaneHealth(rng=random.Random(1))
    assert health.cool(10.0, retry_after=30.0) == 40.0
    assert health.cool(11.0, retry_after=2.0) == 40.0  # one already running is kept
    assert health.state(39.9) is LaneState.COOLING


def test_the_same_seed_gives_the_same_coolings() -> None:
    a, b = LaneHealth(rng=random.Random(3)), LaneHealth(rng=random.Random(3))
    assert [a.cool(float(t)) for t in range(5)] == [b.cool(float(t)) for t in range(5)]


def test_closing_wins_and_keeps_the_first_cause() -> None:
    health = LaneHealth()
    first, second = _status(402), _status(401)
    assert isinstance(first, GPTImageError)
    health.close(first)
    health.close(second)
    health.recover()
    assert health.cause is first
    assert health.state(1e9) is LaneState.CLOSED


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (_status(401), LaneState.CLOSED),
        (_status(429, "USAGE_EXCEEDED"), LaneState.CLOSED),
        (_status(500), LaneState.COOLING),
        (_status(503, retry_after=8.0), LaneState.COOLING),
        (SendError("refused", maybe_received=False), LaneState.COOLING),
        (_status(429), LaneState.OPEN),
        (BadRequestError("bad", status_code=400), LaneState.OPEN),
    ],
)
def test_apply_does_what_the_decision_says(error: BaseException, state: LaneState) -> None:
    health = LaneHealth(rng=random.Random(0))
    health.apply(error, failover(error, maybe_received=False), now=0.0)
    assert health.state(0.0) is state
    if isinstance(error, ServerError) and error.retry_after is not None:
        assert health.cooling_until == error.retry_after
    if state is LaneState.CLOSED:
        assert health.cause is error


# -- how long a closure lasts, and a lane of one -------------------------------------------


def test_a_closure_lasts_closed_ttl_as_the_fleets_word_does() -> None:
    assert CLOSED_TTL == FLEET_CLOSED_TTL == 300.0  # one constant, not two
    health = LaneHealth()
    cause = _status(402)
    assert isinstance(cause, GPTImageError)
    health.apply(cause, failover(cause, maybe_received=False), now=1000.0)
    assert health.closed_until == 1000.0 + CLOSED_TTL
    assert health.state(1000.0 + CLOSED_TTL - 0.001) is LaneState.CLOSED
    assert health.cause is cause
    # Run out: the key may have been topped up, its next create asks again.
    assert health.state(1000.0 + CLOSED_TTL) is LaneState.OPEN
    assert health.cause is None and health.closed_until == -math.inf
    # Closed again by the next refusal, for a whole new CLOSED_TTL.
    health.apply(cause, failover(cause, maybe_received=False), now=2000.0)
    assert health.state(2000.0 + CLOSED_TTL - 1) is LaneState.CLOSED


def test_a_closure_is_never_shortened_and_until_sets_its_end() -> None:
    health = LaneHealth(closed_for=60.0)
    first, second = _status(401), _status(403)
    assert isinstance(first, GPTImageError) and isinstance(second, GPTImageError)
    health.close(first, 0.0)
    health.close(second, 0.0, until=10.0)  # shorter: the running one is kept
    assert health.closed_until == 60.0 and health.cause is first
    health.close(second, 0.0, until=90.0)  # the fleet's word lasts longer
    assert health.state(89.0) is LaneState.CLOSED and health.state(90.0) is LaneState.OPEN


@pytest.mark.parametrize("error_type", CLOSING_ERRORS)
def test_a_lane_of_one_is_never_closed_by_the_policy(error_type: type[APIStatusError]) -> None:
    code = "USAGE_EXCEEDED" if error_type.__name__ == "QuotaExceededError" else None
    status = {"AuthenticationError": 401, "InsufficientCreditsError": 402}.get(
        error_type.__name__, 429 if code else 403
    )
    error = _status(status, code)
    assert isinstance(error, error_type)
    assert HealthPolicy.for_lanes(1) == HealthPolicy(closes=False)
    assert HealthPolicy.for_lanes(1).decide(error, maybe_received=False) == KEEP_MOVE
    assert HealthPolicy.for_lanes(2).decide(error, maybe_received=False) == CLOSE_MOVE
    # Everything else is the failover table's, whatever the pool's size.
    for other, received, decision in TABLE:
        if decision.lane is not LaneAction.CLOSE:
            assert HealthPolicy.for_lanes(1).decide(other, maybe_received=received) == decision
