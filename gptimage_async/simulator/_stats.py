"""Live counters of what the simulator saw and answered."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["KeyStats", "SimulatorStats"]


@dataclass(slots=True)
class KeyStats:
    """What one API key did: :attr:`SimulatorStats.keys` holds one per key seen.

    Only requests that got past authentication are counted to a key.
    """

    create_requests: int = 0
    """Authenticated POSTs, whatever became of them."""
    creates: int = 0
    """Runs created (and charged) on this key."""
    polls: int = 0
    """Authenticated status GETs."""
    rate_limited: int = 0
    """429 RATE_LIMITED answers to this key."""
    runs_per_prompt: Counter[str] = field(default_factory=Counter)
    status_counts: Counter[int] = field(default_factory=Counter)
    """HTTP statuses of this key's answers that came from the provider logic
    (402, 403, 404, 429...); injected faults are not counted here."""

    @property
    def duplicates(self) -> int:
        """Runs this key created beyond the first for the same prompt."""
        return sum(n - 1 for n in self.runs_per_prompt.values() if n > 1)


@dataclass(slots=True)
class SimulatorStats:
    """Counters updated as requests arrive; read them at any time.

    ``runs_per_prompt`` is how benchmarks catch a client paying twice: a prompt
    created more than once shows up in :attr:`duplicates`.
    """

    requests: int = 0
    """API requests received (creates and polls; files are counted apart)."""
    create_requests: int = 0
    """POSTs received, whatever became of them."""
    creates: int = 0
    """Runs actually created."""
    polls: int = 0
    """Status GETs received."""
    rate_limited: int = 0
    """429 RATE_LIMITED answers sent (quota 429s are not counted here)."""
    file_requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    """Injected faults by name (``"reset"``, ``"poll_5xx"``, ``"outage"``...)."""
    runs_per_prompt: Counter[str] = field(default_factory=Counter)
    status_counts: Counter[int] = field(default_factory=Counter)
    """HTTP statuses sent; a reset connection sends none."""
    keys: dict[str, KeyStats] = field(default_factory=dict, repr=False)
    """Per-key counters, by API key (``key(...)`` reads one safely)."""

    def key(self, api_key: str) -> KeyStats:
        """The counters of ``api_key`` (all zero if it was never seen)."""
        stats = self.keys.get(api_key)
        if stats is None:
            stats = self.keys[api_key] = KeyStats()
        return stats

    @property
    def duplicates(self) -> int:
        """Runs created beyond the first for the same prompt."""
        return sum(n - 1 for n in self.runs_per_prompt.values() if n > 1)

    def reset(self) -> None:
        """Zero every counter in place (holders of this object see it too)."""
        self.requests = self.create_requests = self.creates = 0
        self.polls = self.rate_limited = self.file_requests = 0
        self.faults.clear()
        self.runs_per_prompt.clear()
        self.status_counts.clear()
        self.keys.clear()
