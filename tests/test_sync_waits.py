"""Every blocking ``SyncSession`` wait takes a Ctrl-C, and none is ever handed to a blocked loop.

Ctrl-C: a real ``python`` subprocess started as a shell starts the
background job of a script (SIGINT ignored from its start, ``python x.py &``)
waits in ``result()`` of a run from ``submit`` and from ``attach``, in a
``with`` block, and in ``close()``, with and without ``asyncio.run`` around
it; the test sends it real SIGINTs against the simulator served by the
test's loop.

Deadlocks: a ``SyncSession`` called from inside a running loop, with a
result of an async ``Session`` on that loop; the simulator is a real HTTP
server on a loop of its own (the test's loop is blocked by the calls).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async import _images, _loop_thread
from gptimage_async.simulator import Simulator, SimulatorConfig
from gptimage_async.testing import TEST_KEYS

from .test_sync import PNG, SimulatorThread, sync_session

#: A deadlock fails the test (with every thread's stack) instead of hanging the suite.
DEADLOCK_LIMIT = 60.0


@pytest.fixture(autouse=True)
def no_deadlock() -> Iterator[None]:
    faulthandler.dump_traceback_later(DEADLOCK_LIMIT, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# -- Ctrl-C in a script the shell started ignoring SIGINT ---------------------------

#: Each step prints "waiting STEP" once its blocking call waits (the call has
#: taken SIGINT: Python's handler is in place), then how the wait ended.
WAITS_SCRIPT = textwrap.dedent(
    """
    import asyncio, signal, sys, threading, time
    import gptimage_async as gi

    base_url, in_loop = sys.argv[1], sys.argv[2] == "loop"

    def open_session():
        return gi.SyncSession(
            "runbase", api_key="sk-sim-test", base_url=base_url, on_exit="cancel",
            rate_limit=gi.RateLimit(1000, per=1.0),
        )

    def say_when_waiting(step):
        def watch():
            while signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
                time.sleep(0.001)
            print("waiting", step, flush=True)
        threading.Thread(target=watch, daemon=True).start()

    def interrupted(step, started, state):
        took = time.monotonic() - started
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        print("interrupted", step, f"{took:.2f}", state, ignored, flush=True)

    def wait_for(step, session):
        run = session.submit("a ceramic lamp, " + step)
        if step == "attach":
            run = session.attach(run.id)
        say_when_waiting(step)
        started = time.monotonic()
        try:
            run.result()
            print("returned", step, flush=True)
        except KeyboardInterrupt:
            interrupted(step, started, run.done())

    def main():
        session = open_session()
        wait_for("submit", session)
        wait_for("attach", session)
        say_when_waiting("generate")
        started = time.monotonic()
        try:
            session.generate("a ceramic lamp, generate")
            print("returned generate", flush=True)
        except KeyboardInterrupt as exc:
            named = any("runs already created" in note for note in exc.__notes__)
            interrupted("generate", started, named)
        session.close(cancel=True)
        with open_session() as session:
            wait_for("with", session)
        session = open_session()
        session.submit("a lamp left in flight")
        say_when_waiting("close")
        started = time.monotonic()
        try:
            session.close(cancel=False)  # waits for the run in flight, despite on_exit
            print("returned close", flush=True)
        except KeyboardInterrupt:
            interrupted("close", started, None)
        print("end", flush=True)

    async def in_a_loop():
        main()

    asyncio.run(in_a_loop()) if in_loop else main()
    """
)


def _ignore_sigint() -> None:
    # What a non-interactive shell does for a background job (POSIX).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("where", ["script", "loop"])
async def test_ctrl_c_stops_every_wait_when_the_shell_ignored_sigint(where: str) -> None:
    # Runs of 3-10 s: every wait is still going when its Ctrl-C comes.
    async with Simulator(SimulatorConfig(time_scale=1.0, rate_limit=None, seed=5)) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WAITS_SCRIPT,
            sim.base_url("runbase"),
            where,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=_ignore_sigint,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        for runs, step in enumerate(("submit", "attach", "generate", "with", "close"), 1):
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line == f"waiting {step}\n", (line, lines)
            # The step's run exists before its Ctrl-C: under load the signal could
            # otherwise come before generate's create was sent (nothing to name).
            async with asyncio.timeout(30):
                await sim.until(lambda: len(sim.runs) >= runs)  # noqa: B023 - awaited here
            proc.send_signal(signal.SIGINT)
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    # Each wait ended by its Ctrl-C (3 s at least, else), and the shell's choice
    # (SIGINT ignored) is back once the call returned.
    said = {line.split()[1]: line.split() for line in lines}
    assert list(said) == ["submit", "attach", "generate", "with", "close"], lines
    for word, _, took, _, ignored in said.values():
        assert (word, ignored) == ("interrupted", "True"), lines
        assert float(took) < 2.5, lines
    # Only the wait stopped: the run goes on.
    assert [said[step][3] for step in ("submit", "attach", "with")] == ["False"] * 3
    # generate stopped as the command line stops: the run it created is named.
    assert said["generate"][3] == "True", lines
    assert "sk-sim-test" not in err.decode()


#: Opens a SyncSession whose shared budget's Redis accepts and never answers.
OPEN_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import gptimage_async as gi

    started = time.monotonic()
    try:
        gi.SyncSession(
            "runbase", api_key="sk-sim-test", base_url="http://127.0.0.1:9/runbase/api/v1",
            redis=sys.argv[1],
        )
        print("opened", flush=True)
    except KeyboardInterrupt:
        threads = [t.name for t in threading.enumerate() if t.name == "gptimage-sync"]
        print("interrupted", f"{time.monotonic() - started:.2f}", threads, flush=True)
    """
)


