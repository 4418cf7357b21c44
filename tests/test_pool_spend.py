"""Spend: reserve before sending, commit, release, refund, and a cap never passed."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptimage_async._exceptions import SpendCapError
from gptimage_async._pool import Lane, LaneSpend, SpendLedger, SpendToken

# Prices given to both: one unit, the user's (credits are never added to price units).
AIO = Lane("apiinone", "aio_test_spend", label="aio", prices={"medium": 10, "high": 28})
RB = Lane("runbase", "sk-test-spend", prices={"medium": 4, "high": 11.5}, label="rb")  # refunds
RB_UNPRICED = Lane("runbase", "sk-test-unpriced", label="rb-free")


def _token(result: SpendToken | SpendCapError) -> SpendToken:
    assert isinstance(result, SpendToken), result
    return result


def test_a_reservation_counts_until_it_is_committed_or_released() -> None:
    ledger = SpendLedger([AIO, RB])
    first = _token(ledger.reserve(0, "high"))
    second = _token(ledger.reserve(1, None))  # medium by default
    assert (first.price, second.price, second.quality) == (28, 4, "medium")
    snap = ledger.snapshot()
    assert (snap.spent, snap.reserved, snap.cap, snap.headroom) == (0.0, 32.0, None, None)
    ledger.commit(first)
    ledger.release(second)
    snap = ledger.snapshot()
    assert (snap.spent, snap.reserved) == (28.0, 0.0)
    assert snap.lanes == (
        LaneSpend("aio", AIO.fingerprint, 1, 0, 0, 0, 28.0, 0.0, "price units"),
        LaneSpend("rb", RB.fingerprint, 0, 0, 0, 0, 0.0, 0.0, "price units"),
    )


# (steps, spent, reserved, headroom) under a cap of 50: each step is (op, lane, quality).
TABLE: list[tuple[str, list[tuple[str, int, str]], float, float, float]] = [
    ("commit", [("reserve", 0, "high"), ("commit", 0, "")], 28, 0, 22),
    ("release", [("reserve", 0, "high"), ("release", 0, "")], 0, 0, 50),
    ("uncertain stays reserved", [("reserve", 0, "high"), ("uncertain", 0, "")], 0, 28, 22),
    (
        "uncertain then found created",
        [("reserve", 0, "high"), ("uncertain", 0, ""), ("commit", 0, "")],
        28,
        0,
        22,
    ),
    (
        "runbase refunds a failed run",
        [("reserve", 1, "high"), ("commit", 1, ""), ("refund", 1, "")],
        0,
        0,
        50,
    ),
    (
        "api in one keeps a failed run spent",
        [("reserve", 0, "medium"), ("commit", 0, ""), ("refund", 0, "")],
        10,
        0,
        40,
    ),
    ("decimal prices add exactly", [("reserve", 1, "high")] * 4, 0, 46, 4),
]


@pytest.mark.parametrize(
    ("name", "steps", "spent", "reserved", "headroom"), TABLE, ids=[r[0] for r in TABLE]
)
def test_spend_table(
    name: str, steps: list[tuple[str, int, str]], spent: float, reserved: float, headroom: float
) -> None:
    ledger = SpendLedger([AIO, RB], cap=50)
    last: dict[int, SpendToken] = {}
    for op, lane, quality in steps:
        if op == "reserve":
            last[lane] = _token(ledger.reserve(lane, quality))
        else:
            getattr(ledger, op)(last[lane])
    snap = ledger.snapshot()
    assert (snap.spent, snap.reserved, snap.headroom) == (spent, reserved, headroom)


def test_refund_says_whether_it_gave_back() -> None:
    ledger = SpendLedger([AIO, RB])
    aio, rb = _token(ledger.reserve(0, "high")), _token(ledger.reserve(1, "high"))
    ledger.commit(aio)
    ledger.commit(rb)
    assert ledger.refund(aio) is False
    assert ledger.refund(rb) is True
    lanes = ledger.snapshot().lanes
    assert (lanes[0].created, lanes[0].refunded, lanes[0].spent) == (1, 0, 28.0)
    assert (lanes[1].created, lanes[1].refunded, lanes[1].spent) == (1, 1, 0.0)


def test_a_create_that_could_pass_the_cap_is_refused_with_the_figures() -> None:
    ledger = SpendLedger([AIO, RB], cap=40)
    ledger.commit(_token(ledger.reserve(0, "high")))  # 28 spent
    _token(ledger.reserve(1, "medium"))  # 4 reserved, in flight
    refusal = ledger.reserve(0, "medium")  # 28 + 4 + 10 > 40
    assert isinstance(refusal, SpendCapError)
    assert (refusal.cap, refusal.committed, refusal.reserved, refusal.price) == (40, 28, 4, 10)
    assert "'aio'" in str(refusal) and "not sent" in str(refusal)
    assert ledger.snapshot().reserved == 4.0  # the refusal reserved nothing
    _token(ledger.reserve(1, "medium"))  # 28 + 4 + 4 fits: exactly what the cap allows
    _token(ledger.reserve(1, "medium"))
    assert ledger.snapshot().headroom == 0.0
    assert isinstance(ledger.reserve(1, "medium"), SpendCapError)


def test_a_zero_cap_refuses_every_priced_create() -> None:
    ledger = SpendLedger([RB], cap=0)
    assert isinstance(ledger.reserve(0, "medium"), SpendCapError)


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("commit", "commit"),
        ("commit", "release"),
        ("release", "commit"),
        ("release", "release"),
        ("release", "uncertain"),
        ("commit", "uncertain"),
    ],
)
def test_a_token_is_used_once(first: str, then: str) -> None:
    ledger = SpendLedger([AIO])
    token = _token(ledger.reserve(0, "medium"))
    getattr(ledger, first)(token)
    with pytest.raises(ValueError, match="cannot become"):
        getattr(ledger, then)(token)


@pytest.mark.parametrize("lanes", [[AIO], [RB]])
def test_only_committed_runs_are_refunded(lanes: list[Lane]) -> None:
    ledger = SpendLedger(lanes)
    token = _token(ledger.reserve(0, "medium"))
    with pytest.raises(ValueError, match=r"not committed|cannot become"):
        ledger.refund(token)


def test_a_token_from_another_ledger_is_refused() -> None:
    other = _token(SpendLedger([AIO]).reserve(0, "medium"))
    ledger = SpendLedger([AIO])
    with pytest.raises(ValueError, match="not from this ledger"):
        ledger.commit(other)


def test_unknown_prices_count_runs_but_not_money() -> None:
    ledger = SpendLedger([AIO, RB_UNPRICED])
    token = _token(ledger.reserve(1, "high"))
    assert token.price is None
    snap = ledger.snapshot()
    assert snap.lanes[1].spent is None and snap.spent is None
    ledger.release(token)  # certainly not created: the money is known again
    assert ledger.snapshot().spent == 0.0
    ledger.commit(_token(ledger.reserve(1, "high")))
    snap = ledger.snapshot()
    assert (snap.lanes[1].created, snap.lanes[1].spent, snap.spent) == (1, None, None)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "commit", "release", "uncertain", "refund"]),
        st.integers(0, 2),
        st.sampled_from(["medium", "high", None]),
        st.integers(0, 50),
    ),
    max_size=80,
)
PRICED = [
    AIO,
    RB,
    Lane("runbase", "sk-test-decimal", prices={"medium": 0.1, "high": 0.3}, label="dec"),
]


@settings(max_examples=200, deadline=None)
@given(cap=st.one_of(st.integers(0, 120), st.decimals("0", "5", places=2)), ops=OPS)
def test_committed_plus_reserved_never_passes_the_cap(
    cap: object, ops: list[tuple[str, int, str | None, int]]
) -> None:
    cap_value = float(cap)  # type: ignore[arg-type]
    ledger = SpendLedger(PRICED, cap=cap_value)
    live: list[SpendToken] = []
    stage: dict[int, str] = {}
    for op, lane, quality, pick in ops:
        if op == "reserve":
            result = ledger.reserve(lane, quality)
            if isinstance(result, SpendToken):
                live.append(result)
                stage[result.id] = "reserved"
        elif live:
            token = live[pick % len(live)]
            try:
                outcome = getattr(ledger, op)(token)
            except ValueError:
                outcome = None  # a stage it cannot leave: nothing changed
            else:
                if op != "refund":
                    moved = {"commit": "committed", "release": "released"}
                    stage[token.id] = moved.get(op, "uncertain")
                elif outcome:
                    stage[token.id] = "refunded"
        _check(ledger, live, stage, cap_value)


def _check(ledger: SpendLedger, live: list[SpendToken], stage: dict[int, str], cap: float) -> None:
    def total(stages: tuple[str, ...], lane: int | None = None) -> Fraction:
        return sum(
            (
                Fraction(str(t.price))
                for t in live
                if stage[t.id] in stages and lane in (None, t.lane)
            ),
            Fraction(0),
        )

    paid, held = total(("committed",)), total(("reserved", "uncertain"))
    snap = ledger.snapshot()
    assert paid + held <= Fraction(str(cap))
    # The ledger agrees with the model: released and refunded tokens never count.
    assert snap.spent == float(paid) and snap.reserved == float(held)
    assert [s.spent for s in snap.lanes] == [float(total(("committed",), i)) for i in range(3)]
    assert snap.headroom == float(Fraction(str(cap)) - paid - held)


def test_the_ledger_keeps_nothing_per_create_once_settled() -> None:
    # A web app's session lives for weeks: what the ledger holds must not grow
    # with the runs it has seen, only with the tokens still held by creates.
    import tracemalloc

    ledger = SpendLedger([AIO, RB])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            token = _token(ledger.reserve(i % 2, "medium"))
            (ledger.commit if i % 2 else ledger.release)(token)
        del token
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000, grown  # an entry per create would be ~1 MB
    assert sum(lane.created for lane in ledger.snapshot().lanes) == 5_000


def test_a_failed_run_is_refunded_by_its_lane_and_quality_without_its_token() -> None:
    ledger = SpendLedger([AIO, RB])
    for quality in ("medium", "high", None):  # None: the default quality, medium
        ledger.commit(_token(ledger.reserve(1, quality)))
    ledger.commit(_token(ledger.reserve(0, "high")))
    assert ledger.refund_created(1, "high") and ledger.refund_created(1, None)
    assert not ledger.refund_created(0, "high")  # API in One documents no refunds
    rb, aio = ledger.snapshot().lanes[1], ledger.snapshot().lanes[0]
    assert (rb.created, rb.refunded, rb.spent) == (3, 2, 4.0)
    assert (aio.created, aio.refunded, aio.spent) == (1, 0, 28.0)
    assert ledger.refund_created(1, "medium")
    # Nothing created is left to refund: never a negative count, never money made up.
    assert not ledger.refund_created(1, "medium")
    assert ledger.snapshot().lanes[1].spent == 0.0


async def test_no_spend_token_is_held_per_run_in_flight() -> None:
    # A session with 10,000 runs in flight held a done-callback and the spend token
    # of each on a lane that refunds failures (~370 B a run, issue 19's memory row).
    import gc

    import gptimage_async as gi
    from gptimage_async.simulator import SimulatorConfig
    from gptimage_async.testing import memory_session

    # Runs of a day at a 0.01 time scale: 20 creates within one 0.1 s window, none ends.
    config = SimulatorConfig(time_scale=0.01, duration_min=86_400.0, duration_max=86_400.0)
    async with memory_session("runbase", config=config, on_exit="cancel") as (sim, session):
        runs = [await session.submit(f"long {i}") for i in range(20)]
        assert sim.stats.creates == 20 and not any(run.done() for run in runs)
        gc.collect()
        held = [o for o in gc.get_objects() if isinstance(o, SpendToken)]
        spend = session.stats.spend
        assert held == []
        assert isinstance(session.stats, gi.PoolStats)
        assert spend is not None and spend.lanes[0].created == 20


def test_a_create_cancelled_keeps_only_an_attempt_still_out_as_maybe_paid() -> None:
    from gptimage_async._pool import CreateSpend

    ledger = SpendLedger([RB], cap=30)
    waiting = CreateSpend(ledger, _token(ledger.reserve(0, "high")))
    waiting.cancelled()  # no attempt out (waiting for a slot): released
    out = CreateSpend(ledger, _token(ledger.reserve(0, "high")))
    out.sent()
    out.cancelled()  # an attempt out: maybe paid
    assert (ledger.snapshot().reserved, ledger.snapshot().lanes[0].uncertain) == (11.5, 1)
    out.settled()  # it came back certainly refused (a connect refused): released after all
    assert ledger.snapshot().reserved == 0
    resent = CreateSpend(ledger, _token(ledger.reserve(0, "high")))
    resent.sent()
    resent.resend()  # 11.5 maybe paid + 11.5 for the resend fit under 30
    with pytest.raises(SpendCapError):
        resent.resend()  # a third does not
    assert resent.resent and ledger.snapshot().reserved == 23.0
