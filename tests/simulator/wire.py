"""Raw-HTTP helpers for the simulator tests: bare aiohttp requests, waits, PNG reading."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from gptimage_async.simulator import Simulator, SimulatorConfig

RB_KEY = "sk-test"
AIO_KEY = "aio_test"
RB_MODEL = "openai/gpt-image-1.5"
AIO_MODEL = "gpt-image-1-5"
ROOT = Path(__file__).resolve().parents[2]
RESET_ERRORS = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)

NOT_DONE = {"pending", "queued", "in_progress", "processing", "running"}
SUCCEEDED = {"completed", "succeeded", "success"}
FAILED = {"failed", "error"}
GOOD_INPUT = {"prompt": "a fox"}


def make(*, clock: Callable[[], float] | None = None, **changes: Any) -> Simulator:
    """A simulator with fast time, a seed, and no rate limit unless asked.

    ``clock``: the simulator's clock (a ``ManualClock`` for a test that moves
    provider time on by hand instead of waiting for it); ``time.monotonic``.
    """
    settings: dict[str, Any] = {"time_scale": 0.01, "seed": 1234, "rate_limit": None}
    settings.update(changes)
    config = SimulatorConfig(**settings)
    return Simulator(config) if clock is None else Simulator(config, clock=clock)


class ManualClock:
    """A clock that moves only when told (seconds): the simulator's time, set by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


def finish(sim: Simulator, clock: ManualClock, run_id: str) -> None:
    """Move the simulator's ``clock`` on to the moment run ``run_id`` ends (no waiting)."""
    clock.now = max(clock.now, sim.runs[run_id].finishes_at)


async def rb_wait(
    session: aiohttp.ClientSession, sim: Simulator, run_id: str, *, clock: ManualClock
) -> dict[str, Any]:
    """The run's final answer: ``clock`` (the simulator's) is moved on to its end first."""
    finish(sim, clock, run_id)
    body: dict[str, Any] = (await rb_get(session, sim, run_id)).json()
    assert body["status"] in ("succeeded", "failed"), body
    return body


async def aio_wait(
    session: aiohttp.ClientSession, sim: Simulator, task_id: str, *, clock: ManualClock
) -> dict[str, Any]:
    """The task's final fields: ``clock`` (the simulator's) is moved on to its end first."""
    finish(sim, clock, task_id)
    fields = task_fields((await aio_get(session, sim, task_id)).json())
    assert str(fields["status"]).lower() not in NOT_DONE, fields
    return fields


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
