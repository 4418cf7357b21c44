"""Fixtures shared by the whole suite."""

from __future__ import annotations

import signal
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


@pytest.fixture
async def fake_clock() -> AsyncIterator[FakeClock]:
    """The running loop on a fake clock at 0.0 s; see ``tests/_clock.py``."""
    with fake_loop_clock() as clock:
        yield clock
