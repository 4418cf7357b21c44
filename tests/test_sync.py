"""The synchronous API: from a script, inside a running event loop, and from many threads.

The simulator runs as a real HTTP server on its own loop in a thread of the
test process (a blocking call on the test's loop would otherwise stall it),
or the script under test runs in a real ``python`` subprocess.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import faulthandler
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import TEST_KEYS

from .helpers import config

PNG = b"\x89PNG\r\n\x1a\n"
#: A deadlock fails the test (with every thread's stack) instead of hanging the suite.
DEADLOCK_LIMIT = 120.0


class SimulatorThread:
    """A ``Simulator`` serving from its own event loop in a background thread."""

    def __init__(self, sim_config: SimulatorConfig) -> None:
        self._config = sim_config
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.sim: Simulator | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Simulator(self._config) as sim:
            self.sim = sim
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Simulator:
        self._thread.start()
        assert self._ready.wait(30), "the simulator did not start"
        assert self.sim is not None
        return self.sim

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def on_loop(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the simulator's loop (to change its config safely)."""
        assert self._loop is not None
        done = concurrent.futures.Future[None]()

        def call() -> None:
            fn()
            done.set_result(None)

        self._loop.call_soon_threadsafe(call)
        done.result(10)


@pytest.fixture
def sim_thread() -> Iterator[SimulatorThread]:
    holder = SimulatorThread(config(rate_limit=None))
    with holder:
        yield holder


@pytest.fixture
def sim(sim_thread: SimulatorThread) -> Simulator:
    assert sim_thread.sim is not None
    return sim_thread.sim


