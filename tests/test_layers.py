"""The path of a run goes down the layers only (issue 18).

Nothing outside ``Session`` reaches its private attributes: the batch, the
sync layer and the CLI use its entry points (``cannot_connect``,
``lifecycle``, ``window_size``), and the CLI decides on a batch's stop cause
as a value (``BatchReport.stop_cause``), never on its words. The sessions
here run on the simulator in memory (``testing.memory_session``) on the fake
clock, or against a loopback port nothing listens on.
"""

from __future__ import annotations

import ast
import asyncio
import socket
from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async._batch_types import MAX_CREATE_FAILURES_IN_A_ROW, failed_create_stop
from gptimage_async._cli._batch import _summary
from gptimage_async._cli._spend import JobSpend
from gptimage_async._pool import (
    CLOSED_TTL,
    UNREACHABLE_AFTER,
    LaneHealth,
    cannot_connect,
    failover,
)
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import DEFAULT_TIME_SCALE, memory_session

from ._clock import FakeClock

PACKAGE = Path(gi.__file__).parent
#: The one module that may touch a session's private attributes: Session's own.
SESSION_MODULE = PACKAGE / "_session.py"
#: The names a session goes by outside it: ``session``, ``self.session``, ``self._session``.
SESSION_NAMES = frozenset({"session", "_session"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_session(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "session"
    return isinstance(node, ast.Attribute) and node.attr in SESSION_NAMES


def reaches_into_session(source: str) -> list[tuple[int, str]]:
    """Each private attribute of a session that ``source`` reads: ``(line, expression)``.

    ``session._x``, ``self.session._x``, ``self._session._x`` and
    ``getattr(session, "_x")``; an object's own ``self._session`` is not one.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        attribute = (
            isinstance(node, ast.Attribute) and _private(node.attr) and _is_session(node.value)
        )
        by_name = (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and _is_session(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        )
        if attribute or by_name:
            found.append((getattr(node, "lineno", 0), ast.unparse(node)))
    return sorted(found)


def test_the_check_finds_each_way_of_reaching_in() -> None:
    source = "\n".join(
        [
            "router = session._router",
            "self.session._life.drop_creates()",
            "window = concurrency or self._session._default_window()",
            "self._session.submit(request)",  # the object's own attribute, then a public verb
            "resend = getattr(session, '_resend', False)",
            "session.__class__",
        ]
    )
    assert [line for line, _ in reaches_into_session(source)] == [1, 2, 3, 5]


def test_nothing_outside_session_reaches_its_private_attributes() -> None:
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p != SESSION_MODULE)
    assert len(modules) > 50  # the whole package is read, not an empty glob
    reaches = {
        f"{path.relative_to(PACKAGE)}:{line}": text
        for path in modules
        for line, text in reaches_into_session(path.read_text(encoding="utf-8"))
    }
    assert reaches == {}, "use a Session entry point instead"


# -- cannot_connect: the lane-health rule, through Session.cannot_connect ------------------


def test_no_lane_can_connect_when_each_is_closed_or_unreachable() -> None:
    now = 100.0
    open_lane, closed, dead = LaneHealth(), LaneHealth(), LaneHealth()
    closed.close(gi.AuthenticationError("bad key", status_code=401), now)
    refused = gi.APIConnectionError("connection refused")
    for _ in range(UNREACHABLE_AFTER):
        dead.apply(refused, failover(refused, maybe_received=False), now)
    assert dead.unreachable(now)
    assert cannot_connect([closed, dead], now)
    assert not cannot_connect([closed, dead, open_lane], now)
    # A closure runs out (the key may have been topped up): the lane is tried again.
    assert not cannot_connect([closed], now + CLOSED_TTL)


async def test_an_open_session_can_connect(fake_clock: FakeClock) -> None:
    async with memory_session(remember=False) as (_, session):
        assert session.cannot_connect() is False
        assert session.window_size() >= 1
        assert session.lifecycle.state == "open"
    assert session.lifecycle.state == "closed"


def _dead_root() -> str:
    with socket.socket() as probe:  # a loopback port nothing listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def test_a_batch_on_one_lane_that_cannot_connect_stops_so(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    session = gi.Session(
        "runbase", api_key="sk-dead", base_url=_dead_root(), remember=False, run_timeout=8.0
    )
    async with session:
        batch = gi.Batch(session, [f"dead {i}" for i in range(20)], tmp_path)
        report = await fake_clock.run(batch.run())
        assert session.cannot_connect()
    assert report.stop_cause is gi.BatchStop.CANNOT_CONNECT
    assert report.stop_reason is not None
    assert report.stop_reason.startswith("no lane can be connected to: ")
    assert report.submitted == 0  # none of its creates left


# -- the batch's stop cause, as a value ----------------------------------------------------


def test_a_failed_create_stops_the_batch_for_its_cause() -> None:
    never: list[bool] = []

    def cannot() -> bool:
        never.append(True)
        return False

    refused = gi.AuthenticationError("bad key", status_code=401)
    assert failed_create_stop(refused, 1, cannot) == (gi.BatchStop.KEY_REFUSED, str(refused))
    wrong = gi.EndpointNotFoundError("no such API root", status_code=404)
    assert failed_create_stop(wrong, 1, cannot) == (gi.BatchStop.WRONG_ENDPOINT, str(wrong))
    assert never == []  # an error no prompt escapes decides alone
    busy = gi.ServerError("busy", status_code=500)
    assert failed_create_stop(busy, MAX_CREATE_FAILURES_IN_A_ROW - 1, cannot) is None
    assert failed_create_stop(busy, MAX_CREATE_FAILURES_IN_A_ROW, cannot) == (
        gi.BatchStop.CREATE_ERRORS,
        f"{MAX_CREATE_FAILURES_IN_A_ROW} creates failed in a row; the last: {busy}",
    )
    assert failed_create_stop(busy, 1, lambda: True) == (
        gi.BatchStop.CANNOT_CONNECT,
        f"no lane can be connected to: {busy}",
    )


def _stopped(tmp_path: Path, reason: str, cause: gi.BatchStop) -> gi.BatchReport:
    progress = gi.BatchProgress(
        total=0, succeeded=0, failed=0, unknown=0, skipped=0, submitting=0, in_flight=0,
        waiting=0, rate_limited=0, elapsed=1.0, rate=None, eta=None,
    )  # fmt: skip
    return gi.BatchReport(
        entries=(),
        progress=progress,
        manifest=tmp_path / "manifest.jsonl",
        journal=tmp_path / "journal.jsonl",
        stopped=True,
        stop_reason=reason,
        submitted=0,
        attached=0,
        skipped=0,
        stop_cause=cause,
    )


def test_the_cli_explains_the_cap_by_the_stop_cause_not_its_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = JobSpend(cap=24.0, earlier=20.0)
    # Words that never say "past the cap": the cause alone tells the CLI.
    capped = _stopped(tmp_path, "spend refused", gi.BatchStop.SPEND_CAP)
    _summary(capped, requests=0, out=tmp_path, job=job)
    assert "(this run's cap, 4, is what earlier runs into" in capsys.readouterr().out
    # Words that do, on a stop for another cause: no word about the cap.
    words = "a lane said the spend went past the cap"
    _summary(_stopped(tmp_path, words, gi.BatchStop.INTERRUPTED), requests=0, out=tmp_path, job=job)
    said = capsys.readouterr().out
    assert f"stopped early: {words}" in said and "this run's cap" not in said


# -- memory_session(simulator=): a simulator the test holds ---------------------------------


async def test_one_simulator_serves_two_memory_sessions_and_stays_open(
    fake_clock: FakeClock,
) -> None:
    loop = asyncio.get_running_loop()
    config = SimulatorConfig(time_scale=DEFAULT_TIME_SCALE, rate_limit=None, seed=3)
    sim = Simulator(config, clock=lambda: loop.time())
    sim.config = sim.config.replace(failure_rate=0.0)  # configured before any session

    async def job() -> gi.Result:
        async with memory_session(simulator=sim, remember=False) as (held, first):
            assert held is sim
            run = await first.submit("a lamp")
            assert run.id is not None
        # Not closed by the first session: the second attaches the run the first created.
        async with memory_session(simulator=sim, remember=False) as (_, second):
            return await second.attach(run.id, lane=run.lane)

    result = await fake_clock.run(job())
    assert result.urls and sim.stats.creates == 1 and sim.stats.duplicates == 0
    await sim.close()


async def test_memory_session_takes_a_config_or_a_simulator_not_both() -> None:
    sim = Simulator(SimulatorConfig())
    with pytest.raises(gi.ConfigurationError, match="not both"):
        async with memory_session(config=SimulatorConfig(), simulator=sim):
            pass  # pragma: no cover
    await sim.close()
