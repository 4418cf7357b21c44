"""Lane and Pool: what a pool is made of, checked before anything is sent."""

from __future__ import annotations

import pytest

import gptimage_async as gi
from gptimage_async._budget import budget_id
from gptimage_async._pool import DEFAULT_PRICES, Lane, Pool, lane_fingerprint

KEY_A = "sk-test-aaaaaaaaaaaaaaaa"
KEY_B = "sk-test-bbbbbbbbbbbbbbbb"
AIO = "aio_test_cccccccccccccccc"


def test_a_lane_takes_the_providers_defaults() -> None:
    lane = Lane("apiinone", AIO)
    assert lane.provider == "apiinone"
    assert lane.base_url == "https://apiin.one/api/v1"
    assert lane.rate_limit == gi.RateLimit(10, 10.0)
    assert dict(lane.prices) == {"medium": 10, "high": 28}  # API in One's published prices
    assert lane.price(None) == 10 and lane.price("high") == 28
    assert not lane.refunds_failed
    runbase = Lane("runbase", KEY_A)
    assert dict(runbase.prices) == {}  # Runbase publishes none
    assert runbase.price("medium") is None
    assert runbase.refunds_failed


def test_given_prices_are_merged_over_the_published_ones() -> None:
    lane = Lane("apiinone", AIO, prices={"high": 25.5})
    assert dict(lane.prices) == {"medium": 10, "high": 25.5}
    assert dict(DEFAULT_PRICES["apiinone"]) == {"medium": 10, "high": 28}  # not mutated


def test_the_key_is_never_shown() -> None:
    lane = Lane("runbase", KEY_A, label="main")
    for text in (repr(lane), str(lane), repr(lane.api_key), repr(Pool([lane]))):
        assert KEY_A not in text
        assert "aaaa" not in text
    assert lane.api_key.reveal() == KEY_A


def test_the_fingerprint_is_the_head_of_the_budget_id() -> None:
    lane = Lane("runbase", KEY_A)
    assert lane.fingerprint == budget_id("runbase", KEY_A)[:12]
    assert lane.fingerprint == lane_fingerprint("runbase", KEY_A)
    assert lane.fingerprint != Lane("runbase", KEY_B).fingerprint
    assert lane.fingerprint != Lane("apiinone", KEY_A).fingerprint  # the seller is in it
    assert lane.label == f"runbase:{lane.fingerprint}"


def test_the_key_comes_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNBASE_API_KEY", f"  {KEY_B} ")
    assert Lane("runbase").api_key.reveal() == KEY_B
    monkeypatch.delenv("RUNBASE_API_KEY")
    with pytest.raises(gi.ConfigurationError, match="RUNBASE_API_KEY"):
        Lane("runbase")


def test_a_lane_is_frozen_and_equal_by_provider_key_and_url() -> None:
    lane = Lane("runbase", KEY_A)
    with pytest.raises(AttributeError):
        lane.label = "x"  # type: ignore[misc]
    assert lane == Lane("runbase", KEY_A, label="other", prices={"medium": 3})
    assert lane != Lane("runbase", KEY_A, base_url="http://127.0.0.1:9999")
    assert len({lane, Lane("runbase", KEY_A)}) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"provider": "openai", "api_key": KEY_A}, "unknown provider 'openai'"),
        ({"provider": "runbase", "api_key": ""}, "no API key for runbase"),
        ({"provider": "runbase", "api_key": "sk-a b"}, "whitespace"),
        ({"provider": "runbase", "api_key": KEY_A, "base_url": "ftp://x"}, "http"),
        ({"provider": "runbase", "api_key": KEY_A, "base_url": "http://example.com"}, "loopback"),
        ({"provider": "runbase", "api_key": KEY_A, "rate_limit": "20/10"}, "RateLimit"),
        ({"provider": "runbase", "api_key": KEY_A, "prices": {"low": 1}}, "unknown quality 'low'"),
        ({"provider": "runbase", "api_key": KEY_A, "prices": {"high": -1}}, r"prices\['high'\]"),
        ({"provider": "runbase", "api_key": KEY_A, "prices": {"high": "5"}}, "a number"),
        ({"provider": "runbase", "api_key": KEY_A, "prices": {"high": True}}, "a number"),
        ({"provider": "runbase", "api_key": KEY_A, "prices": {"high": float("nan")}}, "finite"),
        ({"provider": "runbase", "api_key": KEY_A, "prices": [("high", 1)]}, "mapping"),
        ({"provider": "runbase", "api_key": KEY_A, "label": " "}, "label"),
        ({"provider": "runbase", "api_key": KEY_A, "label": "x" * 65}, "label"),
    ],
)
def test_bad_lanes_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(gi.ConfigurationError, match=message) as info:
        Lane(**kwargs)  # type: ignore[arg-type]
    assert KEY_A not in str(info.value)


