"""The simulator's lifetime: start an aiohttp server, expose its state, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import msgspec
from aiohttp import web

from gptimage_async.simulator._app import BASE_PATHS, SimulatorService
from gptimage_async.simulator._config import Faults, ProtocolName, SimulatorConfig
from gptimage_async.simulator._keys import KeyConfig
from gptimage_async.simulator._listening import close_runner
from gptimage_async.simulator._protocol import Reply
from gptimage_async.simulator._runs import SimulatedRun
from gptimage_async.simulator._stats import SimulatorStats

__all__ = ["Simulator", "serve_forever"]

# Handlers still running at close (a slow fault, say) get this long to finish
# before they are cancelled; a test suite should not wait on a simulated stall.
_SHUTDOWN_GRACE = 0.25

_CLOSED = "the simulator is closed"


class Simulator:
    """A local Runbase and API in One on one port, with knobs for every failure.

    ::

        async with Simulator(SimulatorConfig(time_scale=0.05, seed=1)) as sim:
            url = sim.base_url("runbase")  # http://127.0.0.1:PORT/runbase/api/v1
            ...
            assert sim.stats.duplicates == 0

    A simulator starts once; after :meth:`close` it cannot be started again.
    """

    __slots__ = ("_host", "_port", "_runner", "_service", "_state")

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # clock: seconds, monotonic; a test on a fake loop clock passes the loop's.
        self._service = SimulatorService(
            config if config is not None else SimulatorConfig(), clock=clock
        )
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._state = "new"

    def __repr__(self) -> str:
        where = self.url if self._state == "running" else self._state
        return f"<Simulator {where} runs={len(self.runs)} requests={self.stats.requests}>"

    # -- lifetime ----------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start serving."""
        if self._state != "new":
            raise RuntimeError(f"Simulator cannot be started: it is {self._state}")
        self._state = "starting"
        # One line per request when someone listens (`gptimage-async simulate -v`);
        # otherwise none, and no cost to format it either.
        access = logging.getLogger("gptimage_async.simulator.access")
        runner = web.AppRunner(
            self._service.build_app(),
            access_log=access if access.isEnabledFor(logging.INFO) else None,
            shutdown_timeout=_SHUTDOWN_GRACE,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._state = "closed"
            self._service.watch.close(_CLOSED)
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        # Outage times count from the moment the server can answer.
        self._service.started_at = self._service.clock()
        self._state = "running"

    async def close(self) -> None:
        """Stop serving and release the port; safe to call twice.

        Ends every :meth:`until` and :meth:`until_blocking` wait: one whose
        condition holds then returns, the others raise ``RuntimeError``.
        """
        runner, self._runner = self._runner, None
        self._state = "closed"
        try:
            if runner is not None:
                await close_runner(runner)
        finally:
            # After the last handlers' counters moved: a wait they satisfy returns.
            self._service.watch.close(_CLOSED)

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- where -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the real one when ``port=0`` was asked)."""
        if self._state != "running":
            raise RuntimeError("Simulator is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def base_url(self, protocol: ProtocolName) -> str:
        """The API base URL a client of ``protocol`` should use."""
        try:
            path = BASE_PATHS[protocol]
        except KeyError:
            raise ValueError(f"unknown protocol {protocol!r}") from None
        return self.url + path

    async def respond(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Reply:
        """Answer one request in memory, as the server would; no socket, no need to start.

        ``target`` is an absolute URL or a path; raises ``ConnectionDropped``
        where the server would reset the connection. See
        ``SimulatorService.respond``; ``gptimage_async.testing.memory_session``
        builds a session on it.
        """
        return await self._service.respond(method, target, headers, body)

    async def until(self, condition: Callable[[], object]) -> None:
        """Return as soon as ``condition()`` is true, checked whenever the state changes.

        ``condition``: a function of no arguments reading ``stats``, ``runs``...
        (its result is taken as a bool). It is checked now, on the caller's
        thread, then on the simulator's loop after each step of the request
        pipeline that moves a counter: a request arrived, its work was done
        (a run created), its answer went out, an image was served. So a test
        acts the moment the server holds a create, with no polling and no
        sleep; keep the condition quick and free of side effects. It waits as
        long as it takes: bound it with ``asyncio.timeout``. Safe from another
        event loop or thread than the simulator's.

        A simulator not started yet is waited on too: :meth:`respond` serves
        it in memory (``gptimage_async.testing.memory_session``).

        Raises:
            TypeError: ``condition`` is not callable, is an async function, or
                returned an awaitable.
            Exception: whatever ``condition()`` raised, at its first check or
                any later one (``StopIteration`` as a ``RuntimeError`` from
                it, as in a coroutine); the wait ends there. The request being
                served when it raised is not affected.
            RuntimeError: the simulator is closed (or closes while waiting)
                and the condition does not hold.
        """
        await self._service.watch.until(condition)

    def until_blocking(
        self, condition: Callable[[], object], *, timeout: float | None = 30.0
    ) -> None:
        """:meth:`until` for a thread that runs no event loop (it blocks that thread).

        ``timeout``: seconds to wait, default 30.0; ``0`` checks once;
        ``None`` or ``math.inf`` waits with no limit. Same conditions and
        errors as :meth:`until`, and:

        Raises:
            TimeoutError: the condition did not come true in ``timeout`` seconds.
            ValueError: ``timeout`` is nan or negative.
            TypeError: ``timeout`` is not a number.
            RuntimeError: called on a thread running an event loop (the
                simulator's own, say, which could not serve while blocked):
                ``await until()`` there instead. Checked before any wait.
        """
        # A never-started simulator is served only in memory: say so when it times out.
        unstarted = " (the simulator was never started: only Simulator.respond() reaches it)"
        hint = unstarted if self._state == "new" else ""
        self._service.watch.until_blocking(condition, timeout, hint=hint)

    # -- state -------------------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        """The configuration in force; assign a new one to change it live."""
        return self._service.config

    @config.setter
    def config(self, config: SimulatorConfig) -> None:
        # The random generator is kept: a new seed here would not make an
        # already-running simulation reproducible anyway.
        self._service.config = config

    @property
    def stats(self) -> SimulatorStats:
        """Live counters."""
        return self._service.stats

    @property
    def runs(self) -> Mapping[str, SimulatedRun]:
        """Every run created so far, by id."""
        return self._service.registry.runs

    def reset_stats(self) -> None:
        """Zero the counters (runs and accounts are kept)."""
        self._service.stats.reset()

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings, effective from the next request."""
        self.config = self.config.replace(faults=faults)

    def set_rate_limit(self, limit: int | None, window: float | None = None) -> None:
        """Change the per-key limit (``None`` disables it) and optionally the window."""
        changes: dict[str, object] = {"rate_limit": limit}
        if window is not None:
            changes["rate_window"] = window
        self.config = self.config.replace(**changes)

    def set_key(self, key: str, **changes: Any) -> None:
        """Change ``key``'s own account (``KeyConfig`` fields), effective from the next request.

        Fields not given keep their value; e.g. ``sim.set_key("sk-a", credits=0)``
        runs one key out of credits mid-job while the others go on.
        """
        own = self.config.keys.get(key, KeyConfig())
        keys = {**self.config.keys, key: msgspec.structs.replace(own, **changes)}
        self.config = self.config.replace(keys=keys)

    def start_outage(self) -> None:
        """Answer every request 503 from now until :meth:`end_outage`.

        Like every fault it spares protocols left out of ``Faults.applies_to``.
        """
        self._service.manual_outage = True

    def end_outage(self) -> None:
        """End an outage begun with :meth:`start_outage` (a scheduled one is kept)."""
        self._service.manual_outage = False

    def balance(self, key: str) -> int | None:
        """Credits ``key`` has left, or ``None`` when its credits are unlimited."""
        credits = self.config.limits(key).credits
        return None if credits is None else credits - self._service.registry.spent(key)

    def spent(self, key: str) -> int:
        """Credits ``key`` has spent on runs, net of refunds for runs that failed by now."""
        return self._service.registry.spent(key)

    def revoke(self, key: str) -> None:
        """Answer every request with ``key`` 401 ``invalid_api_key`` from now on.

        Runs it created live on but can no longer be polled with it, as when a
        user deletes a key in the provider's dashboard mid-job. Raises
        ``TypeError`` for a key that is not a ``str``, ``ValueError`` for an
        empty one (either would otherwise revoke nothing, silently).
        """
        self._service.revoked.add(_checked_key(key, "revoke"))

    def restore(self, key: str) -> None:
        """Undo :meth:`revoke` (same errors)."""
        self._service.revoked.discard(_checked_key(key, "restore"))


def _checked_key(key: object, what: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{what}() takes an API key as a str, not {type(key).__name__}")
    if not key.strip():
        raise ValueError(f"{what}() needs a non-empty API key")
    return key


async def _serve(host: str, port: int, config: SimulatorConfig | None) -> None:
    async with Simulator(config, host=host, port=port) as sim:
        print(f"Runbase:    {sim.base_url('runbase')}", flush=True)
        print(f"API in One: {sim.base_url('apiinone')}", flush=True)
        print(f"config: {sim.config.log_line()}", flush=True)
        await asyncio.Event().wait()


def serve_forever(
    host: str = "127.0.0.1", port: int = 8080, config: SimulatorConfig | None = None
) -> None:
    """Run a simulator in the foreground until interrupted (Ctrl-C).

    Prints the two base URLs once the port is bound.
    """
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, config))
