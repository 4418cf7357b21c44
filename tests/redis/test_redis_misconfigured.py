"""A Redis that refuses the session's settings is a usage error, not Redis away.

A wrong password or user, or a database number the server does not have, will
not change by waiting: the session refuses to open (``ConfigurationError``)
before any request, naming the setting and never the password. Redis that does
not answer at all stays what it was: the process paces on its own and rejoins.
"""

from __future__ import annotations

import logging

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

from .conftest import RedisServer

KEY = "sk-misconfigured-redis"
PASSWORD = "S3cretPassw0rd"


def _url(server: RedisServer, case: str) -> str:
    base = f"127.0.0.1:{server.port}"
    # (A password alone, to a server with none, is let through by redis-py: not a case.)
    return {
        "user": f"redis://someone:{PASSWORD}@{base}/0",  # a user and password it does not know
        "database": f"redis://{base}/99",  # a database number it does not have
    }[case]


@pytest.mark.parametrize("case", ["user", "database"])
async def test_a_setting_redis_refuses_stops_the_session_before_any_request(
    redis_server: RedisServer, case: str
) -> None:
    async with Simulator(SimulatorConfig(time_scale=0.01)) as sim:
        session = gi.Session(
            "runbase",
            api_key=KEY,
            base_url=sim.base_url("runbase"),
            redis=_url(redis_server, case),
        )
        with pytest.raises(gi.ConfigurationError) as info:
            async with session:  # it joins the key's budget as it opens: refused there
                pytest.fail("the session opened")
        assert sim.stats.requests == 0
        assert session.closed
    message = str(info.value)
    assert "refused this session's settings" in message, message
    assert PASSWORD not in message and KEY not in message and "someone" not in message


async def test_redis_not_answering_is_still_paced_alone(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_server.url
    redis_server.stop()  # nothing listens: that may change, so the session opens
    async with Simulator(SimulatorConfig(time_scale=0.01)) as sim:
        with caplog.at_level(logging.WARNING, logger="gptimage_async"):
            async with gi.Session(
                "runbase", api_key=KEY, base_url=sim.base_url("runbase"), redis=url
            ) as session:
                result = await session.generate("a lamp")
        assert result.urls and sim.stats.creates == 1
    assert any("did not answer" in record.getMessage() for record in caplog.records)
