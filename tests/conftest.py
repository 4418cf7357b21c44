"""Fixtures shared by the whole suite."""

from __future__ import annotations

import importlib
import importlib.util
import os
import py_compile
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator

import pytest

from ._clock import FakeClock, fake_loop_clock


def pytest_configure(config: pytest.Config) -> None:
    """Give Ctrl-C back to the processes the tests start.

    A shell without job control starts background commands with SIGINT
    ignored (POSIX), and an ignored signal stays ignored across exec. A suite
    run that way would hand that on to every simulator and CLI process its
    tests interrupt with SIGINT, and those would never stop. With a Python
    handler here, exec resets SIGINT to its default in every child.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _share_bytecode(config)


#: Where the controller compiled the bytecode the tests' child processes read.
PYCACHE_ENV = "GPTIMAGE_TESTS_PYCACHE"
#: What a ``python -m gptimage_async`` child imports, some of it lazily.
CHILD_IMPORTS = ("gptimage_async._cli", "gptimage_async.simulator", "redis.asyncio")


def _share_bytecode(config: pytest.Config) -> None:
    """Compile once what the tests' child processes import, when nothing may write bytecode.

    With ``PYTHONDONTWRITEBYTECODE`` set, every CLI, simulator and worker
    process the suite starts (a few hundred) would compile the package from
    source again: about 0.15 s of CPU each, a third of its start-up. The
    controller compiles those modules once into a temporary
    ``PYTHONPYCACHEPREFIX`` tree (the source tree stays clean) and the child
    processes read it. The pytest processes themselves keep their start-up
    settings: a prefix makes Python look for bytecode only there.
    """
    if not sys.flags.dont_write_bytecode or "PYTHONPYCACHEPREFIX" in os.environ:
        return
    cache = os.environ.get(PYCACHE_ENV)
    if cache is None:  # the controller (or a run without workers): compile once
        cache = tempfile.mkdtemp(prefix="gptimage-tests-pycache-")
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
        _compile_into(cache)
        os.environ[PYCACHE_ENV] = cache
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        os.environ["PYTHONPYCACHEPREFIX"] = cache  # for this process's children only


def _compile_into(cache: str) -> None:
    # Only what is imported here (about 1 s to compile): a module a child
    # imports lazily and that is missing from the tree is compiled as before.
    for name in CHILD_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra that is not installed
            continue
    sources = {
        module.__file__
        for module in list(sys.modules.values())
        if getattr(module, "__file__", None) and str(module.__file__).endswith(".py")
    }
    before = sys.pycache_prefix
    sys.pycache_prefix = cache  # where cache_from_source (and compileall) put bytecode
    try:
        for source in sources:
            assert source is not None
            target = importlib.util.cache_from_source(source)
            py_compile.compile(source, cfile=target, doraise=False, quiet=2)
    finally:
        sys.pycache_prefix = before


@pytest.fixture
async def fake_clock() -> AsyncIterator[FakeClock]:
    """The running loop on a fake clock at 0.0 s; see ``tests/_clock.py``."""
    with fake_loop_clock() as clock:
        yield clock
