"""A local stand-in for Runbase and API in One, for tests and benchmarks.

One aiohttp server speaks both providers' wire protocols (each dialect in
its own module, ``_runbase.py`` and ``_apiinone.py``) with compressed time,
per-key rate limits, credits, quotas and spend limits (each key its own,
``SimulatorConfig(keys={...})``), and injectable faults: 5xx answers,
connection resets, truncated JSON, slow answers, outages, and the dangerous
ones where a create succeeds but its answer is lost. Its counters tell a
benchmark how many requests a client spent and whether it ever paid for the
same prompt twice.

::

    from gptimage_async.simulator import Faults, Simulator, SimulatorConfig

    config = SimulatorConfig(time_scale=0.05, seed=7, faults=Faults(poll_5xx=0.1))
    async with Simulator(config) as sim:
        base = sim.base_url("apiinone")  # http://127.0.0.1:PORT/apiinone/api/v1
        ...
        print(sim.stats.requests, sim.stats.duplicates)

By default it answers exactly as the providers' documentation shows;
``config.with_variants()`` adds the undocumented shapes a tolerant client
must read.

Layout: ``_config`` (knobs), ``_keys`` (per-key accounts), ``_options``
(the ``simulate`` command's options), ``_app`` (the request pipeline), ``_runbase`` and
``_apiinone`` (the two dialects), ``_runs`` (runs and accounts),
``_ratelimit``, ``_faults``, ``_png`` (images), ``_stats``, ``_watch``
(``Simulator.until``), ``_simulator`` (server lifetime).

``Simulator`` and ``serve_forever`` (the server, and with it aiohttp.web) load
on first use (PEP 562 ``__getattr__``): the CLI reads the ``simulate``
options from ``_options`` on every start, and only a command that runs the
simulator pays for its server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gptimage_async.simulator._config import (
    VARIANTS,
    ApiInOneShape,
    DurationMode,
    Faults,
    ProtocolName,
    RetryAfterMode,
    SimulatorConfig,
    UrlLocation,
)
from gptimage_async.simulator._keys import KeyConfig
from gptimage_async.simulator._runs import RunState, SimulatedRun
from gptimage_async.simulator._stats import KeyStats, SimulatorStats

if TYPE_CHECKING:
    from gptimage_async.simulator._simulator import Simulator, serve_forever

__all__ = [
    "ApiInOneShape",
    "DurationMode",
    "Faults",
    "KeyConfig",
    "KeyStats",
    "ProtocolName",
    "RetryAfterMode",
    "RunState",
    "SimulatedRun",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "UrlLocation",
    "VARIANTS",
    "serve_forever",
]


def __getattr__(name: str) -> object:
    """Import the server (``Simulator``, ``serve_forever``) on first use (PEP 562)."""
    if name in ("Simulator", "serve_forever"):
        from gptimage_async.simulator import _simulator

        value = getattr(_simulator, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "Simulator", "serve_forever"})
