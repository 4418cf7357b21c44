"""Every error status, over HTTP from the simulator, for both providers."""

from __future__ import annotations

import email.utils
import time

import aiohttp
import pytest

import gptimage_async as gi
from gptimage_async._providers import get_provider
from gptimage_async.simulator import Faults, Simulator
from gptimage_async.testing import TEST_KEYS, memory_session, simulated_session

from ._clock import FakeClock
from .helpers import config

PROVIDERS = ["runbase", "apiinone"]


def raw_client(provider: str) -> aiohttp.ClientSession:
    """A bare HTTP client with the provider's test key: to send what the library never would."""
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {TEST_KEYS[provider]}"})


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_401_bad_key(provider: str) -> None:
    async with simulated_session(
        provider,
        config=config(api_keys={"sk-good", "aio_good"}),
        api_key="sk-bad" if provider == "runbase" else "aio_bad",
    ) as (sim, session):  # type: ignore[arg-type]
        with pytest.raises(gi.AuthenticationError) as info:
            await session.submit("a prompt")
        assert info.value.status_code == 401
        assert "bad" not in str(info.value)  # the key is not echoed


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_402_out_of_credits(provider: str) -> None:
    async with simulated_session(provider, config=config(credits=25)) as (sim, session):  # type: ignore[arg-type]
        await session.generate("first is fine")
        with pytest.raises(gi.InsufficientCreditsError) as info:
            await session.submit("second is not", quality="high")
        assert info.value.status_code == 402


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_403_blocked_key(provider: str) -> None:
    key = "sk-blocked" if provider == "runbase" else "aio_blocked"
    async with simulated_session(
        provider, config=config(blocked_keys=frozenset({key})), api_key=key
    ) as (sim, session):  # type: ignore[arg-type]
        with pytest.raises(gi.PermissionDeniedError) as info:
            await session.submit("a prompt")
        assert info.value.status_code == 403


async def test_quota_exceeded_is_never_retried() -> None:
    async with simulated_session(config=config(quota=1)) as (sim, session):
        await session.generate("uses the quota")
        with pytest.raises(gi.QuotaExceededError) as info:
            await session.submit("over quota")
        assert info.value.code == "USAGE_EXCEEDED"
        assert isinstance(info.value, gi.RateLimitError)
        assert sim.stats.create_requests == 2  # not retried


async def test_apiinone_quota_is_permission_denied() -> None:
    async with simulated_session("apiinone", config=config(quota=0)) as (sim, session):
        with pytest.raises(gi.PermissionDeniedError):
            await session.submit("over quota")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_400_from_the_server_is_bad_request(provider: str) -> None:
    # The client validates first, so provoke the server with a tampered body.
    adapter = get_provider(provider)
    async with Simulator(config()) as sim, raw_client(provider) as http:
        url = sim.base_url(provider) + adapter.create_path  # type: ignore[arg-type]
        async with http.post(url, data=b"{not json") as answer:
            status, body = answer.status, await answer.read()
    error = adapter.decode_error(status, body, run_id=None, retry_after=None)
    assert isinstance(error, gi.BadRequestError)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", ["envelope", "flat", "mixed"])
async def test_apiinone_shapes_over_http(provider: str, shape: str) -> None:
    if provider == "runbase" and shape != "envelope":
        pytest.skip("Runbase has one shape")
    cfg = config(
        apiinone_shape=shape, apiinone_url_location="random", apiinone_status_variants=True
    )
    async with simulated_session(provider, config=cfg) as (sim, session):  # type: ignore[arg-type]
        results = await session.generate_many([f"prompt {i}" for i in range(20)])
        assert all(r.urls for r in results)


@pytest.mark.parametrize("mode", ["seconds", "http-date", "none"])
@pytest.mark.parametrize("count_rejected", [False, True])
async def test_429s_with_every_retry_after_form_still_resolve(
    fake_clock: FakeClock, mode: str, count_rejected: bool
) -> None:
    # The client believes 4x the real limit: 429s come, and must be survived.
    # In memory on the fake clock: an HTTP-date's whole seconds cost no wall time
    # (the 429 over a socket: test_http_date_retry_after_is_honoured, the fault matrix).
    cfg = config(rate_limit=5, retry_after=mode, count_rejected=count_rejected)

    async def body() -> None:
        async with memory_session(config=cfg, rate_limit=gi.RateLimit(20, 0.1)) as (sim, session):
            results = await session.generate_many([f"p{i}" for i in range(15)])
            assert len(results) == 15
            assert sim.stats.rate_limited >= 1
            assert session.stats.rate_limited == sim.stats.rate_limited
            assert sim.stats.duplicates == 0
            assert session.limiter.rate < 200  # it slowed down
            # A process-local budget: nothing shared, no Redis to fail.
            assert not session.limiter.shared and session.limiter.redis_errors == 0

    await fake_clock.run(body())


