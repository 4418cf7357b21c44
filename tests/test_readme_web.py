"""The README's web apps, served for real: what a reader's client would see.

The blocks are taken from README.md as written, run in a fresh namespace with
``GPTIMAGE_BASE_URL`` pointing at a simulator, and served on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import TEST_KEYS
from tests.readme_harness import blocks_under
from tests.web.servers import client, serve_aiohttp, serve_uvicorn


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(time_scale=0.01, rate_limit=None)) as server:
        monkeypatch.setenv("GPTIMAGE_BASE_URL", server.base_url("runbase"))
        monkeypatch.setenv("RUNBASE_API_KEY", TEST_KEYS["runbase"])
        yield server


def run_blocks(*headings: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme"}
    for heading in headings:
        blocks = blocks_under(heading)
        assert blocks, f"no Python block under {heading!r}"
        for source in blocks:
            exec(compile(source, f"README.md ({heading})", "exec"), namespace)
    return namespace


async def test_the_fastapi_app_answers_bad_input_with_422_not_500(sim: Simulator) -> None:
    app = run_blocks("FastAPI and Starlette", "Submit now, check later")["app"]
    async with serve_uvicorn(app) as url, client(url) as http:
        async with http.post("/generate", params={"prompt": ""}) as answer:
            assert answer.status == 422
            assert (await answer.json())["error"] == "InvalidRequestError"
        async with http.post("/generate", params={"prompt": "a lamp"}) as answer:
            assert answer.status == 200
            assert len((await answer.json())["urls"]) == 1
        async with http.post("/runs", params={"prompt": "a chair"}) as answer:
            assert answer.status == 202
            run_id = (await answer.json())["run_id"]
        for _ in range(200):
            async with http.get(f"/runs/{run_id}") as answer:
                payload = await answer.json()
            if payload["status"] == "succeeded":
                break
            await asyncio.sleep(0.02)
        assert payload["status"] == "succeeded" and payload["urls"]
    assert sim.stats.duplicates == 0


async def test_the_aiohttp_app_answers_bad_input_with_422_not_500(sim: Simulator) -> None:
    namespace = run_blocks("aiohttp.web")
    async with serve_aiohttp(namespace["app"]) as url, client(url) as http:
        async with http.post("/generate", json={"prompt": ""}) as answer:
            assert answer.status == 422
        # A body that is not JSON, or has no prompt: 400 with a reason, never a bare 500.
        for body in (b"not json", b"{}", b"[1]", b'"a lamp"', b"\xff"):
            async with http.post("/generate", data=body) as answer:
                assert answer.status == 400, body
                assert "prompt" in (await answer.json())["detail"]
        async with http.post("/generate", json={"prompt": 5}) as answer:
            assert answer.status in (400, 422)
        async with http.post("/generate", json={"prompt": "a lamp"}) as answer:
            assert answer.status == 200
            assert len((await answer.json())["urls"]) == 1


def test_the_aiohttp_snippet_does_not_take_the_simulators_port() -> None:
    (source,) = blocks_under("aiohttp.web")
    assert "run_app(app, port=8000)" in source


def test_a_missing_framework_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "import gptimage_async.integrations.starlette\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "ModuleNotFoundError" in proc.stderr
    assert "pip install -e '.[fastapi]'" in proc.stderr
