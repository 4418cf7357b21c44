"""Fixtures shared by the whole suite."""

from __future__ import annotations

import compileall
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ._clock import FakeClock, fake_loop_clock
from ._xdist_groups import LoadGroupIds


def pytest_configure(config: pytest.Config) -> None:
    """Give Ctrl-C and hang-ups back to the processes the tests start.

    A shell without job control starts background commands with SIGINT
    ignored (POSIX), and an ignored signal stays ignored across exec. A suite
    run that way would hand that on to every simulator and CLI process its
    tests interrupt with SIGINT, and those would never stop. With a Python
    handler here, exec resets SIGINT to its default in every child.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # nohup starts its command with SIGHUP ignored, likewise inherited: the tests
    # that hang up on a batch (a closed terminal) need the default.
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    _share_bytecode(config)
    _no_system_trust_store(config)
    config.pluginmanager.register(LoadGroupIds(), "load-group-ids")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first: on several workers the run ends when its last long test does.

    The ``slow`` rows (each many seconds) and the README's blocks (one worker
    runs them all, in order) start at once instead of last; the sort is stable,
    so the order within each part is the collection order.
    """

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is not None:
            return 0
        if item.get_closest_marker("xdist_group") is not None:
            return 1
        return 2

    items.sort(key=rank)


#: The project's own packages that the tests' child processes import.
CHILD_PACKAGES = ("gptimage_async", "benchmarks")
ROOT = Path(__file__).resolve().parents[1]


def _share_bytecode(config: pytest.Config) -> None:
    """Compile the project's packages once when nothing else may write their bytecode.

    With ``PYTHONDONTWRITEBYTECODE`` set, every CLI, simulator and script
    process the suite starts (a few hundred) would compile the package from
    source again: about 0.15 s of CPU each, a third of its start-up. The
    installed libraries and the standard library have their bytecode already;
    this writes the project's (into the ``__pycache__`` directories git
    ignores) once, from the controller, before any worker starts. A child
    process only reads it; an edited source is compiled afresh (its bytecode
    records the source's time and size).
    """
    if not sys.flags.dont_write_bytecode or hasattr(config, "workerinput"):
        return
    for package in CHILD_PACKAGES:
        if (ROOT / package).is_dir():
            compileall.compile_dir(ROOT / package, quiet=2)
    # The xdist workers, started after this with this environment, may then keep
    # what pytest rewrites for its assertion messages (every test module, and the
    # package, a pytest plugin): each worker otherwise rewrites and compiles it all
    # again at every run, about 3 s of CPU each before its first test.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def _no_system_trust_store(config: pytest.Config) -> None:
    """Start the workers and every child process without reading the system's CA bundle.

    aiohttp builds its default TLS context as it is imported, and that reads the
    whole system CA bundle (``ssl.create_default_context``): about 80 ms of CPU
    in each of the few hundred Python processes the suite starts. No test talks
    TLS to a public host: the TLS tests serve a self-signed certificate, which
    is refused with or without the bundle. Set here, before the workers start,
    so they and their children inherit it.
    """
    if hasattr(config, "workerinput"):
        return
    os.environ.setdefault("SSL_CERT_FILE", os.devnull)
    os.environ.setdefault("SSL_CERT_DIR", os.devnull)


@pytest.fixture
async def fake_clock() -> AsyncIterator[FakeClock]:
    """The running loop on a fake clock at 0.0 s; see ``tests/_clock.py``."""
    with fake_loop_clock() as clock:
        yield clock
