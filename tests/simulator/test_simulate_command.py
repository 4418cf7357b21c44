"""``simulate``'s options reach every setting; a bad one exits 2; per-key limits are served."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from gptimage_async._cli import main
from gptimage_async._cli._args import parser as _parser
from gptimage_async.simulator import (
    Faults,
    KeyConfig,
    SimulatorConfig,
)
from gptimage_async.simulator._options import config_from_options
from tests.test_cli import run_cli, start_simulate

from .wire import (
    auth,
    request,
)

# -- the simulate command's options -------------------------------------------------------


def simulate_config(*options: str) -> SimulatorConfig:
    return config_from_options(_parser().parse_args(["simulate", *options]))


def test_simulate_options_reach_every_setting() -> None:
    config = simulate_config(
        "--key", "sk-a:limit=20/10,credits=500",
        "--key", "aio_b:quota=50,spend=1000,price=8/20",
        "--key", "sk-c:limit=none",
        "--credits", "100", "--quota", "9", "--spend-limit", "90", "--price", "10/28",
        "--count-rejected", "--retry-after", "http-date",
        "--outage", "30:45", "--read-lag", "3",
        "--fault", "keepalive_close=0.5", "--fault", "keepalive_close_after=2",
        "--fault", "slow_seconds=4", "--variants",
    )  # fmt: skip
    assert config.keys == {
        "sk-a": KeyConfig(rate_limit=20, rate_window=10.0, credits=500),
        "aio_b": KeyConfig(quota=50, spend_limit=1000, prices={"medium": 8, "high": 20}),
        "sk-c": KeyConfig(rate_limit=None),
    }
    assert config.limits("sk-c").rate_limit is None
    assert config.limits("sk-c").credits == 100
    assert (config.credits, config.quota, config.spend_limit) == (100, 9, 90)
    assert config.count_rejected and config.retry_after == "http-date"
    assert config.read_lag == 3.0
    assert config.faults == Faults(
        outage=(30.0, 45.0), keepalive_close=0.5, keepalive_close_after=2.0, slow_seconds=4.0
    )
    assert config.apiinone_shape == "mixed" and config.error_variants
    default = simulate_config()
    assert default.apiinone_shape == "envelope" and not default.apiinone_status_variants
    assert (default.credits, default.quota, default.keys) == (None, None, {})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--fault", "keepalive_close=4"], "between 0 and 1"),
        (["--fault", "gremlins=0.5"], "unknown fault 'gremlins'"),
        (["--key", "sk-a:limit=20"], "N/SECONDS"),
        (["--key", "sk-a:color=red"], "SETTING=VALUE"),
        (["--key", "sk-a:credits=-3"], "0 or more"),
        (["--key", ":credits=3"], "no key given"),
        (["--key", "sk-a", "--key", "sk-a:credits=1"], "given twice"),
        (["--outage", "45:30"], "end after it starts"),
        (["--price", "10"], "MEDIUM/HIGH"),
    ],
)
def test_bad_simulate_options_exit_2(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: argparse exits 2 on a bad value; a contradiction returns 2.
    code: object
    try:
        code = main(["simulate", *options])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    assert "Traceback" not in stderr


async def test_the_simulate_command_refuses_a_bad_option() -> None:
    done = await run_cli("simulate", "--key", "sk-a:limit=fast")
    assert done.code == 2
    assert "N/SECONDS" in done.stderr


async def test_simulate_serves_per_key_limits_and_credits() -> None:
    server, url = await start_simulate(
        "--key", "sk-a:limit=2/100,credits=10", "--key", "sk-b:quota=0"
    )  # fmt: skip
    try:
        body = {"model": "openai/gpt-image-1.5", "input": {"prompt": "a lamp"}}
        async with aiohttp.ClientSession() as client:

            async def post(key: str) -> int:
                answer = await request(client, "POST", f"{url}/runs", json=body, headers=auth(key))
                return answer.status

            assert [await post("sk-a") for _ in range(3)] == [200, 402, 429]
            assert await post("sk-b") == 429  # USAGE_EXCEEDED at once
            assert [await post("sk-c") for _ in range(3)] == [200, 200, 200]  # unlimited
    finally:
        server.send_signal(signal.SIGINT)
        await asyncio.wait_for(server.communicate(), 30)
