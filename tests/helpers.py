"""Shared helpers: a simulator plus a session against it, in compressed time."""

from __future__ import annotations

from typing import Any

from gptimage_async.simulator import VARIANTS, Faults, SimulatorConfig

#: Runs of 3-10 s take 30-100 ms; the 20-per-10-s window is 100 ms.
FAST = 0.01


def config(**overrides: Any) -> SimulatorConfig:
    """A simulator config for tests: fast, seeded, Runbase's limit unless told otherwise.

    The answer variants are on, so every test also proves the client reads them.
    """
    overrides.setdefault("time_scale", FAST)
    overrides.setdefault("seed", 1234)
    return SimulatorConfig(**{**VARIANTS, **overrides})


__all__ = ["FAST", "Faults", "config"]
