"""The simulator, exercised over real HTTP with a raw aiohttp client.

Time is compressed (``time_scale`` 0.01-0.05) so a 3-10 s run takes tens of
milliseconds; waits in these tests are only ever a few of those.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

import gptimage_async.simulator as simulator_pkg
from gptimage_async.simulator import VARIANTS, Faults, Simulator, SimulatorConfig

from ._clock import FakeClock

RB_KEY = "sk-test"
AIO_KEY = "aio_test"
RB_MODEL = "openai/gpt-image-1.5"
AIO_MODEL = "gpt-image-1-5"
ROOT = Path(__file__).resolve().parents[1]
RESET_ERRORS = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)

NOT_DONE = {"pending", "queued", "in_progress", "processing", "running"}
SUCCEEDED = {"completed", "succeeded", "success"}
FAILED = {"failed", "error"}


# -- helpers -------------------------------------------------------------------


def make(**changes: Any) -> Simulator:
    """A simulator with fast time, a seed, and no rate limit unless asked."""
    settings: dict[str, Any] = {"time_scale": 0.01, "seed": 1234, "rate_limit": None}
    settings.update(changes)
    return Simulator(SimulatorConfig(**settings))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Answer(msgspec.Struct):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    async with session.request(method, url, json=json, data=data, headers=headers) as resp:
        return Answer(resp.status, dict(resp.headers), await resp.read())


async def rb_create(
    session: aiohttp.ClientSession,
    sim: Simulator,
    prompt: str = "a red fox in snow",
    *,
    key: str = RB_KEY,
    **fields: Any,
) -> Answer:
    body = {"model": RB_MODEL, "input": {"prompt": prompt, **fields}}
    return await request(
        session, "POST", sim.base_url("runbase") + "/runs", json=body, headers=auth(key)
    )


async def rb_get(
    session: aiohttp.ClientSession, sim: Simulator, run_id: str, *, key: str = RB_KEY
) -> Answer:
    return await request(
        session, "GET", f"{sim.base_url('runbase')}/runs/{run_id}", headers=auth(key)
    )


async def aio_create(
    session: aiohttp.ClientSession,
    sim: Simulator,
    prompt: str = "a red fox in snow",
    *,
    key: str = AIO_KEY,
    **fields: Any,
) -> Answer:
    body = {"model": AIO_MODEL, "prompt": prompt, **fields}
    return await request(
        session,
        "POST",
        sim.base_url("apiinone") + "/images/generations",
        json=body,
        headers=auth(key),
    )


async def aio_get(
    session: aiohttp.ClientSession, sim: Simulator, task_id: str, *, key: str = AIO_KEY
) -> Answer:
    url = f"{sim.base_url('apiinone')}/tasks/{task_id}"
    return await request(session, "GET", url, headers=auth(key))


def task_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The task object of an API in One answer, whichever shape it came in."""
    if "data" in body:
        assert body["code"] == 200
        assert body["message"] == "success"
        data: dict[str, Any] = body["data"]
        return data
    return body


def task_id_of(body: dict[str, Any]) -> str:
    fields = task_fields(body)
    return str(fields.get("task_id") or fields["id"])


def urls_at(fields: dict[str, Any]) -> tuple[str, list[str]] | None:
    """Where (by the simulator's location names) the URLs are, and the URLs."""
    output = fields.get("output")
    if isinstance(output, dict):
        return "output.urls", output["urls"]
    if isinstance(output, list):
        if output and isinstance(output[0], dict):
            return "output_list_obj", [item["url"] for item in output]
        return "output_list_str", output
    if "urls" in fields:
        return "urls", fields["urls"]
    if "result" in fields:
        return "result.urls", fields["result"]["urls"]
    if "images" in fields:
        return "images", [item["url"] for item in fields["images"]]
    return None


async def rb_wait(session: aiohttp.ClientSession, sim: Simulator, run_id: str) -> dict[str, Any]:
    for _ in range(500):
        body: dict[str, Any] = (await rb_get(session, sim, run_id)).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError("run never finished")


