"""Bad requests get each protocol's own 400/422 answer; every documented option is accepted."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest

from .wire import (
    AIO_KEY,
    AIO_MODEL,
    GOOD_INPUT,
    RB_KEY,
    RB_MODEL,
    aio_create,
    auth,
    make,
    rb_create,
    request,
    task_id_of,
)

# -- validation ------------------------------------------------------------------


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