def test_ctrl_c_stops_opening_a_session_and_its_thread() -> None:
    pytest.importorskip("redis")
    with socket.socket() as silent:  # a Redis that accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        proc = subprocess.Popen(
            [sys.executable, "-c", OPEN_SCRIPT, f"redis://127.0.0.1:{silent.getsockname()[1]}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignore_sigint,
        )
        silent.settimeout(30)
        connection, _ = silent.accept()  # the opening waits on Redis now
        with connection:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    word, took, threads = out.split(maxsplit=2)
    assert word == "interrupted", out
    assert float(took) < 5.0, out
    # The opening was cancelled and the session's thread ended: nothing lingers.
    assert threads.strip() == "[]", out
    assert "sk-sim-test" not in err


@pytest.mark.skipif(
    _loop_thread._SIGINT_IGNORED_AT_START, reason="this test process started ignoring SIGINT"
)
def test_a_sigint_the_program_ignores_itself_stays_ignored() -> None:
    # Ignoring SIGINT after start-up is the program's own choice: a call keeps it.
    holder = SimulatorThread(SimulatorConfig(time_scale=0.01, rate_limit=None, seed=3))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with holder as sim, sync_session(sim) as session:
            run = session.submit("a ceramic lamp")
            kill = threading.Timer(
                0.01, signal.pthread_kill, (threading.main_thread().ident or 0, signal.SIGINT)
            )
            kill.start()
            assert run.result().run_id == run.id  # not interrupted
            kill.join()
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# -- no work handed to a loop blocked waiting for the call ---------------------------


async def test_download_and_read_of_an_async_result_inside_its_own_loop(tmp_path: Path) -> None:
    holder = SimulatorThread(SimulatorConfig(time_scale=0.01, rate_limit=None, seed=3))
    with holder as sim, sync_session(sim) as session:
        async with gi.Session(
            "runbase", api_key=TEST_KEYS["runbase"], base_url=sim.base_url("runbase")
        ) as async_session:
            result = await async_session.generate("a ceramic lamp")
            # This loop is blocked by each call: nothing may be handed to it.
            [path] = session.download(result, tmp_path / "sync")
            assert path.read_bytes().startswith(PNG)
            assert path.name == f"{result.run_id}-1.png"
            [image] = session.read(result)
            assert image == path.read_bytes()
            # The async session still saves on its own loop afterwards.
            [again] = await result.save(tmp_path / "async")
            assert again.read_bytes() == image
            # And a SyncSession's result saves from here, handed to its loop.
            synced = session.generate("a ceramic chair")
            [chair] = await synced.save(tmp_path / "chair")
            assert chair.read_bytes().startswith(PNG)


