"""The run registry: runs, their clock-derived status, and per-key accounts.

No run owns a task or a timer. A run is a record of when it was created and
when it will finish; its status is read off the clock each time someone asks,
so 10,000 runs in flight cost 10,000 small objects and nothing else.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gptimage_async.simulator._config import ProtocolName, SimulatorConfig, UrlLocation

__all__ = ["PROCESSING_AFTER", "SimulatedRun", "SimulatedRuns", "RunState"]

RunState = Literal["pending", "processing", "succeeded", "failed"]

PROCESSING_AFTER = 0.2
"""Fraction of a run's duration it spends queued before it shows as processing."""

_CONCRETE_LOCATIONS: tuple[UrlLocation, ...] = (
    "output.urls",
    "output_list_str",
    "output_list_obj",
    "urls",
    "result.urls",
    "images",
)

# (message, code) pairs a failed run reports; drawn per run.
_FAILURES = (
    ("The prompt was rejected by the safety system.", "content_policy_violation"),
    ("The model failed to produce an image.", "generation_failed"),
    ("The upstream model timed out.", "upstream_timeout"),
)


@dataclass(slots=True, eq=False)
class SimulatedRun:
    """One run (Runbase) or task (API in One) as the server sees it.

    Times are ``time.monotonic()`` values; ``created_wall`` is the
    ``time.time()`` of creation, used only to print ``created_at``.
    """

    id: str
    protocol: ProtocolName
    key: str
    prompt: str
    aspect_ratio: str
    quality: str
    input_urls: tuple[str, ...]
    cost: int
    created_at: float
    created_wall: float
    started_at: float
    finishes_at: float
    will_fail: bool
    error_message: str
    error_code: str
    error_as_string: bool
    """Failures are seen reported both ways; with ``error_variants`` each run picks one."""
    url_location: UrlLocation
    """Where API in One puts this task's URLs (never ``"random"`` here)."""
    urls: tuple[str, ...]
    """Image URLs; empty for a run that will fail."""
    first_seen_done_at: float | None = None
    """When a poll answer first told the client the run was terminal."""
    polls: int = 0
    """Polls answered with this run's status (rate-limited ones are not)."""
    images: dict[int, bytes] = field(default_factory=dict, repr=False)
    """Rendered PNGs by index, filled on first download."""

    @property
    def duration(self) -> float:
        """Wall-clock seconds from creation to the terminal status."""
        return self.finishes_at - self.created_at

    def state(self, now: float) -> RunState:
        """The status at monotonic time ``now``."""
        if now >= self.finishes_at:
            return "failed" if self.will_fail else "succeeded"
        return "processing" if now >= self.started_at else "pending"


#: Protocols whose failed runs are refunded. Runbase documents it ("cost is taken
#: when the run is created and refunded if it fails", /work/shared/PROVIDERS.md);
#: API in One does not say, so the simulator keeps its failed tasks charged, as
#: the client counts them (``_pool._lanes.REFUNDS_FAILED_RUNS``): the two agree.
REFUNDING_PROTOCOLS: frozenset[ProtocolName] = frozenset({"runbase"})


@dataclass(slots=True)
class _Account:
    creates: int = 0
    spent: int = 0
    # (finishes_at, cost) of Runbase runs that will fail: refunded once their time has come.
    refunds: list[tuple[float, int]] = field(default_factory=list)


class SimulatedRuns:
    """Runs by id, plus what each key has created and spent."""

    __slots__ = ("_accounts", "_clock", "_rng", "runs")

    def __init__(self, rng: random.Random, clock: Callable[[], float] = time.monotonic) -> None:
        self._rng = rng
        self._clock = clock
        self._accounts: dict[str, _Account] = {}
        self.runs: dict[str, SimulatedRun] = {}

    def __repr__(self) -> str:
        return f"<SimulatedRuns runs={len(self.runs)} keys={len(self._accounts)}>"

    def _account(self, key: str) -> _Account:
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = _Account()
        return account

    def spent(self, key: str) -> int:
        """Credits ``key`` has spent, net of refunds for runs that failed by now."""
        account = self._account(key)
        now = self._clock()
        # Refunds are settled lazily, whenever someone looks: no timer per run.
        while account.refunds and account.refunds[0][0] <= now:
            account.spent -= heapq.heappop(account.refunds)[1]
        return account.spent

    def creates(self, key: str) -> int:
        """Runs ``key`` has created."""
        return self._account(key).creates

    def new_id(self, prefix: str) -> str:
        """A fresh id such as ``run_0123456789abcdef``; seeded runs get the same ids."""
        while True:
            run_id = f"{prefix}{self._rng.getrandbits(64):016x}"
            if run_id not in self.runs:
                return run_id

    def draw_duration(self, config: SimulatorConfig) -> float:
        """A run duration in provider seconds, per ``config.duration``."""
        if config.duration == "fixed":
            return config.duration_median
        if config.duration == "uniform":
            return self._rng.uniform(config.duration_min, config.duration_max)
        drawn = self._rng.lognormvariate(math.log(config.duration_median), config.duration_sigma)
        return min(max(drawn, config.duration_min), config.duration_max)

    def create(
        self,
        *,
        run_id: str,
        protocol: ProtocolName,
        key: str,
        prompt: str,
        aspect_ratio: str,
        quality: str,
        input_urls: tuple[str, ...],
        cost: int,
        file_base: str,
        config: SimulatorConfig,
    ) -> SimulatedRun:
        """Create, charge ``cost`` credits to ``key`` and register a run; its fate is set here."""
        rng = self._rng
        now = self._clock()
        duration = config.scaled(self.draw_duration(config))
        will_fail = config.failure_rate > 0 and rng.random() < config.failure_rate
        message, code = rng.choice(_FAILURES)
        location = config.apiinone_url_location
        if location == "random":
            location = rng.choice(_CONCRETE_LOCATIONS)
        host = "" if config.relative_image_urls else file_base
        urls = (
            ()
            if will_fail
            else tuple(f"{host}/files/{run_id}/{i}.png" for i in range(config.images_per_run))
        )
        run = SimulatedRun(
            id=run_id,
            protocol=protocol,
            key=key,
            prompt=prompt,
            aspect_ratio=aspect_ratio,
            quality=quality,
            input_urls=input_urls,
            cost=cost,
            created_at=now,
            created_wall=time.time(),
            started_at=now + PROCESSING_AFTER * duration,
            finishes_at=now + duration,
            will_fail=will_fail,
            error_message=message,
            error_code=code,
            # Drawn even when unused, so switching variants keeps seeded ids and fates.
            error_as_string=rng.random() < 0.5 and config.error_variants,
            url_location=location,
            urls=urls,
        )
        self.runs[run_id] = run
        account = self._account(key)
        account.creates += 1
        account.spent += cost
        if will_fail and protocol in REFUNDING_PROTOCOLS:
            heapq.heappush(account.refunds, (run.finishes_at, cost))
        return run

    def lookup(self, run_id: str, protocol: ProtocolName, key: str) -> SimulatedRun | None:
        """The run, if it exists for this protocol and belongs to ``key``."""
        run = self.runs.get(run_id)
        if run is None or run.protocol != protocol or run.key != key:
            return None
        return run
