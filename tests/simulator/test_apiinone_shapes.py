"""API in One's answer shapes, status words, URL locations and envelope errors."""

from __future__ import annotations

from collections import Counter
from typing import Any

import aiohttp
import pytest

from gptimage_async.simulator import VARIANTS, Simulator

from .wire import (
    AIO_MODEL,
    FAILED,
    NOT_DONE,
    SUCCEEDED,
    ManualClock,
    aio_create,
    aio_get,
    aio_wait,
    make,
    task_fields,
    task_id_of,
    urls_at,
)

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
    clock = ManualClock()
    async with make(apiinone_status_variants=True, failure_rate=0.5, clock=clock) as sim:
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
                clock.advance(0.005)
        lowered = {w.lower() for w in words}
        assert lowered <= NOT_DONE | SUCCEEDED | FAILED
        assert any(w != w.lower() for w in words)  # case varies
        assert len(lowered & SUCCEEDED) >= 2  # spelling varies
        assert len(lowered & NOT_DONE) >= 2


async def test_apiinone_plain_statuses(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with make(apiinone_status_variants=False, failure_rate=0.5, clock=clock) as sim:
        words = set()
        for _ in range(6):
            task_id = task_id_of((await aio_create(session, sim)).json())
            fields = await aio_wait(session, sim, task_id, clock=clock)
            words.add(fields["status"])
        assert words <= {"completed", "failed"}
        assert words == {"completed", "failed"}


@pytest.mark.parametrize(
    "location",
    ["output.urls", "output_list_str", "output_list_obj", "urls", "result.urls", "images"],
)
async def test_apiinone_url_locations(session: aiohttp.ClientSession, location: str) -> None:
    clock = ManualClock()
    async with make(
        apiinone_url_location=location, apiinone_shape="mixed", images_per_run=2, clock=clock
    ) as sim:
        task_id = task_id_of((await aio_create(session, sim)).json())
        fields = await aio_wait(session, sim, task_id, clock=clock)
        found = urls_at(fields)
        assert found is not None
        assert found[0] == location
        assert found[1] == list(sim.runs[task_id].urls)
        assert len(found[1]) == 2


async def test_apiinone_random_url_location_is_fixed_per_run(
    session: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    async with make(
        apiinone_url_location="random", duration="fixed", duration_median=1.0, clock=clock
    ) as sim:
        ids = [task_id_of((await aio_create(session, sim)).json()) for _ in range(20)]
        clock.advance(0.02)
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
