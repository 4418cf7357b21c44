"""A poll answered about another run is never this run's result (issue 20, item 8).

In a web app that would be one user's picture shown to another. Such an
answer is an unreadable one for that poll: retried a bounded number of
times, then the run fails with ``RunIdMismatchError`` naming both ids.
Checked on a scripted real HTTP server (both providers, API in One's two
shapes, answers with no id) and on the simulator's ``other_run`` fault.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import gptimage_async as gi
from gptimage_async._planner import MAX_PROTOCOL_ERRORS
from gptimage_async.simulator import Faults, Simulator

from .conftest import Answer, HostileServer, hostile_server, session_for, sim_config

Shape = str  # "runbase", "envelope" or "flat"
SHAPES: list[Shape] = ["runbase", "envelope", "flat"]


def _provider(shape: Shape) -> str:
    return "runbase" if shape == "runbase" else "apiinone"


def _succeeded(shape: Shape, run_id: str | None) -> bytes:
    """A finished run's object in ``shape``; ``run_id=None``: with no id at all."""
    url = f"https://images.example/{run_id or 'anonymous'}.png"
    if shape == "runbase":
        run: dict[str, Any] = {"status": "succeeded", "output": {"urls": [url]}}
        if run_id is not None:
            run["id"] = run_id
        return msgspec.json.encode(run)
    if shape == "envelope":
        data: dict[str, Any] = {"status": "completed", "output": {"urls": [url]}}
        if run_id is not None:
            data["task_id"] = run_id
        return msgspec.json.encode({"code": 200, "message": "success", "data": data})
    flat: dict[str, Any] = {"status": "completed", "urls": [url], "model": "gpt-image-1-5"}
    if run_id is not None:
        flat["id"] = run_id
    return msgspec.json.encode(flat)


def _session(server: HostileServer, provider: str) -> gi.Session:
    return gi.Session(
        provider,  # type: ignore[arg-type]
        api_key="sk-other" if provider == "runbase" else "aio_other",
        base_url=server.base_url(provider),
        rate_limit=gi.RateLimit(100_000, 0.02),
        run_timeout=30.0,
    )


@pytest.mark.parametrize("shape", SHAPES)
async def test_another_runs_answer_is_retried_and_never_used(shape: Shape) -> None:
    provider = _provider(shape)
    async with hostile_server() as server:
        server.polls.extend([Answer(body=_succeeded(shape, "run_of_someone_else"))] * 2)
        async with _session(server, provider) as session:
            run = await session.submit("a lamp")
            result = await run  # the third poll is answered about this run
        assert result.run_id == run.run_id == "run_0"
        assert result.urls == [f"https://images.example/{run.run_id}.png"]
        assert run.polls == 3
        assert session.stats.poll_errors == 2


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_run_only_ever_answered_about_another_fails_naming_both(shape: Shape) -> None:
    provider = _provider(shape)
    async with hostile_server() as server:
        server.polls.extend([Answer(body=_succeeded(shape, "run_77"))] * 50)
        async with _session(server, provider) as session:
            run = await session.submit("a lamp")
            with pytest.raises(gi.RunIdMismatchError) as info:
                await run
        error = info.value
        assert isinstance(error, gi.ProtocolError)  # a kind of unreadable answer
        assert error.run_id == "run_0" and error.answered_id == "run_77"
        assert "run_0" in str(error) and "run_77" in str(error)
        assert run.outcome is None and run.status is gi.RunStatus.ERRORED
        assert run.polls == MAX_PROTOCOL_ERRORS  # bounded: no poll storm, no wait for run_timeout


@pytest.mark.parametrize("shape", ["envelope", "flat"])
async def test_an_api_in_one_answer_with_no_id_is_this_runs(shape: Shape) -> None:
    # The request's URL names the task; API in One's documented shapes vary,
    # so a task object without an id is read as the task asked about.
    async with hostile_server() as server:
        server.polls.append(Answer(body=_succeeded(shape, None)))
        async with _session(server, "apiinone") as session:
            result = await session.generate("a lamp")
        assert result.run_id == "run_0"
        assert result.urls == ["https://images.example/anonymous.png"]


async def test_a_runbase_answer_with_no_id_is_unreadable_and_retried() -> None:
    # Runbase documents ``id`` on every run object: one without it is not the
    # run object, so it is never taken as this run's (retried, then fine).
    async with hostile_server() as server:
        server.polls.extend([Answer(body=_succeeded("runbase", None))] * 2)
        async with _session(server, "runbase") as session:
            run = await session.submit("a lamp")
            result = await run
        assert result.urls == ["https://images.example/run_0.png"]
        assert run.polls == 3


@pytest.mark.parametrize(
    ("provider", "shape"), [("runbase", "envelope"), ("apiinone", "envelope"), ("apiinone", "flat")]
)
async def test_on_the_simulator_every_result_is_its_own_run(provider: str, shape: str) -> None:
    # A third of the polls are answered about another run of the key (a
    # mixed-up cache): every result still carries its own run's images; a run
    # unlucky enough to get 6 such answers in a row fails, naming both ids.
    config = sim_config(apiinone_shape=shape, faults=Faults(other_run=0.3))
    async with Simulator(config) as sim:
        async with session_for(sim, provider) as session:
            runs = [await session.submit(f"a lamp, take {i}") for i in range(8)]
            outcomes = [await _settled(run) for run in runs]
        assert sim.stats.faults["other_run"] > 0, "the fault never fired: the test proves nothing"
        assert any(isinstance(o, gi.Result) for o in outcomes)
        for run, outcome in zip(runs, outcomes, strict=True):
            if isinstance(outcome, gi.Result):
                assert outcome.run_id == run.run_id
                assert outcome.urls and all(f"/{run.run_id}/" in url for url in outcome.urls)
            else:
                assert isinstance(outcome, gi.RunIdMismatchError), outcome
                assert outcome.run_id == run.run_id != outcome.answered_id


async def _settled(run: gi.Run) -> gi.Result | gi.GPTImageError:
    try:
        return await run
    except gi.GPTImageError as exc:
        return exc
