"""Names that tell the truth on the user's handles; the old ones still work (issue 18 item 7)."""

from __future__ import annotations

import asyncio

import gptimage_async as gi
from gptimage_async._registry import RunRegistry


async def test_a_run_carries_no_scheduler_state_and_its_times_are_loop_seconds() -> None:
    now = asyncio.get_running_loop().time()
    run = gi.Run("r1", "runbase", None, created_at=now, deadline=now + 60.0)
    assert run.id == run.run_id == "r1"  # one value, two names, both kept
    assert run.polls == 0
    # Nothing of the poll scheduler's bookkeeping is on the public handle.
    assert not [name for name in dir(run) if "poll" in name and name not in {"polls", "_polls"}]
    # created_at / deadline are on the event loop's clock, as documented.
    assert run.created_at <= asyncio.get_running_loop().time() < run.deadline


async def test_the_registrys_old_write_names_still_work() -> None:
    registry = RunRegistry()
    now = asyncio.get_running_loop().time()
    run = gi.Run("r1", "runbase", None, created_at=now, deadline=now + 60.0)
    registry.add(run)  # deprecated name, same behaviour
    assert registry.get("r1") is run and len(registry) == 1
    run._fail(gi.GPTImageError("gone"), gi.RunStatus.ERRORED)
    registry.discard(run)
    assert len(registry) == 0 and registry.counts()["errored"] == 1


async def test_a_resolved_runs_outcome_is_its_result_only() -> None:
    now = asyncio.get_running_loop().time()
    ok = gi.Run("r1", "runbase", None, created_at=now, deadline=now + 60.0)
    result = gi.Result(run_id="r1", provider="runbase", urls=["u"], request=None, elapsed=1.0)
    ok._resolve(result)
    failed = gi.Run("r2", "runbase", None, created_at=now, deadline=now + 60.0)
    error = gi.RunFailedError("nope", run_id="r2")
    failed._fail(error, gi.RunStatus.FAILED)
    assert ok.outcome is result and ok._result_or_error() is result
    assert failed.outcome is None and failed.error is error
    assert failed._result_or_error() is error
