"""What one ``python -m benchmarks`` run measured, and how it was asked to."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from .fleet import Row as FleetRow
from .gallery import GalleryRow
from .pool import PoolRow
from .scenarios import Bulk, Cpu, Idle, InFlight, Steady

__all__ = ["Results", "Settings"]


@dataclass(slots=True, frozen=True)
class Settings:
    """How the run was asked for."""

    time_scale: float
    runs: int
    baseline_cap: float
    cpu_concurrency: int
    argv: str = ""


@dataclass(slots=True)
class Results:
    """Everything one invocation measured, and how it was asked to."""

    settings: Settings
    bulk: list[Bulk] = field(default_factory=list)
    drift: list[Bulk] = field(default_factory=list)
    """Bulk jobs whose run durations change mid-job, ours and the hand-written client's."""
    drift_idle: list[Idle] = field(default_factory=list)
    """Single runs whose durations change (speed up) mid-way."""
    warm: list[Bulk] = field(default_factory=list)
    """Two sessions of one job in a row: (first, second) ours, then the hand-written client's."""
    idle: list[Idle] = field(default_factory=list)
    cpu: list[Cpu] = field(default_factory=list)
    in_flight: InFlight | None = None
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    """One-minute load average at the start and at the end."""
    fleet: str = ""
    """The Markdown section of ``benchmarks.fleet`` (several processes on one key), if run."""
    fleet_rows: list[FleetRow] = field(default_factory=list)
    """Its fleets' rows (judged in the Targets table), if run."""
    gallery: GalleryRow | None = None
    """The gallery page's cost at 10,000 images, if measured."""
    steady: list[Steady] = field(default_factory=list)
    """Steady arrivals (web-app load), ours in one process and in a fleet, and the baseline."""
    steady_note: str = ""
    """Why part of the steady scenario was not measured (say, no ``redis-server``)."""
    pool: list[PoolRow] = field(default_factory=list)
    """Issue 19: a pool of three keys (combined, one lane closing, price-first)."""