def test_a_pool_keeps_its_lanes_in_order() -> None:
    lanes = [Lane("runbase", KEY_A), Lane("runbase", KEY_B), Lane("apiinone", AIO)]
    pool = Pool(lanes, routing="cheapest")
    assert pool.lanes == tuple(lanes)
    assert pool.routing == "cheapest" and pool.spend_cap is None
    assert Pool(lanes[:1]).routing == "earliest"
    with pytest.raises(AttributeError):
        pool.spend_cap = 3  # type: ignore[misc]


def _priced(key: str, label: str | None = None) -> Lane:
    return Lane("runbase", key, prices={"medium": 4, "high": 11}, label=label)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Pool([]), "at least one lane"),
        (lambda: Pool(Lane("runbase", KEY_A)), "iterable"),  # type: ignore[arg-type]
        (lambda: Pool(["runbase"]), "Lane objects"),  # type: ignore[list-item]
        (lambda: Pool([Lane("runbase", KEY_A), Lane("runbase", KEY_A, label="b")]), "same key"),
        (lambda: Pool([_priced(KEY_A, "x"), _priced(KEY_B, "x")]), "labelled 'x'"),
        (lambda: Pool([_priced(KEY_A)], routing="random"), "routing"),  # type: ignore[arg-type]
        (lambda: Pool([_priced(KEY_A)], spend_cap=-1), "spend_cap"),
        (lambda: Pool([_priced(KEY_A)], spend_cap="10"), "spend_cap"),  # type: ignore[arg-type]
        (lambda: Pool([_priced(KEY_A)], spend_cap=float("inf")), "spend_cap"),
        (
            lambda: Pool([_priced(KEY_A), Lane("runbase", KEY_B, label="rb2")], spend_cap=100),
            "lane 'rb2': a spend cap needs a price for every quality; "
            "none is known for high, medium",
        ),
        (
            lambda: Pool([Lane("runbase", KEY_B, prices={"high": 9}, label="h")], spend_cap=5),
            "none is known for medium",
        ),
    ],
)
def test_bad_pools_are_refused(build: object, message: str) -> None:
    with pytest.raises(gi.ConfigurationError, match=message) as info:
        build()  # type: ignore[operator]
    assert KEY_A not in str(info.value) and KEY_B not in str(info.value)


def test_the_same_key_on_another_url_is_the_same_lane() -> None:
    # A lane's identity in journals is provider:fingerprint: one key, one lane.
    local = Lane("runbase", KEY_A, base_url="http://127.0.0.1:1", label="l")
    with pytest.raises(gi.ConfigurationError, match=r"'runbase:.*' and 'l' are the same key"):
        Pool([Lane("runbase", KEY_A), local])


def test_a_cap_with_every_price_known_is_accepted() -> None:
    # Prices given to every lane: one unit, the user's (a cap never mixes units).
    pool = Pool([_priced(KEY_A), Lane("apiinone", AIO, prices={"medium": 10})], spend_cap=0)
    assert pool.spend_cap == 0
    assert Pool([Lane("apiinone", AIO)], spend_cap=5).lanes[0].unit == "credits"