async def test_http_date_retry_after_is_honoured() -> None:
    # One request per 1 s window (time_scale 1): the second must wait for the date.
    cfg = config(time_scale=1.0, rate_limit=1, rate_window=1.0, retry_after="http-date")
    async with Simulator(cfg) as sim, raw_client("runbase") as http:
        url = sim.base_url("runbase") + "/runs/x"
        async with http.get(url):
            pass
        async with http.get(url) as answer:
            assert answer.status == 429
            date = email.utils.parsedate_to_datetime(answer.headers["retry-after"])
        assert date.timestamp() > time.time() - 1


async def test_503_on_create_is_retried_and_succeeds() -> None:
    cfg = config(faults=Faults(create_5xx=0.5))
    async with simulated_session(config=cfg, max_create_attempts=20) as (sim, session):
        results = await session.generate_many([f"p{i}" for i in range(10)])
        assert len(results) == 10
        assert sim.stats.faults["create_5xx"] >= 1
        assert session.stats.create_retries >= 1
        assert sim.stats.duplicates == 0


async def test_connection_refused_create_is_retried_then_reported() -> None:
    async with gi.Session(
        "runbase",
        api_key="sk-x",
        base_url="http://127.0.0.1:9/api/v1",
        max_create_attempts=2,
        rate_limit=gi.RateLimit(1000, 1.0),
    ) as session:
        with pytest.raises(gi.APIConnectionError) as info:
            await session.submit("nobody home")
        assert not isinstance(info.value, gi.UncertainCreateError)
        assert session.stats.create_retries == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_create_that_took_effect_but_answered_500_is_not_resent(provider: str) -> None:
    cfg = config(faults=Faults(create_500_after_effect=1.0))
    async with simulated_session(provider, config=cfg) as (sim, session):  # type: ignore[arg-type]
        with pytest.raises(gi.UncertainCreateError) as info:
            await session.submit("paid once")
        assert info.value.prompt == "paid once"
        assert "resend_uncertain_creates" in str(info.value)
        assert sim.stats.creates == 1 and sim.stats.create_requests == 1
        assert session.stats.uncertain_creates == 1


async def test_reset_after_create_is_uncertain_too() -> None:
    async with simulated_session(config=config(faults=Faults(reset_after_create=1.0))) as (
        sim,
        session,
    ):
        with pytest.raises(gi.UncertainCreateError):
            await session.submit("maybe paid")
        assert sim.stats.create_requests == 1


async def test_truncated_create_answer_is_uncertain() -> None:
    cfg = config(faults=Faults(truncated_json=1.0, applies_to=frozenset({"runbase"})))
    async with simulated_session(config=cfg) as (sim, session):
        with pytest.raises(gi.UncertainCreateError):
            await session.submit("answer cut short")
        assert sim.stats.creates == 1


async def test_opt_in_resends_uncertain_creates() -> None:
    cfg = config(faults=Faults(create_500_after_effect=0.5))
    async with simulated_session(
        config=cfg, resend_uncertain_creates=True, max_create_attempts=20
    ) as (sim, session):
        results = await session.generate_many([f"p{i}" for i in range(10)])
        assert len(results) == 10
        # Resending is what the user asked for: duplicates are possible and counted.
        assert sim.stats.creates >= 10


async def test_timeout_after_sending_create_is_uncertain() -> None:
    cfg = config(faults=Faults(slow=1.0, slow_seconds=100.0))  # 1 s at this scale
    async with simulated_session(config=cfg, request_timeout=0.1, on_exit="cancel") as (
        sim,
        session,
    ):
        with pytest.raises(gi.UncertainCreateError) as info:
            await session.submit("slow answer")
        assert "timed out" in str(info.value)


async def test_polls_survive_5xx_resets_and_truncation() -> None:
    faults = Faults(
        poll_5xx=0.2, reset=0.05, truncated_json=0.05, applies_to=frozenset({"runbase"})
    )
    async with simulated_session(config=config(faults=faults), resend_uncertain_creates=False) as (
        sim,
        session,
    ):
        outcomes = await session.generate_many([f"p{i}" for i in range(60)], return_exceptions=True)
        assert len(outcomes) == 60
        ok = [o for o in outcomes if isinstance(o, gi.Result)]
        assert all(
            isinstance(o, gi.GPTImageError) for o in outcomes if not isinstance(o, gi.Result)
        )
        # Creates hit by a reset or truncation are uncertain; every poll fault is survived.
        uncertain = [o for o in outcomes if isinstance(o, gi.UncertainCreateError)]
        assert len(ok) + len(uncertain) == 60
        assert sim.stats.faults["poll_5xx"] >= 1
        assert (
            session.stats.server_errors
            + session.stats.connection_errors
            + session.stats.poll_errors
            >= 1
        )
