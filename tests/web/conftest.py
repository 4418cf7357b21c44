"""Fixtures for the web integration tests: a simulator, and a log of the sessions opened."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator

import pytest

import gptimage_async as gi
from gptimage_async.integrations import _common
from gptimage_async.simulator import Simulator, SimulatorConfig

from .servers import TIME_SCALE


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """Runbase's real limit (20 per 10 s), compressed 100x; durations 3-10 s likewise."""
    async with Simulator(SimulatorConfig(time_scale=TIME_SCALE, seed=7)) as simulator:
        yield simulator


class SessionLog:
    """Every ``Session`` the integrations created during a test."""

    def __init__(self) -> None:
        self.sessions: list[gi.Session] = []

    @property
    def only(self) -> gi.Session:
        assert len(self.sessions) == 1, f"expected one session, got {self.sessions}"
        return self.sessions[0]


@pytest.fixture
def created_sessions(monkeypatch: pytest.MonkeyPatch) -> SessionLog:
    """Record the sessions the integrations open (the class itself is untouched)."""
    log = SessionLog()

    def from_config(config: gi.SessionConfig) -> gi.Session:
        session = gi.Session.from_config(config)
        log.sessions.append(session)
        return session

    monkeypatch.setattr(_common, "Session", types.SimpleNamespace(from_config=from_config))
    return log
