"""By default the simulator answers exactly as the providers' documentation shows."""

from __future__ import annotations

from typing import Literal

import aiohttp
import msgspec
import pytest

from gptimage_async.simulator import (
    Simulator,
    SimulatorConfig,
)

from .wire import (
    ManualClock,
    aio_create,
    aio_get,
    aio_wait,
    make,
    rb_create,
    rb_get,
    rb_wait,
    task_fields,
    task_id_of,
)

# -- documented answers by default --------------------------------------------------------


class RbOutput(msgspec.Struct, forbid_unknown_fields=True):
    urls: list[str]


class RbError(msgspec.Struct, forbid_unknown_fields=True):
    message: str
    code: str


class RbRun(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    model: Literal["openai/gpt-image-1.5"]
    status: Literal["pending", "processing", "succeeded", "failed"]
    output: RbOutput | None = None
    error: RbError | None = None


class RbErrorBody(msgspec.Struct, forbid_unknown_fields=True):
    error: RbError


class AioOutput(msgspec.Struct, forbid_unknown_fields=True):
    urls: list[str]


class AioTaskError(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    message: str


class AioTask(msgspec.Struct, forbid_unknown_fields=True):
    task_id: str
    status: Literal["IN_PROGRESS", "completed", "failed"]
    output: AioOutput | None = None
    error: AioTaskError | None = None


class AioEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    code: Literal[200]
    message: Literal["success"]
    data: AioTask


class AioError(msgspec.Struct, forbid_unknown_fields=True):
    code: int
    message: str
    type: str


class AioErrorBody(msgspec.Struct, forbid_unknown_fields=True):
    error: AioError


async def test_default_answers_have_the_documented_shapes(
    session: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    async with make(failure_rate=0.5, clock=clock) as sim:
        runs = [(await rb_create(session, sim, f"p{i}")).body for i in range(8)]
        tasks = [(await aio_create(session, sim, f"prompt {i}")).body for i in range(8)]
        statuses: set[str] = set()
        for raw in runs:
            run = msgspec.json.decode(raw, type=RbRun)
            assert run.status == "pending"
            done = msgspec.json.decode(
                msgspec.json.encode(await rb_wait(session, sim, run.id, clock=clock)), type=RbRun
            )
            assert (done.output is None) == (done.status == "failed")
            statuses.add(done.status)
        for raw in tasks:
            created = msgspec.json.decode(raw, type=AioEnvelope)
            assert created.data.status == "IN_PROGRESS"
            polled = await aio_get(session, sim, created.data.task_id)
            msgspec.json.decode(polled.body, type=AioEnvelope)
            await aio_wait(session, sim, created.data.task_id, clock=clock)
            final = await aio_get(session, sim, created.data.task_id)
            task = msgspec.json.decode(final.body, type=AioEnvelope).data
            assert (task.output is None) == (task.status == "failed")
            statuses.add(task.status)
        assert statuses == {"succeeded", "failed", "completed"}
        errors = [
            (await rb_get(session, sim, "run_missing")).body,
            (await rb_create(session, sim, "")).body,
        ]
        for body in errors:
            msgspec.json.decode(body, type=RbErrorBody)
        for answer in (
            await aio_get(session, sim, "task_missing"),
            await aio_create(session, sim, "x"),
        ):
            assert answer.status in (400, 404)  # never an error under HTTP 200
            msgspec.json.decode(answer.body, type=AioErrorBody)


async def test_variants_are_still_reachable(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(time_scale=0.01, seed=5, rate_limit=None).with_variants()
    clock = ManualClock()
    async with Simulator(config, clock=clock) as sim:
        bodies = []
        for i in range(12):
            created = (await aio_create(session, sim, f"prompt {i}")).json()
            bodies.append(created)
            bodies.append(await aio_wait(session, sim, task_id_of(created), clock=clock))
        words = {str(task_fields(body)["status"]) for body in bodies}
        assert any("data" not in body for body in bodies)  # the flat shape
        assert any("data" in body for body in bodies)
        assert words - {"IN_PROGRESS", "completed", "failed"}  # other spellings
        strict_failures = 0
        for body in bodies:
            try:
                msgspec.convert(body, AioEnvelope)
            except msgspec.ValidationError:
                strict_failures += 1
        assert strict_failures > 0


@pytest.mark.gptimage(provider="apiinone", variants=True)
async def test_the_plugin_marker_turns_variants_on(gptimage_simulator: Simulator) -> None:
    assert gptimage_simulator.config.apiinone_shape == "mixed"
    assert gptimage_simulator.config.apiinone_status_variants


async def test_the_plugin_default_is_documented(gptimage_simulator: Simulator) -> None:
    assert gptimage_simulator.config.apiinone_shape == "envelope"
    assert not gptimage_simulator.config.apiinone_status_variants
