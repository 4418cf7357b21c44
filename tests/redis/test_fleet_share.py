"""A process's share of a fleet's rate: the fair-share polls' budget (issue 22).

Little's law gives each run ``rate x mean duration / runs in flight``
requests of budget; in a fleet a process sees only its own runs in flight,
so the rate it divides must be its share of the key's, about
``rate / live_processes``, or each run is given a whole fleet's budget and
polled several times too often. Real ``redis-server``; each limiter is one
member of the fleet, as each process's is.
"""

from __future__ import annotations

import gptimage_async as gi
from gptimage_async._budget import RateLimiter
from gptimage_async._budget.shared import SharedLimiter
from gptimage_async._planner import PLANNED_DONE_SHARE, poll_share

from ..test_planner import band_model
from .conftest import RedisServer

BELIEF = gi.RateLimit(requests=20, per=10.0, ceiling=True)


async def test_every_member_of_a_fleet_counts_the_others(redis_server: RedisServer) -> None:
    fleet = [
        SharedLimiter(BELIEF, provider="runbase", api_key="sk-fleet-share", redis=redis_server.url)
        for _ in range(4)
    ]
    try:
        for member in fleet:
            await member.start()
        await fleet[0].acquire()  # a Redis answer after all four joined
        assert fleet[0].live_processes == 4
        assert all(1 <= member.live_processes <= 4 for member in fleet)
    finally:
        for member in fleet:
            await member.aclose()
    assert RateLimiter(BELIEF).live_processes == 1  # a budget of its own


def test_a_quarter_of_the_rate_gives_a_run_a_quarter_of_the_polls() -> None:
    # 4 processes at 1/2 of a 20/10 s budget in all, runs 8-10 s (mean 9): each has
    # about 2 runs in flight. Divided into the whole rate, each run gets 8 requests
    # (7 polls); into its process's quarter, 2: a create and the planned poll only.
    model = band_model((8.0, 10.0, 400))
    whole = poll_share(model, rate=2.0, in_flight=2, slots_per_window=20.0)
    quarter = poll_share(model, rate=2.0 / 4, in_flight=2, slots_per_window=20.0)
    assert whole < 0.1 and quarter == PLANNED_DONE_SHARE
