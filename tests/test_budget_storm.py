"""A short 429 storm is a pause, not a new limit; a real lower limit is still learned."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

import gptimage_async as gi
from gptimage_async._budget import RateLimiter
from gptimage_async._budget.evidence import STORM_WINDOWS

from ._clock import FakeClock
from .budget_traces import TraceServer, drive


@pytest.fixture(autouse=True)
def seeded_jitter() -> Iterator[None]:
    """The same traces at every run: the waits after a 429 with no Retry-After
    are full-jitter draws from ``random`` (unseeded, about 1 trace in 30 left
    the last window of the short-storm test at 17 of 20)."""
    state = random.getstate()
    random.seed(1)
    yield
    random.setstate(state)


@pytest.mark.parametrize("retry_after", [None, 1.0])
@pytest.mark.parametrize(("window", "storm"), [(10.0, 3.0), (1.0, 3.0)])
async def test_a_short_overload_storm_is_a_pause(
    fake_clock: FakeClock, window: float, storm: float, retry_after: float | None
) -> None:
    # The key's limit is 20/s throughout and the belief knows it; for `storm`
    # seconds the provider refuses everything, whatever we send.
    limit = round(20 * window)
    server = TraceServer(limit, window, retry_after=retry_after)
    start = 6 * window
    server.storms.append((start, start + storm))
    limiter = RateLimiter(gi.RateLimit(limit, window))
    end = start + storm + 3 * window
    await fake_clock.run(drive(limiter, server, end))
    assert len(server.refused) >= 3  # a storm indeed, not one stray 429
    # Within 3 windows of its end: the belief and the traffic are back at >= 90%.
    assert limiter.rate >= 0.9 * 20.0, limiter.adaptive
    assert server.accepted_between(end - window, end) >= 0.9 * limit


async def test_a_lower_limit_is_still_learned(fake_clock: FakeClock) -> None:
    # The key's limit really halves at t=60 and stays there.
    server = TraceServer(200, 10.0, drops_to=(60.0, 100))
    limiter = RateLimiter(gi.RateLimit(200, 10.0))
    end = 60.0 + (STORM_WINDOWS + 4) * 10.0
    await fake_clock.run(drive(limiter, server, end))
    assert limiter.rate <= 1.05 * 10.0, limiter.adaptive
    assert limiter.adaptive.cuts >= 1
    # Until the storm rule gives up (STORM_WINDOWS windows) each refusal is a
    # pause of a slot or so: a few per window. Then they stop, and the last
    # window runs near the new limit.
    after = [t for t in server.refused if t >= 60.0]
    assert len(after) <= 10 * STORM_WINDOWS, len(after)
    assert sum(t >= end - 30.0 for t in after) <= 2, after
    assert server.accepted_between(end - 10.0, end) >= 0.85 * 100


async def test_a_storm_that_never_ends_is_learned_as_the_limit(fake_clock: FakeClock) -> None:
    # From t=60 on the provider lets 5/s through: past STORM_WINDOWS windows no
    # window that went through whole is left to explain it away.
    server = TraceServer(200, 10.0, drops_to=(60.0, 50))
    limiter = RateLimiter(gi.RateLimit(200, 10.0))
    await fake_clock.run(drive(limiter, server, 60.0 + (STORM_WINDOWS + 6) * 10.0))
    assert limiter.rate <= 1.05 * 5.0, limiter.adaptive
