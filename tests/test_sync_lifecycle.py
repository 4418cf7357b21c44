"""A ``SyncSession``'s life: closed when dropped, not re-entered once closed, true messages.

The simulator serves from its own loop in a thread of the test process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import warnings
import weakref

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_sync import SimulatorThread, loop_threads, sim, sim_thread, sync_session

__all__ = ["sim", "sim_thread"]  # fixtures, used by name


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sessions_dropped_unclosed_are_closed_when_collected(sim: Simulator) -> None:
    # A notebook cell run again: the name is rebound, the old session dropped.
    threads, fds = len(loop_threads()), open_fds()
    refs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for n in range(30):
            session = sync_session(sim)
            session.generate(f"a lamp, take {n}")  # its connection is open
            refs.append(weakref.ref(session))
        del session
        gc.collect()
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(unclosed) == 30
    assert all("unclosed SyncSession" in str(w.message) for w in unclosed)
    # Nothing (its own thread included) kept a session alive, and each was closed.
    assert all(ref() is None for ref in refs)
    assert len(loop_threads()) == threads
    assert open_fds() <= fds + 2
    assert "sk-" not in str(unclosed[0].message)


def test_a_closed_session_refuses_a_with_block(sim: Simulator) -> None:
    session = sync_session(sim)
    with session:
        pass
    assert session.closed
    with pytest.raises(gi.SessionClosedError, match="closed"), session:
        pytest.fail("entered a closed session")
    closed = sync_session(sim)
    closed.close()
    with pytest.raises(gi.SessionClosedError), closed:
        pass


def test_a_result_timeout_says_what_sync_code_can_do(sim: Simulator) -> None:
    with sync_session(sim) as session:
        run = session.submit("a ceramic lamp")
        with pytest.raises(TimeoutError) as caught:
            run.result(timeout=0.001)
        message = str(caught.value)
        assert "call result() again" in message and "await" not in message
        assert run.id is not None and run.id in message
        assert run.result().run_id == run.id  # the run carried on


def test_the_runs_view_holds_what_the_close_warning_names(
    sim_thread: SimulatorThread, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim_thread.on_loop(lambda: setattr(sim, "config", sim.config.replace(time_scale=10.0)))
    session = sync_session(sim)
    run = session.submit("a very slow lamp")
    assert run.id in session.runs
    session.close(cancel=True)
    [abandoned] = session.runs.abandoned
    assert abandoned.id == run.id
    # The WARNING points at session.runs.abandoned: it exists on a SyncSession too.
    assert any("session.runs.abandoned holds them" in r.getMessage() for r in caplog.records)
    with pytest.raises(AttributeError):
        session.runs = None  # type: ignore[misc]  # read-only


def test_ctrl_c_in_generate_many_keeps_its_finished_runs_in_runs_undelivered() -> None:
    holder = SimulatorThread(SimulatorConfig(time_scale=0.05, rate_limit=None, seed=3))
    with holder as sim, sync_session(sim, rate_limit=gi.RateLimit(1, per=0.05)) as session:

        def interrupt_after_three_finished() -> None:
            # Looked at as each request reaches the simulator: the job creates 20 a
            # second, so the look after the third success is at most 50 ms late.
            with contextlib.suppress(TimeoutError):  # then the test fails below instead
                sim.until_blocking(lambda: session.runs.counts()["succeeded"] >= 3, timeout=60)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        threading.Thread(target=interrupt_after_three_finished, daemon=True).start()
        with pytest.raises(KeyboardInterrupt) as caught:
            session.generate_many([f"a ceramic lamp, take {n}" for n in range(200)])
        notes = "\n".join(getattr(caught.value, "__notes__", []))
        held = {run.id for run in session.runs.undelivered}
        # The note and the view agree: every run the note says succeeded is held
        # (a run in flight at the stop may have ended since, and joined them).
        succeeded = {line.split()[0] for line in notes.splitlines() if line.endswith("succeeded")}
        assert len(succeeded) >= 3
        assert succeeded <= held <= set(sim.runs)
    # The with block waited for the runs in flight at the stop: all ended, none returned.
    assert {run.id for run in session.runs.undelivered} == set(sim.runs)
    assert all(run.status is gi.RunStatus.SUCCEEDED for run in session.runs.undelivered)


def test_a_finalizer_on_the_loop_thread_never_deadlocks(
    sim_thread: SimulatorThread, sim: Simulator
) -> None:
    # The last reference dropped on the session's own loop thread: by a logging
    # handler there (the transport logs each request at DEBUG), as by any code
    # that runs on that thread. Runs of 3-10 s: it is polled well after submit returns.
    sim_thread.on_loop(lambda: setattr(sim, "config", sim.config.replace(time_scale=1.0)))
    before = set(loop_threads())
    box = [sync_session(sim)]
    [thread] = set(loop_threads()) - before
    armed, done = threading.Event(), threading.Event()

    class DropOnTheLoopThread(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if armed.is_set() and threading.current_thread() is thread and box:
                box.clear()
                gc.collect()
                done.set()

    logger = logging.getLogger("gptimage_async")
    handler, level = DropOnTheLoopThread(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            box[0].submit("a ceramic lamp")  # its run is polled after submit returns
            armed.set()  # only the box holds the session now
            assert done.wait(30)
            thread.join(30)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not box
    assert not thread.is_alive()
