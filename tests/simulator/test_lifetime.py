"""The simulator package, its server's start and close, and ``serve_forever`` in a process."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import signal
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

import gptimage_async.simulator as simulator_pkg
from gptimage_async.simulator import Faults, SimulatorConfig

from .wire import (
    GOOD_INPUT,
    RB_KEY,
    RB_MODEL,
    ROOT,
    auth,
    make,
    rb_create,
    request,
)

# -- package and lifetime ------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    public = sorted(simulator_pkg.__all__)
    assert simulator_pkg.__all__ == public
    for name in public:
        assert getattr(simulator_pkg, name) is not None
        obj = getattr(simulator_pkg, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name


async def test_urls_and_lifetime() -> None:
    sim = make()
    with pytest.raises(RuntimeError):
        _ = sim.port
    async with sim:
        assert sim.url == f"http://127.0.0.1:{sim.port}"
        assert sim.base_url("runbase") == f"{sim.url}/runbase/api/v1"
        assert sim.base_url("apiinone") == f"{sim.url}/apiinone/api/v1"
        assert "127.0.0.1" in repr(sim)
        with pytest.raises(RuntimeError):
            await sim.start()
    await sim.close()  # twice is fine
    with pytest.raises(RuntimeError):
        await sim.start()


async def test_start_and_close_without_context_manager(session: aiohttp.ClientSession) -> None:
    sim = make()
    await sim.start()
    try:
        assert (await rb_create(session, sim)).status == 200
        url = sim.base_url("runbase") + "/runs"
    finally:
        await sim.close()
    with pytest.raises(RuntimeError):
        sim.base_url("runbase")
    with pytest.raises(aiohttp.ClientConnectionError):
        await request(session, "POST", url, json={}, headers=auth(RB_KEY))


def test_config_validation_and_replace() -> None:
    config = SimulatorConfig()
    assert config.replace(time_scale=0.5).time_scale == 0.5
    assert config.scaled(10.0) == 10.0
    bad: list[dict[str, Any]] = [
        {"time_scale": 0},
        {"duration": "gaussian"},
        {"duration_min": 5, "duration_max": 4},
        {"failure_rate": 1.5},
        {"rate_limit": 0},
        {"retry_after": "minutes"},
        {"apiinone_shape": "xml"},
        {"apiinone_url_location": "body"},
        {"images_per_run": 0},
    ]
    for changes in bad:
        with pytest.raises(ValueError, match=r"must|need"):
            config.replace(**changes)
    with pytest.raises(ValueError, match="probability"):
        Faults(reset=-0.1)
    with pytest.raises(ValueError, match="outage"):
        Faults(outage=(5.0, 1.0))


# -- standalone server -------------------------------------------------------------------


async def test_serve_forever_prints_base_urls_and_serves() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    code = (
        "from gptimage_async.simulator import SimulatorConfig, serve_forever\n"
        "serve_forever('127.0.0.1', 0, SimulatorConfig(time_scale=0.01))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        second = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        runbase = re.search(r"http://127\.0\.0\.1:\d+/runbase/api/v1", first)
        apiinone = re.search(r"http://127\.0\.0\.1:\d+/apiinone/api/v1", second)
        assert runbase
        assert apiinone
        async with aiohttp.ClientSession() as client:
            body = {"model": RB_MODEL, "input": GOOD_INPUT}
            url = runbase.group(0) + "/runs"
            async with client.post(url, json=body, headers=auth(RB_KEY)) as resp:
                assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, stderr.decode()
