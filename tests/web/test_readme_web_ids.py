"""The README's "Submit now, check later" app answers only for the runs it created."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import TEST_KEYS
from tests.readme_harness import blocks_under

from .servers import client, serve_uvicorn


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(time_scale=0.01, rate_limit=None)) as server:
        monkeypatch.setenv("GPTIMAGE_BASE_URL", server.base_url("runbase"))
        monkeypatch.setenv("RUNBASE_API_KEY", TEST_KEYS["runbase"])
        monkeypatch.setenv("GPTIMAGE_APP_SECRET", "the README app's secret, 16+ bytes")
        yield server


def readme_app() -> Any:
    namespace: dict[str, Any] = {"__name__": "readme"}
    for heading in ("FastAPI and Starlette", "Submit now, check later"):
        for source in blocks_under(heading):
            exec(compile(source, f"README.md ({heading})", "exec"), namespace)
    return namespace["app"]


async def test_the_readme_app_serves_only_its_own_runs(sim: Simulator) -> None:
    async with serve_uvicorn(readme_app()) as url, client(url) as http:
        async with http.post("/runs", params={"prompt": "a chair"}) as answer:
            assert answer.status == 202
            run_id = (await answer.json())["run_id"]
        provider_id = run_id.rpartition(".")[0]
        assert provider_id in sim.runs
        async with asyncio.timeout(10):
            while True:
                async with http.get(f"/runs/{run_id}") as answer:
                    assert answer.status == 200
                    payload = await answer.json()
                if payload["status"] == "succeeded":
                    break
                await asyncio.sleep(0.02)
        assert payload["run_id"] == run_id and payload["urls"]
        requests = sim.stats.requests
        for made_up in ["run_madeup", provider_id, f"{provider_id}.forged", "x" * 200]:
            async with http.get(f"/runs/{made_up}") as answer:
                assert answer.status == 404, made_up
        assert sim.stats.requests == requests  # no made-up id reached the provider
    assert sim.stats.status_counts[404] == 0