async def aio_wait(session: aiohttp.ClientSession, sim: Simulator, task_id: str) -> dict[str, Any]:
    for _ in range(500):
        fields = task_fields((await aio_get(session, sim, task_id)).json())
        if str(fields["status"]).lower() not in NOT_DONE:
            return fields
        await asyncio.sleep(0.01)
    raise AssertionError("task never finished")


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The chunks of a PNG, each CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking it decodes to that many pixels."""
    chunks = png_chunks(data)
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1][0] == b"IEND"
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, color) == (8, 2)
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    return width, height


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


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


# -- happy paths -----------------------------------------------------------------


async def test_runbase_happy_path(session: aiohttp.ClientSession) -> None:
    async with make(runbase_extra_fields=True) as sim:
        created = await rb_create(session, sim, "a lighthouse at dusk", aspect_ratio="3:2")
        assert created.status == 200
        assert created.headers["Content-Type"].startswith("application/json")
        run = created.json()
        assert re.fullmatch(r"run_[0-9a-f]{16}", run["id"])
        assert run["status"] == "pending"
        assert run["model"] == RB_MODEL
        assert "created_at" in run

        seen: list[str] = []
        for _ in range(500):
            body = (await rb_get(session, sim, run["id"])).json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] == "succeeded":
                break
            await asyncio.sleep(0.005)
        assert seen[-1] == "succeeded"
        assert set(seen) <= {"pending", "processing", "succeeded"}
        assert seen == sorted(seen, key=["pending", "processing", "succeeded"].index)
        assert "processing" in seen

        (url,) = body["output"]["urls"]
        image = await request(session, "GET", url)
        assert image.status == 200
        assert image.headers["Content-Type"] == "image/png"
        assert png_size(image.body) == (384, 256)

        record = sim.runs[run["id"]]
        assert record.protocol == "runbase"
        assert record.prompt == "a lighthouse at dusk"
        assert record.key == RB_KEY
        assert record.urls == (url,)
        assert record.first_seen_done_at is not None
        assert record.first_seen_done_at >= record.finishes_at > record.created_at
        assert sim.stats.file_requests == 1


async def test_apiinone_happy_path(session: aiohttp.ClientSession) -> None:
    async with make() as sim:  # the defaults are the documented shape
        created = await aio_create(session, sim, "a tiny robot", aspect_ratio="2:3", quality="high")
        assert created.status == 200
        body = created.json()
        assert body["code"] == 200
        task_id = body["data"]["task_id"]
        assert re.fullmatch(r"task_[0-9a-f]{16}", task_id)
        assert body["data"]["status"] == "IN_PROGRESS"

        fields = await aio_wait(session, sim, task_id)
        assert fields["status"] == "completed"
        (url,) = fields["output"]["urls"]
        image = await request(session, "GET", url)
        assert image.headers["Content-Type"] == "image/png"
        assert png_size(image.body) == (256, 384)
        assert sim.runs[task_id].quality == "high"
        assert sim.runs[task_id].cost == 28


async def test_images_differ_by_prompt_and_are_cached(session: aiohttp.ClientSession) -> None:
    async with make(images_per_run=3, duration="fixed", duration_median=1.0) as sim:
        ids = [(await rb_create(session, sim, prompt)).json()["id"] for prompt in ("cat", "dog")]
        await asyncio.sleep(0.02)
        bodies: dict[str, list[bytes]] = {}
        for run_id in ids:
            urls = (await rb_get(session, sim, run_id)).json()["output"]["urls"]
            assert len(urls) == 3
            bodies[run_id] = [(await request(session, "GET", url)).body for url in urls]
            assert all(png_size(b) == (256, 256) for b in bodies[run_id])
        assert len({b for images in bodies.values() for b in images}) == 6
        again = await request(session, "GET", sim.runs[ids[0]].urls[0])
        assert again.body == bodies[ids[0]][0]
        assert sim.runs[ids[0]].images[0] is sim.runs[ids[0]].images[0]
        missing = sim.runs[ids[0]].urls[0].replace("/0.png", "/7.png")
        assert (await request(session, "GET", missing)).status == 404
        assert (await request(session, "GET", f"{sim.url}/files/run_nope/0.png")).status == 404


async def test_image_not_served_before_the_run_is_done(session: aiohttp.ClientSession) -> None:
    async with make(time_scale=1.0) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        answer = await request(session, "GET", f"{sim.url}/files/{run_id}/0.png")
        assert answer.status == 404


# -- validation ------------------------------------------------------------------

GOOD_INPUT = {"prompt": "a fox"}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"", "invalid_json"),
        ({"input": GOOD_INPUT}, "missing_model"),
        ({"model": "openai/gpt-image-1", "input": GOOD_INPUT}, "model_not_found"),
        ({"model": RB_MODEL}, "missing_input"),
        ({"model": RB_MODEL, "input": "a fox"}, "invalid_input"),
        ({"model": RB_MODEL, "input": {}}, "invalid_input"),
        ({"model": RB_MODEL, "input": {"prompt": ""}}, "invalid_input"),
        ({"model": RB_MODEL, "input": {"prompt": "   "}}, "invalid_input"),
        ({"model": RB_MODEL, "input": {"prompt": 42}}, "invalid_input"),
        ({"model": RB_MODEL, "input": {"prompt": "x", "aspect_ratio": "16:9"}}, "invalid_input"),
        ({"model": RB_MODEL, "input": {"prompt": "x", "quality": "low"}}, "invalid_input"),
        ({"model": RB_MODEL, "input": {"prompt": "x", "image_urls": "http://a"}}, "invalid_input"),
        (
            {"model": RB_MODEL, "input": {"prompt": "x", "image_urls": ["ftp://a/b.png"]}},
            "invalid_input",
        ),
        ({"model": RB_MODEL, "input": {"prompt": "x", "image_urls": [1]}}, "invalid_input"),
    ],
)
async def test_runbase_validation(
    session: aiohttp.ClientSession, payload: bytes | dict[str, Any], code: str
) -> None:
    async with make() as sim:
        data = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        answer = await request(
            session, "POST", sim.base_url("runbase") + "/runs", data=data, headers=auth(RB_KEY)
        )
        assert answer.status == 400
        error = answer.json()["error"]
        assert error["code"] == code
        assert isinstance(error["message"], str)
        assert error["message"]
        assert sim.stats.creates == 0
        assert sim.stats.status_counts[400] == 1


async def test_runbase_accepts_every_documented_option(session: aiohttp.ClientSession) -> None:
    async with make(runbase_extra_fields=True) as sim:
        for ratio in ("1:1", "3:2", "2:3"):
            for quality in ("medium", "high"):
                answer = await rb_create(
                    session,
                    sim,
                    aspect_ratio=ratio,
                    quality=quality,
                    image_urls=["https://example.com/a.png", "http://example.com/b.png"],
                )
                assert answer.status == 200, answer.body
                body = answer.json()
                assert body["input"]["image_urls"] == [
                    "https://example.com/a.png",
                    "http://example.com/b.png",
                ]
        assert sim.stats.creates == 6


@pytest.mark.parametrize(
    "payload",
    [
        b"{oops",
        {"prompt": "a fox"},
        {"model": "gpt-image-1", "prompt": "a fox"},
        {"model": AIO_MODEL},
        {"model": AIO_MODEL, "prompt": "ab"},
        {"model": AIO_MODEL, "prompt": "x" * 5001},
        {"model": AIO_MODEL, "prompt": ["a fox"]},
        {"model": AIO_MODEL, "prompt": "a fox", "aspect_ratio": "4:3"},
        {"model": AIO_MODEL, "prompt": "a fox", "quality": "ultra"},
        {"model": AIO_MODEL, "prompt": "a fox", "input_urls": ["file:///etc/passwd"]},
    ],
)
async def test_apiinone_validation(
    session: aiohttp.ClientSession, payload: bytes | dict[str, Any]
) -> None:
    async with make(apiinone_shape="flat") as sim:
        data = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        url = sim.base_url("apiinone") + "/images/generations"
        answer = await request(session, "POST", url, data=data, headers=auth(AIO_KEY))
        assert answer.status == 400
        error = answer.json()["error"]
        assert error["code"] == 400
        assert error["type"] == "invalid_request"
        assert error["message"]
        assert sim.stats.creates == 0


async def test_apiinone_prompt_length_bounds(session: aiohttp.ClientSession) -> None:
    async with make(apiinone_shape="flat") as sim:
        assert (await aio_create(session, sim, "abc")).status == 200
        assert (await aio_create(session, sim, "x" * 5000)).status == 200
        assert (await aio_create(session, sim, "ab")).status == 400
        ok = await aio_create(session, sim, input_urls=["https://example.com/in.png"])
        assert ok.status == 200
        assert sim.runs[task_id_of(ok.json())].input_urls == ("https://example.com/in.png",)


# -- auth, credits, blocks, quota, not found -------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": "Basic c2stdGVzdA=="}, "invalid_api_key"),
        ({"Authorization": "Bearer aio_wrong_provider"}, "invalid_api_key"),
        ({"Authorization": "Bearer sk-"}, "invalid_api_key"),
    ],
)
async def test_runbase_auth(
    session: aiohttp.ClientSession, headers: dict[str, str], code: str
) -> None:
    async with make() as sim:
        body = {"model": RB_MODEL, "input": GOOD_INPUT}
        url = sim.base_url("runbase") + "/runs"
        answer = await request(session, "POST", url, json=body, headers=headers)
        assert answer.status == 401
        assert answer.json()["error"]["code"] == code
        poll = await request(session, "GET", url + "/run_0000", headers=headers)
        assert poll.status == 401


async def test_apiinone_auth(session: aiohttp.ClientSession) -> None:
    async with make(apiinone_shape="flat") as sim:
        for key in ("sk-wrong_provider", "aio_"):
            answer = await aio_create(session, sim, key=key)
            assert answer.status == 401
            assert answer.json()["error"] == {
                "code": 401,
                "message": "Invalid API key.",
                "type": "authentication_error",
            }
        url = sim.base_url("apiinone") + "/tasks/task_0"
        assert (await request(session, "GET", url)).status == 401


async def test_explicit_api_keys(session: aiohttp.ClientSession) -> None:
    async with make(api_keys=frozenset({"sk-good", "my-own-key"})) as sim:
        assert (await rb_create(session, sim, key="sk-good")).status == 200
        assert (await rb_create(session, sim, key="my-own-key")).status == 200
        answer = await rb_create(session, sim, key="sk-other")
        assert answer.status == 401
        assert answer.json()["error"]["code"] == "invalid_api_key"


async def test_credits_are_charged_by_quality(session: aiohttp.ClientSession) -> None:
    async with make(credits=30) as sim:
        assert sim.balance(RB_KEY) == 30
        assert (await rb_create(session, sim, quality="high")).status == 200  # 28
        assert sim.balance(RB_KEY) == 2
        answer = await rb_create(session, sim)  # medium: 10
        assert answer.status == 402
        assert answer.json()["error"]["code"] == "insufficient_balance"
        assert sim.stats.creates == 1
        # Another key has its own balance.
        assert (await rb_create(session, sim, key="sk-second")).status == 200
        assert (await rb_create(session, sim, key="sk-second")).status == 200
        assert (await rb_create(session, sim, key="sk-second")).status == 200
        assert (await rb_create(session, sim, key="sk-second")).status == 402
    async with make() as sim:
        assert sim.balance(RB_KEY) is None


async def test_failed_runs_are_refunded_when_they_fail(session: aiohttp.ClientSession) -> None:
    async with make(credits=10, failure_rate=1.0, duration="fixed", duration_median=3.0) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        assert sim.balance(RB_KEY) == 0
        assert (await rb_create(session, sim)).status == 402  # not refunded yet
        assert (await rb_wait(session, sim, run_id))["status"] == "failed"
        assert sim.balance(RB_KEY) == 10
        assert (await rb_create(session, sim)).status == 200


async def test_apiinone_credits(session: aiohttp.ClientSession) -> None:
    async with make(credits=20, apiinone_shape="flat") as sim:
        assert (await aio_create(session, sim, quality="high")).status == 402
        assert (await aio_create(session, sim)).status == 200
        answer = await aio_create(session, sim, quality="high")
        assert answer.status == 402
        assert answer.json()["error"]["type"] == "insufficient_credits"
        assert answer.json()["error"]["code"] == 402


async def test_blocked_keys(session: aiohttp.ClientSession) -> None:
    blocked = frozenset({"sk-blocked", "aio_blocked"})
    async with make(blocked_keys=blocked, apiinone_shape="flat") as sim:
        answer = await rb_create(session, sim, key="sk-blocked")
        assert answer.status == 403
        assert answer.json()["error"]["code"] == "ip_not_allowed"
        answer = await aio_create(session, sim, key="aio_blocked")
        assert answer.status == 403
        assert answer.json()["error"]["code"] == 403
        assert (await rb_create(session, sim)).status == 200
        assert sim.stats.creates == 1


async def test_unknown_or_foreign_runs_are_404(session: aiohttp.ClientSession) -> None:
    async with make(apiinone_shape="flat") as sim:
        answer = await rb_get(session, sim, "run_0123456789abcdef")
        assert answer.status == 404
        assert answer.json()["error"]["code"] == "run_not_found"
        run_id = (await rb_create(session, sim)).json()["id"]
        assert (await rb_get(session, sim, run_id, key="sk-someone-else")).status == 404
        answer = await aio_get(session, sim, run_id)  # a Runbase id on API in One
        assert answer.status == 404
        assert answer.json()["error"]["type"] == "not_found"
        assert (await rb_get(session, sim, run_id)).status == 200


async def test_quota_runbase_usage_exceeded_never_clears(
    session: aiohttp.ClientSession,
) -> None:
    async with make(quota=2, rate_limit=100, rate_window=1.0, time_scale=0.02) as sim:
        first = (await rb_create(session, sim)).json()["id"]
        assert (await rb_create(session, sim)).status == 200
        for _ in range(2):
            answer = await rb_create(session, sim)
            assert answer.status == 429
            assert answer.json()["error"]["code"] == "USAGE_EXCEEDED"
            assert "Retry-After" not in answer.headers
            await asyncio.sleep(0.03)  # longer than the rate window: still exceeded
        assert sim.stats.creates == 2
        assert sim.stats.rate_limited == 0
        assert (await rb_get(session, sim, first)).status == 200  # polls still work
        assert (await rb_create(session, sim, key="sk-fresh")).status == 200


async def test_quota_apiinone_spend_limit(session: aiohttp.ClientSession) -> None:
    async with make(quota=1, apiinone_shape="flat") as sim:
        assert (await aio_create(session, sim)).status == 200
        answer = await aio_create(session, sim)
        assert answer.status == 403
        assert answer.json()["error"]["type"] == "spend_limit"


# -- rate limiting -----------------------------------------------------------------


@pytest.mark.parametrize("count_rejected", [False, True])
async def test_hammering_client_with_count_rejected(
    fake_clock: FakeClock, count_rejected: bool
) -> None:
    # 5 requests per 1 s window; the client knocks every 20 ms for 1.2 windows.
    # The simulator's own pipeline on the fake loop clock: the knocks land exactly
    # where they are meant to, and the windows cost no wall time.
    loop = asyncio.get_running_loop()
    config = SimulatorConfig(
        rate_limit=5, rate_window=10.0, time_scale=0.1, seed=1234, count_rejected=count_rejected
    )
    sim = Simulator(config, clock=lambda: loop.time())

    async def knock() -> int:
        return (await sim.respond("GET", "/runbase/api/v1/runs/run_hammer", auth(RB_KEY))).status

    statuses = []
    for _ in range(60):  # 1.2 s
        statuses.append(await knock())
        await fake_clock.advance(0.02)
    admitted = sum(1 for s in statuses if s != 429)
    if count_rejected:
        # The rejected knocks keep the window full: locked out after the first 5.
        assert admitted == 5
        assert all(s == 429 for s in statuses[5:])
    else:
        assert admitted == 10  # 5 in the first window, 5 as it slides on
    assert sim.stats.rate_limited == len(statuses) - admitted
    # Once the client stops for a whole window it gets back in either way.
    await fake_clock.advance(1.05)
    assert await knock() == 404


async def test_rate_limit_counts_posts_and_gets_per_key(session: aiohttp.ClientSession) -> None:
    async with make(rate_limit=3, rate_window=10.0, time_scale=1.0) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        assert (await rb_get(session, sim, run_id)).status == 200
        assert (await rb_get(session, sim, run_id)).status == 200
        answer = await rb_create(session, sim)
        assert answer.status == 429
        assert answer.json()["error"]["code"] == "RATE_LIMITED"
        assert (await rb_get(session, sim, run_id)).status == 429
        # Per key: another key, and API in One's key, are unaffected.
        assert (await rb_create(session, sim, key="sk-other")).status == 200
        assert (await aio_create(session, sim)).status == 200
        assert sim.stats.creates == 3
        assert sim.stats.rate_limited == 2
        assert sim.stats.status_counts[429] == 2
        # Unauthenticated requests are refused before the limiter sees them.
        url = sim.base_url("runbase") + "/runs"
        assert (await request(session, "POST", url, json={})).status == 401

        sim.set_rate_limit(None)
        assert (await rb_get(session, sim, run_id)).status == 200
        sim.set_rate_limit(100, 1.0)
        assert sim.config.rate_limit == 100
        assert sim.config.rate_window == 1.0
        assert (await rb_get(session, sim, run_id)).status == 200


async def test_apiinone_rate_limit_is_a_real_429(session: aiohttp.ClientSession) -> None:
    config = {"apiinone_shape": "envelope", "apiinone_envelope_error_rate": 1.0}
    async with make(rate_limit=1, rate_window=10.0, time_scale=1.0, **config) as sim:
        assert (await aio_create(session, sim)).status == 200
        answer = await aio_create(session, sim)
        assert answer.status == 429
        assert answer.json() == {
            "error": {"code": 429, "message": "Rate limit exceeded.", "type": "rate_limit"}
        }
        assert "Retry-After" in answer.headers


async def test_retry_after_none(session: aiohttp.ClientSession) -> None:
    async with make(rate_limit=1, retry_after="none", time_scale=1.0) as sim:
        await rb_get(session, sim, "run_x")
        answer = await rb_get(session, sim, "run_x")
        assert answer.status == 429
        assert "Retry-After" not in answer.headers


async def test_retry_after_seconds_is_exact_and_honest(session: aiohttp.ClientSession) -> None:
    # Window: 10 provider seconds * 0.03 = 0.3 s.
    async with make(rate_limit=2, rate_window=10.0, time_scale=0.03) as sim:
        await rb_get(session, sim, "run_x")
        await asyncio.sleep(0.05)
        await rb_get(session, sim, "run_x")
        answer = await rb_get(session, sim, "run_x")
        assert answer.status == 429
        value = answer.headers["Retry-After"]
        assert re.fullmatch(r"\d+(\.\d{1,3})?", value), value
        wait = float(value)
        # The oldest request frees its slot 0.3 s after it was made (~0.05 s ago).
        assert 0.001 <= wait <= 0.3
        assert wait > 0.15
        await asyncio.sleep(wait + 0.005)
        assert (await rb_get(session, sim, "run_x")).status == 404


async def test_retry_after_http_date(session: aiohttp.ClientSession) -> None:
    async with make(rate_limit=1, retry_after="http-date", time_scale=0.05) as sim:
        await rb_get(session, sim, "run_x")
        before = datetime.now(UTC)
        answer = await rb_get(session, sim, "run_x")
        assert answer.status == 429
        value = answer.headers["Retry-After"]
        assert re.fullmatch(
            r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", value
        )
        moment = parsedate_to_datetime(value)
        # Rounded up to a whole second: never earlier than the real 0.5 s wait.
        assert moment.timestamp() >= before.timestamp() + 0.5 - 0.05
        assert moment.timestamp() <= math.ceil(before.timestamp() + 0.5) + 1


# -- API in One shapes, statuses, URL locations, envelope errors -----------------------


async def _aio_bodies(
    session: aiohttp.ClientSession, sim: Simulator, runs: int, polls: int
) -> list[dict[str, Any]]:
    bodies = []
    for _ in range(runs):
        created = await aio_create(session, sim)
        bodies.append(created.json())
        for _ in range(polls):
            bodies.append((await aio_get(session, sim, task_id_of(created.json()))).json())
    return bodies


@pytest.mark.parametrize("shape", ["envelope", "flat", "mixed"])
async def test_apiinone_shapes(session: aiohttp.ClientSession, shape: str) -> None:
    async with make(apiinone_shape=shape, time_scale=1.0) as sim:
        bodies = await _aio_bodies(session, sim, runs=4, polls=5)
        envelopes = sum(1 for b in bodies if "data" in b)
        for body in bodies:
            if "data" in body:
                assert set(body) == {"code", "message", "data"}
                assert set(body["data"]) >= {"task_id", "status"}
            else:
                assert set(body) >= {"id", "status", "model", "created_at"}
                assert body["model"] == AIO_MODEL
        if shape == "envelope":
            assert envelopes == len(bodies)
        elif shape == "flat":
            assert envelopes == 0
        else:
            assert 0 < envelopes < len(bodies)


async def test_apiinone_status_variants(session: aiohttp.ClientSession) -> None:
    async with make(apiinone_status_variants=True, failure_rate=0.5) as sim:
        words: Counter[str] = Counter()
        for _ in range(12):
            task_id = task_id_of((await aio_create(session, sim)).json())
            for _ in range(200):
                word = task_fields((await aio_get(session, sim, task_id)).json())["status"]
                words[word] += 1
                if word.lower() not in NOT_DONE:
                    for _ in range(4):  # terminal words vary between polls too
                        fields = task_fields((await aio_get(session, sim, task_id)).json())
                        words[fields["status"]] += 1
                    break
                await asyncio.sleep(0.005)
        lowered = {w.lower() for w in words}
        assert lowered <= NOT_DONE | SUCCEEDED | FAILED
        assert any(w != w.lower() for w in words)  # case varies
        assert len(lowered & SUCCEEDED) >= 2  # spelling varies
        assert len(lowered & NOT_DONE) >= 2


async def test_apiinone_plain_statuses(session: aiohttp.ClientSession) -> None:
    async with make(apiinone_status_variants=False, failure_rate=0.5) as sim:
        words = set()
        for _ in range(6):
            task_id = task_id_of((await aio_create(session, sim)).json())
            fields = await aio_wait(session, sim, task_id)
            words.add(fields["status"])
        assert words <= {"completed", "failed"}
        assert words == {"completed", "failed"}


@pytest.mark.parametrize(
    "location",
    ["output.urls", "output_list_str", "output_list_obj", "urls", "result.urls", "images"],
)
async def test_apiinone_url_locations(session: aiohttp.ClientSession, location: str) -> None:
    async with make(
        apiinone_url_location=location, apiinone_shape="mixed", images_per_run=2
    ) as sim:
        task_id = task_id_of((await aio_create(session, sim)).json())
        fields = await aio_wait(session, sim, task_id)
        found = urls_at(fields)
        assert found is not None
        assert found[0] == location
        assert found[1] == list(sim.runs[task_id].urls)
        assert len(found[1]) == 2


async def test_apiinone_random_url_location_is_fixed_per_run(
    session: aiohttp.ClientSession,
) -> None:
    async with make(apiinone_url_location="random", duration="fixed", duration_median=1.0) as sim:
        ids = [task_id_of((await aio_create(session, sim)).json()) for _ in range(20)]
        await asyncio.sleep(0.02)
        locations = set()
        for task_id in ids:
            seen = set()
            for _ in range(3):
                found = urls_at(task_fields((await aio_get(session, sim, task_id)).json()))
                assert found is not None
                seen.add(found[0])
            assert len(seen) == 1
            locations |= seen
        assert len(locations) >= 3


async def test_apiinone_envelope_errors_under_http_200(session: aiohttp.ClientSession) -> None:
    async with make(apiinone_shape="envelope", apiinone_envelope_error_rate=1.0) as sim:
        answer = await aio_get(session, sim, "task_missing")
        assert answer.status == 200
        assert answer.json() == {"code": 404, "message": "Run not found.", "data": None}
        answer = await aio_create(session, sim, "ab")
        assert answer.status == 200
        assert answer.json()["code"] == 400
        assert sim.stats.creates == 0
    async with make(apiinone_shape="flat", apiinone_envelope_error_rate=1.0) as sim:
        assert (await aio_get(session, sim, "task_missing")).status == 404
    async with make(**VARIANTS) as sim:  # the variants' rate: about half
        statuses = Counter(
            [(await aio_get(session, sim, "task_missing")).status for _ in range(40)]
        )
        assert statuses[200] > 5
        assert statuses[404] > 5


# -- run outcomes and durations ---------------------------------------------------------


@pytest.mark.parametrize("variants", [False, True])
async def test_failure_rate_runbase(session: aiohttp.ClientSession, variants: bool) -> None:
    fixed = {"duration": "fixed", "duration_median": 1.0}
    async with make(failure_rate=1.0, error_variants=variants, **fixed) as sim:
        ids = [(await rb_create(session, sim, f"p{i}")).json()["id"] for i in range(16)]
        await asyncio.sleep(0.02)
        kinds = set()
        for run_id in ids:
            body = (await rb_get(session, sim, run_id)).json()
            assert body["status"] == "failed"
            assert "output" not in body
            error = body["error"]
            if isinstance(error, dict):
                assert set(error) == {"message", "code"}
                kinds.add("object")
            else:
                assert isinstance(error, str)
                assert error
                kinds.add("string")
            assert sim.runs[run_id].will_fail
            assert sim.runs[run_id].urls == ()
        # The documented error body is an object; the string form is a variant.
        assert kinds == ({"object", "string"} if variants else {"object"})
        answer = await request(session, "GET", f"{sim.url}/files/{ids[0]}/0.png")
        assert answer.status == 404


async def test_failure_rate_apiinone_and_mixture(session: aiohttp.ClientSession) -> None:
    async with make(failure_rate=1.0, apiinone_status_variants=False) as sim:
        task_id = task_id_of((await aio_create(session, sim)).json())
        fields = await aio_wait(session, sim, task_id)
        assert fields["status"] == "failed"
        assert fields["error"]
        assert urls_at(fields) is None
    async with make(failure_rate=0.0) as sim:
        for i in range(20):
            await rb_create(session, sim, f"p{i}")
        assert not any(run.will_fail for run in sim.runs.values())
    async with make(failure_rate=0.5) as sim:
        for i in range(60):
            await rb_create(session, sim, f"p{i}")
        failing = sum(run.will_fail for run in sim.runs.values())
        assert 15 <= failing <= 45


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("uniform", {"duration_min": 3.0, "duration_max": 10.0}),
        ("lognormal", {"duration_median": 5.5, "duration_sigma": 1.5}),
        ("fixed", {"duration_median": 4.0}),
    ],
)
async def test_duration_distributions(
    session: aiohttp.ClientSession, mode: str, extra: dict[str, float]
) -> None:
    scale = 0.01
    async with make(duration=mode, time_scale=scale, **extra) as sim:
        for i in range(60):
            await rb_create(session, sim, f"p{i}")
        durations = [run.duration / scale for run in sim.runs.values()]
        for run in sim.runs.values():
            assert math.isclose(run.started_at - run.created_at, 0.2 * run.duration)
        assert all(3.0 - 1e-6 <= d <= 10.0 + 1e-6 for d in durations)
        if mode == "fixed":
            assert all(math.isclose(d, 4.0) for d in durations)
        elif mode == "uniform":
            assert max(durations) - min(durations) > 3.0
        else:
            # sigma 1.5 sends many draws past the bounds: they are clipped to them.
            assert sum(math.isclose(d, 3.0) for d in durations) >= 3
            assert sum(math.isclose(d, 10.0) for d in durations) >= 3


async def test_status_is_read_off_the_clock(session: aiohttp.ClientSession) -> None:
    # 10 provider seconds at 0.05: pending 0-0.1 s, processing 0.1-0.5 s, then done.
    async with make(duration="fixed", duration_median=10.0, time_scale=0.05) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        run = sim.runs[run_id]
        assert run.state(run.created_at) == "pending"
        assert run.state(run.created_at + 0.11) == "processing"
        assert run.state(run.finishes_at) == "succeeded"
        assert (await rb_get(session, sim, run_id)).json()["status"] == "pending"
        assert run.first_seen_done_at is None
        await asyncio.sleep(0.15)
        assert (await rb_get(session, sim, run_id)).json()["status"] == "processing"
        assert run.first_seen_done_at is None
        await asyncio.sleep(0.4)
        done_at = time.monotonic()
        assert (await rb_get(session, sim, run_id)).json()["status"] == "succeeded"
        first = run.first_seen_done_at
        assert first is not None
        assert run.finishes_at <= first <= time.monotonic()
        assert first >= done_at
        await rb_get(session, sim, run_id)
        assert run.first_seen_done_at == first  # only the first one counts


async def test_seed_makes_runs_reproducible(session: aiohttp.ClientSession) -> None:
    async def sample() -> list[tuple[str, float, bool]]:
        async with make(seed=99, failure_rate=0.3) as sim:
            for i in range(5):
                await rb_create(session, sim, f"p{i}")
            return [(r.id, round(r.duration, 9), r.will_fail) for r in sim.runs.values()]

    assert await sample() == await sample()


async def test_config_changes_apply_to_the_next_request(session: aiohttp.ClientSession) -> None:
    async with make(duration="fixed", duration_median=1.0) as sim:
        ok = (await rb_create(session, sim)).json()["id"]
        sim.config = sim.config.replace(failure_rate=1.0)
        bad = (await rb_create(session, sim)).json()["id"]
        assert not sim.runs[ok].will_fail
        assert sim.runs[bad].will_fail


# -- faults ----------------------------------------------------------------------------


async def test_create_5xx_creates_nothing(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(create_5xx=1.0)) as sim:
        answer = await rb_create(session, sim)
        assert answer.status == 503
        assert (await aio_create(session, sim)).status == 503
        assert sim.stats.creates == 0
        assert sim.stats.create_requests == 2
        assert sim.stats.faults["create_5xx"] == 2
        assert (await rb_get(session, sim, "run_x")).status == 404  # polls unaffected


async def test_poll_5xx(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(poll_5xx=1.0)) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        statuses = set()
        for _ in range(30):
            answer = await rb_get(session, sim, run_id)
            assert answer.status in (500, 502, 503)
            assert len(answer.body) < 100
            statuses.add(answer.status)
        assert statuses == {500, 502, 503}
        assert sim.stats.faults["poll_5xx"] == 30
        assert sim.stats.creates == 1


async def test_partial_fault_rate(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(poll_5xx=0.3)) as sim:
        statuses = [(await rb_get(session, sim, "run_x")).status for _ in range(200)]
        failed = sum(1 for s in statuses if s >= 500)
        assert 30 <= failed <= 90
        assert sim.stats.faults["poll_5xx"] == failed


async def test_reset_before_processing(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(reset=1.0)) as sim:
        with pytest.raises(RESET_ERRORS):
            await rb_create(session, sim)
        with pytest.raises(RESET_ERRORS):
            await aio_create(session, sim)
        with pytest.raises(RESET_ERRORS):
            await rb_get(session, sim, "run_x")
        assert sim.stats.creates == 0
        assert sim.stats.create_requests == 2
        # aiohttp's client itself retries an idempotent GET once after a reset.
        assert sim.stats.polls in (1, 2)
        assert sim.stats.faults["reset"] == sim.stats.requests
        assert sum(sim.stats.status_counts.values()) == 0
        sim.set_faults(Faults())
        assert (await rb_create(session, sim)).status == 200  # the client recovers


async def test_reset_after_create_leaves_a_paid_run(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(reset_after_create=1.0), credits=100) as sim:
        with pytest.raises(RESET_ERRORS):
            await rb_create(session, sim, "ambiguous")
        assert sim.stats.creates == 1
        assert sim.balance(RB_KEY) == 90
        (run,) = sim.runs.values()
        assert run.prompt == "ambiguous"
        with pytest.raises(RESET_ERRORS):
            await rb_create(session, sim, "ambiguous")
        assert sim.stats.duplicates == 1
        assert (await rb_get(session, sim, run.id)).status == 200  # polls unaffected


async def test_truncated_json(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(truncated_json=1.0)) as sim:
        answer = await rb_create(session, sim)
        assert answer.status == 200
        with pytest.raises(msgspec.DecodeError):
            answer.json()
        assert sim.stats.creates == 1
        (run_id,) = sim.runs
        assert answer.body.startswith(b'{"id":"run_')
        poll = await rb_get(session, sim, run_id)
        assert poll.status == 200
        with pytest.raises(msgspec.DecodeError):
            poll.json()
        assert (await aio_create(session, sim)).status == 200
        assert sim.stats.faults["truncated_json"] == 3
        # Errors are never truncated: only genuine successes are spoiled.
        assert (await rb_get(session, sim, "run_x")).json()["error"]["code"] == "run_not_found"


async def test_truncated_terminal_poll_does_not_count_as_seen(
    session: aiohttp.ClientSession,
) -> None:
    async with make(duration="fixed", duration_median=1.0) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        await asyncio.sleep(0.02)
        sim.set_faults(Faults(truncated_json=1.0))
        await rb_get(session, sim, run_id)
        assert sim.runs[run_id].first_seen_done_at is None
        sim.set_faults(Faults())
        await rb_get(session, sim, run_id)
        assert sim.runs[run_id].first_seen_done_at is not None


async def test_create_500_after_effect(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(create_500_after_effect=1.0)) as sim:
        answer = await aio_create(session, sim)
        assert answer.status == 500
        assert answer.body == b""
        assert sim.stats.creates == 1
        assert sim.stats.faults["create_500_after_effect"] == 1
        (task_id,) = sim.runs
        assert (await aio_get(session, sim, task_id)).status == 200


async def test_slow_answers(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(slow=1.0, slow_seconds=10.0)) as sim:  # 0.1 s
        started = time.monotonic()
        answer = await rb_create(session, sim)
        assert answer.status == 200
        assert time.monotonic() - started >= 0.09
        assert sim.stats.faults["slow"] == 1
        # A client that gives up early still leaves a created run behind.
        timeout = aiohttp.ClientTimeout(total=0.03)
        body = {"model": RB_MODEL, "input": {"prompt": "timed out"}}
        url = sim.base_url("runbase") + "/runs"
        with pytest.raises(TimeoutError):
            async with session.post(url, json=body, headers=auth(RB_KEY), timeout=timeout):
                pass
        assert sim.stats.runs_per_prompt["timed out"] == 1


async def test_close_while_a_slow_answer_is_pending(session: aiohttp.ClientSession) -> None:
    sim = make(faults=Faults(slow=1.0, slow_seconds=1000.0))
    await sim.start()
    pending = asyncio.create_task(rb_create(session, sim))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await sim.close()
    assert time.monotonic() - started < 2.0
    with pytest.raises(aiohttp.ClientError):
        await pending


async def test_scheduled_outage(session: aiohttp.ClientSession) -> None:
    # Provider seconds 4-8 at 0.05: wall 0.2-0.4 s after start.
    async with make(time_scale=0.05, faults=Faults(outage=(4.0, 8.0))) as sim:
        assert (await rb_create(session, sim)).status == 200
        await asyncio.sleep(0.25)
        assert (await rb_create(session, sim)).status == 503
        assert (await aio_get(session, sim, "task_x")).status == 503
        await asyncio.sleep(0.2)
        assert (await rb_create(session, sim)).status == 200
        assert sim.stats.creates == 2
        assert sim.stats.faults["outage"] == 2


async def test_manual_outage(session: aiohttp.ClientSession) -> None:
    async with make() as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        sim.start_outage()
        assert (await rb_create(session, sim)).status == 503
        assert (await rb_get(session, sim, run_id)).status == 503
        assert sim.stats.creates == 1
        sim.end_outage()
        assert (await rb_get(session, sim, run_id)).status == 200


async def test_faults_only_hit_the_chosen_protocols(session: aiohttp.ClientSession) -> None:
    faults = Faults(create_5xx=1.0, poll_5xx=1.0, applies_to=frozenset({"runbase"}))
    async with make(faults=faults, apiinone_shape="flat") as sim:
        assert (await rb_create(session, sim)).status == 503
        created = await aio_create(session, sim)
        assert created.status == 200
        assert (await aio_get(session, sim, task_id_of(created.json()))).status == 200


# -- stats and scale -----------------------------------------------------------------


async def test_stats_counters_and_duplicates(session: aiohttp.ClientSession) -> None:
    async with make(rate_limit=6, time_scale=1.0, apiinone_shape="flat") as sim:
        for _ in range(3):
            await rb_create(session, sim, "same prompt")
        await rb_create(session, sim, "other prompt")
        run_id = next(iter(sim.runs))
        await rb_get(session, sim, run_id)
        await rb_get(session, sim, "run_unknown")
        await rb_get(session, sim, run_id)  # the 7th request: rate limited
        await aio_create(session, sim, "same prompt")  # other key, counted too
        stats = sim.stats
        assert stats.requests == 8
        assert stats.create_requests == 5
        assert stats.creates == 5
        assert stats.polls == 3
        assert stats.rate_limited == 1
        assert stats.runs_per_prompt == Counter({"same prompt": 4, "other prompt": 1})
        assert stats.duplicates == 3
        assert stats.status_counts == Counter({200: 6, 404: 1, 429: 1})
        sim.reset_stats()
        assert stats.requests == 0
        assert stats.duplicates == 0
        assert not stats.status_counts
        assert len(sim.runs) == 5  # runs are kept


async def test_ten_thousand_runs_in_flight_cheaply() -> None:
    # The pipeline the HTTP server runs (``respond``), with no socket: what is
    # measured is the simulator's own cost per run, not aiohttp's per request.
    tasks_before = len(asyncio.all_tasks())
    sim = make(time_scale=10.0)  # runs last 30-100 s: all still in flight at the end
    path = "/runbase/api/v1/runs"
    headers = {**auth(RB_KEY), "Content-Type": "application/json"}

    async def create(i: int) -> None:
        body = msgspec.json.encode({"model": RB_MODEL, "input": {"prompt": f"prompt {i}"}})
        reply = await sim.respond("POST", path, headers, body)
        assert reply.status == 200

    started = time.monotonic()
    await asyncio.gather(*(create(i) for i in range(10_000)))
    elapsed = time.monotonic() - started
    assert sim.stats.creates == 10_000
    assert len(sim.runs) == 10_000
    now = time.monotonic()
    assert all(run.finishes_at > now for run in sim.runs.values())  # all in flight
    # No task or timer per run: nothing of the simulator's outlives its answers.
    assert len(asyncio.all_tasks()) - tasks_before < 50
    assert not [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert elapsed < 20.0
    assert sim.stats.duplicates == 0
    for run_id in list(sim.runs)[::500]:  # statuses are still read off the clock
        reply = await sim.respond("GET", f"{path}/{run_id}", auth(RB_KEY))
        assert msgspec.json.decode(reply.body)["status"] in ("pending", "processing")


def test_run_records_are_small() -> None:
    from gptimage_async.simulator._app import SimulatorService

    service = SimulatorService(SimulatorConfig(seed=1))
    config = service.config
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            service.registry.create(
                run_id=service.registry.new_id("run_"),
                protocol="runbase",
                key=RB_KEY,
                prompt=f"prompt number {i}",
                aspect_ratio="1:1",
                quality="medium",
                input_urls=(),
                cost=10,
                file_base="http://127.0.0.1:1",
                config=config,
            )
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used / 10_000 < 2_000, f"{used / 10_000:.0f} bytes per run"


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


async def test_bom_fault_prefixes_json_answers(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(bom=1.0)) as sim:
        answer = await rb_create(session, sim)
        assert answer.status == 200
        assert answer.body.startswith(b"\xef\xbb\xbf{")
        assert msgspec.json.decode(answer.body[3:])["status"] == "pending"
        assert sim.stats.faults["bom"] == 1


async def test_poll_redirect_fault_redirects_once_to_the_same_origin(
    session: aiohttp.ClientSession,
) -> None:
    async with make(faults=Faults(poll_redirect=1.0)) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        url = f"{sim.base_url('runbase')}/runs/{run_id}"
        async with session.get(url, headers=auth(RB_KEY), allow_redirects=False) as resp:
            assert resp.status == 307
            assert resp.headers["Location"] == f"/runbase/api/v1/runs/{run_id}?redirected=1"
        assert (await rb_get(session, sim, run_id)).status == 200  # followed: answered
        assert sim.stats.faults["poll_redirect"] == 2


async def test_keepalive_close_fault_closes_after_answering() -> None:
    async with make(faults=Faults(keepalive_close=1.0)) as sim:  # 10 ms
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(
            f"GET {sim.base_url('runbase')}/runs/x HTTP/1.1\r\nHost: h\r\n"
            f"Authorization: Bearer {RB_KEY}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Connection: keep-alive" in head
        await asyncio.wait_for(reader.read(), 5.0)  # EOF comes: the server closed it
        assert reader.at_eof()
        writer.close()
        assert sim.stats.faults["keepalive_close"] == 1