@pytest.fixture(autouse=True)
def no_deadlock() -> Iterator[None]:
    faulthandler.dump_traceback_later(DEADLOCK_LIMIT, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def sync_session(sim: Simulator, **options: Any) -> gi.SyncSession:
    options.setdefault("rate_limit", gi.RateLimit(1000, per=1.0))
    return gi.SyncSession(
        "runbase", api_key=TEST_KEYS["runbase"], base_url=sim.base_url("runbase"), **options
    )


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gptimage-sync"]


# -- a script with no event loop -------------------------------------------------


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import gptimage_async as gi

    base_url, out = sys.argv[1], sys.argv[2]
    report = {}
    with gi.SyncSession(
        "runbase", api_key="sk-sim-test", base_url=base_url,
        rate_limit=gi.RateLimit(1000, per=1.0),
    ) as session:
        result = session.generate("a ceramic lamp", aspect_ratio="3:2")
        report["paths"] = [str(p) for p in session.download(result, out)]
        report["read"] = [len(b) for b in session.read(result)]
        report["many"] = [r.run_id for r in session.generate_many(["a", "b", "c"])]
        run = session.submit("a desk")
        report["submitted"] = [run.id, run.result().run_id]
        try:
            session.generate("a lamp", quality="ultra")
        except gi.InvalidRequestError as exc:
            report["invalid"] = type(exc).__name__
    report["closed"] = session.closed
    print(json.dumps(report))
    """
)


def run_script(source: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_a_script_with_no_event_loop(sim: Simulator, tmp_path: Path) -> None:
    proc = run_script(SCRIPT, sim.base_url("runbase"), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    [path] = report["paths"]
    saved = Path(path)
    assert saved.parent == tmp_path / "out" and saved.read_bytes().startswith(PNG)
    assert report["read"] == [saved.stat().st_size]
    assert len(set(report["many"])) == 3
    assert report["submitted"][0] == report["submitted"][1]
    assert report["invalid"] == "InvalidRequestError"
    assert report["closed"] is True
    assert sim.stats.creates == 5  # the invalid request was never sent
    assert sim.stats.duplicates == 0
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no partials


def test_a_session_never_closed_is_closed_at_exit(sim: Simulator) -> None:
    source = textwrap.dedent(
        """
        import sys
        import gptimage_async as gi
        session = gi.SyncSession("runbase", api_key="sk-sim-test", base_url=sys.argv[1],
                                 rate_limit=gi.RateLimit(1000, per=1.0))
        print(session.generate("a lamp").run_id)
        # Still referenced, never closed: the interpreter's exit closes it.
        """
    )
    proc = run_script(source, sim.base_url("runbase"), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in sim.runs
    assert "a SyncSession was not closed; closing it at exit" in proc.stderr


# -- inside a running loop (a notebook cell) -------------------------------------


async def test_inside_a_running_event_loop(sim: Simulator, tmp_path: Path) -> None:
    # A Jupyter cell: the loop is running in this very thread; asyncio.run would fail here.
    pause = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="running event loop"):
        asyncio.run(pause)
    pause.close()
    with sync_session(sim) as session:
        result = session.generate("a ceramic lamp")
        [many] = session.generate_many(["a desk"])
        run = session.submit("a chair")
        assert run.result().run_id == run.id and run.done()
        assert run.outcome is not None and run.outcome.run_id == run.id
        assert run.request is not None and run.request.prompt == "a chair"
        # A result of the sync session, awaited on this loop: fetched on the session's loop.
        [saved] = await result.save(tmp_path / "a")
        assert saved.read_bytes().startswith(PNG)
        assert await result.read() == [saved.read_bytes()]
        assert len(loop_threads()) == 1
    assert {result.run_id, many.run_id, run.id} <= set(sim.runs)
    # The session is closed; its results still save (on this loop, with a client of their own).
    [again] = await result.save(tmp_path / "b", stem="after-close")
    assert again.name == "after-close-1.png" and again.read_bytes() == saved.read_bytes()
    assert loop_threads() == []


# -- from many threads at once (a sync web framework) ----------------------------


def test_many_threads_share_one_session(sim: Simulator) -> None:
    with sync_session(sim) as session:

        def view(n: int) -> list[str]:
            # What one request handler of a Flask or Django app would do.
            one = session.generate(f"lamp {n}")
            many = session.generate_many([f"desk {n}", f"chair {n}"])
            run = session.submit(f"sofa {n}")
            return [one.run_id, *(r.run_id for r in many), run.result().run_id]

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            ids = [i for got in pool.map(view, range(16)) for i in got]
        assert len(loop_threads()) == 1  # one loop for every caller
    assert len(ids) == len(set(ids)) == 16 * 4
    assert set(ids) == set(sim.runs)
    assert sim.stats.creates == 64 and sim.stats.duplicates == 0
    assert loop_threads() == []


# -- the same errors -------------------------------------------------------------


def test_the_same_typed_errors_in_the_callers_thread(
    sim_thread: SimulatorThread, sim: Simulator
) -> None:
    with pytest.raises(gi.ConfigurationError):
        gi.SyncSession("runbase", api_key="sk-sim-test", base_url="ftp://example.com")
    with sync_session(sim) as session:
        assert TEST_KEYS["runbase"] not in repr(session)
        with pytest.raises(gi.InvalidRequestError):
            session.generate("")
        with pytest.raises(gi.InvalidRequestError):
            session.generate_many("a lamp")  # a str, not a list: one paid run per letter
        assert sim.stats.create_requests == 0

        def always_fail() -> None:
            sim.config = sim.config.replace(failure_rate=1.0)

        sim_thread.on_loop(always_fail)
        with pytest.raises(gi.RunFailedError) as failed:
            session.generate("a lamp")
        assert failed.value.run_id in sim.runs
        got = session.generate_many(["a", "", "b"], return_exceptions=True)
        assert [type(e) for e in got] == [
            gi.RunFailedError,
            gi.InvalidRequestError,
            gi.RunFailedError,
        ]
        with pytest.raises(gi.RunFailedError):
            session.generate_many(["c", "d"])
        run = session.submit("e")
        with pytest.raises(gi.RunFailedError):
            run.result()
        assert run.status is gi.RunStatus.FAILED and isinstance(run.error, gi.RunFailedError)
        with pytest.raises(TimeoutError):
            session.attach("run_unknown_to_anyone").result(timeout=0)
    with pytest.raises(gi.SessionClosedError):
        session.generate("a lamp")
    session.close()  # twice is harmless
    assert sim.stats.duplicates == 0


def test_close_waits_for_runs_in_flight_or_cancels_them(sim: Simulator) -> None:
    session = sync_session(sim)
    waited = session.submit("a lamp")
    session.close()
    assert waited.status is gi.RunStatus.SUCCEEDED
    session = sync_session(sim)
    let_go = session.submit("a desk")
    with contextlib.suppress(ZeroDivisionError), session:
        raise ZeroDivisionError  # leaving through an exception cancels, as Session does
    assert isinstance(let_go.error, gi.SessionClosedError)
    assert let_go.error.run_id == let_go.id
    assert loop_threads() == []


def test_calls_racing_a_close_end_in_a_result_or_session_closed(sim: Simulator) -> None:
    session = sync_session(sim)

    def caller(n: int) -> str:
        try:
            session.generate(f"a lamp {n}")
        except gi.SessionClosedError:
            return "closed"
        return "ok"

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        calls = [pool.submit(caller, n) for n in range(32)]
        session.close(cancel=True)
        outcomes = [call.result(timeout=60) for call in calls]  # none hangs
    assert len(outcomes) == 32 and set(outcomes) <= {"ok", "closed"}
    assert "closed" in outcomes  # most were still queued when the close came
    assert sim.stats.duplicates == 0
    assert loop_threads() == []


@pytest.mark.parametrize("concurrency", [0, -1, True, 1.5, "3"])
def test_a_bad_concurrency_is_the_same_error_in_both_apis(sim: Simulator, concurrency: Any) -> None:
    # One check for the async and the sync verbs: the same class, before any create.
    before = sim.stats.creates
    with (
        sync_session(sim) as session,
        pytest.raises(gi.ConfigurationError, match="concurrency must be a positive int"),
    ):
        session.generate_many(["a lamp"], concurrency=concurrency)

    async def the_async_one() -> None:
        async with gi.Session(
            "runbase", api_key=TEST_KEYS["runbase"], base_url=sim.base_url("runbase")
        ) as session:
            with pytest.raises(gi.ConfigurationError, match="concurrency must be a positive int"):
                await session.generate_many(["a lamp"], concurrency=concurrency)

    asyncio.run(the_async_one())
    assert sim.stats.creates == before
