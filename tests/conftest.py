"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._clock import FakeClock, fake_loop_clock


@pytest.fixture
async def fake_clock() -> AsyncIterator[FakeClock]:
    """The running loop on a fake clock at 0.0 s; see ``tests/_clock.py``."""
    with fake_loop_clock() as clock:
        yield clock