def test_download_from_another_loop_while_the_results_loop_is_blocked(tmp_path: Path) -> None:
    # A result of a session on a loop whose thread waits in a SyncSession call:
    # saved from another thread's loop at once, not when that call ends.
    holder = SimulatorThread(SimulatorConfig(time_scale=0.3, rate_limit=None, seed=3))
    with holder as sim, sync_session(sim) as session:
        saved: list[object] = []

        async def main() -> None:
            here = asyncio.get_running_loop()
            async with gi.Session(
                "runbase", api_key=TEST_KEYS["runbase"], base_url=sim.base_url("runbase")
            ) as async_session:
                result = await async_session.generate("a ceramic lamp")
                run = session.submit("a slow lamp")  # 0.9-3 s

                def save_elsewhere() -> None:
                    while not _loop_thread.loop_blocked(here):
                        time.sleep(0.001)
                    paths = asyncio.run(result.save(tmp_path))
                    saved.append((paths, _loop_thread.loop_blocked(here), run.done()))

                saver = threading.Thread(target=save_elsewhere)
                saver.start()
                run.result()  # blocks this loop's thread
                saver.join(10)
                assert not saver.is_alive()

        asyncio.run(main())
        [(paths, still_blocked, run_done)] = saved
        assert isinstance(paths, list)
        assert paths[0].read_bytes().startswith(PNG)
        # Saved while the loop that made the result was still blocked.
        assert still_blocked
        assert run_done is False


async def loop_passes(count: int) -> None:
    """Let the loop run ``count`` times round: work waiting in its queue starts and steps."""
    for _ in range(count):
        await asyncio.sleep(0)


def busy_then_stopped(origin: asyncio.AbstractEventLoop, go: threading.Event) -> threading.Thread:
    """``origin`` run in a thread, busy until ``go`` is set, then stopped.

    Work handed to the loop meanwhile waits behind the busy callback, and the
    loop stops before it would start it.
    """

    def busy_then_stop() -> None:
        go.wait(30)
        origin.stop()

    serving = threading.Thread(target=origin.run_forever)
    origin.call_soon(busy_then_stop)
    serving.start()
    return serving


def test_a_save_handed_to_a_loop_that_stops_before_running_it_still_ends(
    tmp_path: Path,
) -> None:
    holder = SimulatorThread(SimulatorConfig(time_scale=0.01, rate_limit=None, seed=3))
    with holder as sim:
        origin = asyncio.new_event_loop()
        session = gi.Session(
            "runbase", api_key=TEST_KEYS["runbase"], base_url=sim.base_url("runbase")
        )
        origin.run_until_complete(session.open())
        result = origin.run_until_complete(session.generate("a ceramic lamp"))
        go = threading.Event()
        serving = busy_then_stopped(origin, go)

        async def save() -> tuple[list[Path], float]:
            started = time.monotonic()
            saving = asyncio.create_task(result.save(tmp_path))
            await asyncio.sleep(0)  # the save has handed its work to the origin's loop
            go.set()
            return await saving, time.monotonic() - started

        try:
            [path], took = asyncio.run(save())
        finally:
            go.set()
            serving.join(30)
            origin.run_until_complete(session.aclose())
            origin.close()
        assert path.read_bytes().startswith(PNG)
        assert took < _loop_thread.ALIVE_CHECK + 5


def test_work_given_up_on_never_starts_when_its_loop_runs_again() -> None:
    # The save above, at the seam: the origin's loop stops before it starts the
    # handed work, so the fetch is made here instead. When that loop runs again
    # (to close its session) the handed work must not start too: a second
    # download into the same folder, cut off at its first await (a connection
    # left half-accepted at the server).
    origin = asyncio.new_event_loop()
    go = threading.Event()
    calls: list[str] = []

    class Source:
        base_url = "http://127.0.0.1:9/api"
        closed = False

        @property
        def transport(self) -> gi.Transport:
            raise AssertionError("not fetched through here")

    source = Source()

    async def fetch(session: object) -> str:
        calls.append("here" if session is None else "handed")
        return "done"

    serving = busy_then_stopped(origin, go)

    async def wait() -> str:
        waiting = asyncio.create_task(
            _images._on_origin_loop(_images._Origin(source, origin), fetch)
        )
        await asyncio.sleep(0)  # handed to the origin's loop, which is busy
        go.set()
        return await waiting

    try:
        assert asyncio.run(wait()) == "done"
    finally:
        go.set()
        serving.join(30)
        origin.run_until_complete(loop_passes(5))  # the loop runs again
        origin.close()
    assert calls == ["here"]
