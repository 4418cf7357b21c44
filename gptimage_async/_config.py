"""A session's options, each checked once: ``SessionConfig``.

``Session(...)``, the web integrations (``lifespan``, ``setup``) and the
command line all build a ``SessionConfig`` and open sessions from it, so an
option is documented and validated in one place. ``SessionOptions`` is the
same set of keywords as a ``TypedDict`` (for ``**options`` in signatures);
a test keeps the two, and ``Session.__init__``'s signature, in step.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ._budget import check_redis_option
from ._endpoint import check_base_url, check_key, resolve_key
from ._exceptions import ConfigurationError
from ._models import RateLimit
from ._pool import Lane, Pool
from ._pool._lanes import check_routing
from ._providers import Provider, ProviderName, get_provider
from ._transport import Secret, Transport, check_proxy, display_url

if TYPE_CHECKING:
    from redis.asyncio import Redis
else:  # get_type_hints() must work without the optional redis package
    Redis = Any

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CREATE_ATTEMPTS",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_RUN_TIMEOUT",
    "OnExit",
    "Routing",
    "SessionConfig",
    "SessionOptions",
]

OnExit = Literal["wait", "cancel"]
#: How a pool picks the lane of each create (``gptimage_async._pool._routing``).
Routing = Literal["earliest", "cheapest"]

#: Defaults, in seconds unless named otherwise.
DEFAULT_REQUEST_TIMEOUT = 60.0
DEFAULT_RUN_TIMEOUT = 900.0
DEFAULT_MAX_CREATE_ATTEMPTS = 6
DEFAULT_MAX_CONNECTIONS = 100


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SessionConfig:
    """Every option of a ``Session``, checked when built; immutable after.

    >>> config = SessionConfig("apiinone", run_timeout=300)        # doctest: +SKIP
    >>> async with Session.from_config(config) as session: ...      # doctest: +SKIP

    ``Session(provider, **options)`` is ``Session.from_config(SessionConfig(
    provider, **options))``. Build one config and open many sessions from it
    (one per process, per app start); ``dataclasses.replace(config, ...)``
    gives a changed copy, checked again. Every bad value raises
    ``ConfigurationError`` (a ``ValueError``) here, before anything is opened,
    except a missing API key: that is read from the environment when a
    session is built from the config (``api_key()``), so an app can be built
    before its key is set.

    Options (all keyword-only but ``provider``):

    * ``provider``: ``ProviderName``, ``"runbase"`` (default) or ``"apiinone"``.
    * ``api_key``: ``str | None``, default ``None``: read from
      ``RUNBASE_API_KEY`` / ``APIINONE_API_KEY`` when a session is built.
      Held so that no repr, log or error shows it (and left out of ``==``).
    * ``base_url``: ``str | None``, the API root including ``/api/v1``;
      default ``None``: the provider's (``https://runbase.net/api/v1``,
      ``https://apiin.one/api/v1``). Plain ``http://`` is accepted only for
      loopback hosts (the simulator). A trailing ``/`` is dropped.
    * ``rate_limit``: ``RateLimit | None``, the starting belief about the key's
      limit; default ``None``: the provider's (Runbase 20 requests per 10 s,
      API in One 10 per 10 s; creates and polls together). The limiter
      learns from there.
    * ``request_timeout``: seconds one HTTP request may take, connect to last
      byte; default ``DEFAULT_REQUEST_TIMEOUT`` (60 s).
    * ``run_timeout``: seconds from a run's create to its resolution; past it
      the run ends with ``RunTimeoutError`` (it may still finish: ``attach``
      it). Default ``DEFAULT_RUN_TIMEOUT`` (900 s).
    * ``on_exit``: ``OnExit``, what leaving the ``async with`` block normally
      does with runs in flight: ``"wait"`` (default) for them, or ``"cancel"``
      them (they end with ``SessionClosedError``). Leaving through an
      exception always cancels, and names the runs left in a WARNING.
    * ``resend_uncertain_creates``: ``bool``, default ``False``. ``True``
      resends a create whose fate is unknown (a lost connection, a 5xx after
      the request was written), accepting the risk of paying twice; ``False``
      raises ``UncertainCreateError`` instead.
    * ``max_create_attempts``: ``int`` >= 1, attempts per create for errors
      that certainly created nothing (connection refused, 503, 408), the first
      included. Waits as told do not count (a 429, or a ``Retry-After`` on a
      503, 502, 504 or 408, per RFC 9110): ``run_timeout`` bounds those. Default
      ``DEFAULT_MAX_CREATE_ATTEMPTS`` (6).
    * ``max_connections``: ``int`` >= 1, open connections to the provider, and
      so polls on the wire at once; default ``DEFAULT_MAX_CONNECTIONS`` (100).
    * ``user_agent``: ``str | None``, the ``User-Agent`` header; default
      ``None``: ``gptimage-async/<version>``.
    * ``proxy``: ``str | None``, an ``http://`` or ``https://`` proxy URL every
      request goes through; default ``None``: ``HTTPS_PROXY`` / ``HTTP_PROXY``
      (by the base URL's scheme), ``ALL_PROXY`` and ``NO_PROXY`` are honoured
      as requests and httpx do, read when the session opens. Credentials in
      it are never shown.
    * ``redis``: ``str | redis.asyncio.Redis | None``, default ``None``: a
      ``redis://`` / ``rediss://`` URL, a
      ``redis+sentinel://host:26379[,host2]/service[/db]`` URL (the primary
      Redis Sentinel names, followed through a failover), or a client; every
      session, in any process, naming the same Redis, provider and key then shares the key's
      budget (one GCRA schedule kept in Redis; see the README's "Several
      processes, one key"). Needs the extra ``gptimage-async[redis]``;
      without it, ``ConfigurationError`` names the extra. ``None``: the
      budget is this process's alone and Redis is never imported.
      With ``redis``, what the session learned (recent run durations) is
      also kept in that Redis, loaded when it opens and saved when it closes,
      so every process on the key and the next job start warm: one key per
      provider, API key and base URL, named by keyed hashes (never the key or
      URL), kept 7 days after the last save. Processes closing one after the
      other: the last to save wins (one that could not read Redis at open
      saves only where it holds nothing). Redis not answering at open or
      close costs at most two Redis timeouts (0.25 s each) and a warning,
      never an error.
    * ``state_file``: ``str | os.PathLike[str] | None``, default ``None``: a
      path where the session keeps what it learned (the rate belief, the last
      window's requests and recent run durations), loaded when it opens and
      saved when it closes, so the next batch starts warm. A missing, stale
      (over 7 days) or corrupt file is ignored with a DEBUG line. ``None``
      keeps nothing. With ``redis`` too, Redis is the shared truth and the
      file its fallback: the state is loaded from the file only when Redis
      does not answer or holds none, and saved to both. The shared budget is
      Redis's either way: only run durations are taken from the file.
    * ``remember``: ``bool``, default ``True``. ``False``: nothing learned is
      loaded or saved, neither in Redis nor in ``state_file``.
    * ``transport``: ``Transport | None``, default ``None``: the aiohttp
      transport built from the options above. For tests and advanced use: a
      ``Transport`` (``gptimage_async._transport``) every request is sent
      through instead, e.g. the in-memory one onto the simulator that
      ``gptimage_async.testing.memory_session`` builds. The session closes it.
    * ``lanes``: ``Iterable[Lane] | None``, default ``None``: a pool of several
      keys and sellers (README, "Several keys and sellers"); each
      ``gptimage_async.Lane`` names its provider, key, base URL, starting
      rate and prices, so ``provider``, ``api_key``, ``base_url`` and
      ``rate_limit`` must then be left unset (``provider`` becomes the first
      lane's). ``None``: one lane from those four options, as always.
    * ``routing``: ``Routing``, ``"earliest"`` (default: the lane whose next
      rate-limit slot is free first) or ``"cheapest"`` (price first; a dearer
      lane takes a create only while the cheaper ones are saturated).
    * ``spend_cap``: ``float | None``, default ``None``: the most all runs
      created by the session may cost, in the lanes' price unit; no create
      goes out that could pass it (``SpendCapError``). Every lane then needs
      a price for every quality (a Runbase lane has none unless given).
    """

    provider: ProviderName | str = dataclasses.field(default="runbase", kw_only=False)
    # Left out of == and hash: a Secret has no value equality (it never shows its value).
    api_key: str | Secret | None = dataclasses.field(default=None, repr=False, compare=False)
    base_url: str | None = None
    rate_limit: RateLimit | None = None
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    run_timeout: float = DEFAULT_RUN_TIMEOUT
    on_exit: OnExit = "wait"
    resend_uncertain_creates: bool = False
    max_create_attempts: int = DEFAULT_MAX_CREATE_ATTEMPTS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    user_agent: str | None = None
    proxy: str | None = None
    redis: str | Redis | None = None
    state_file: str | os.PathLike[str] | None = None
    remember: bool = True
    # A live object, not a setting: left out of == and repr.
    transport: Transport | None = dataclasses.field(default=None, repr=False, compare=False)
    lanes: Sequence[Lane] | None = None
    routing: Routing = "earliest"
    spend_cap: float | None = None

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalised values are set once, here
        if self.transport is not None and not (
            callable(getattr(self.transport, "send", None))
            and callable(getattr(self.transport, "aclose", None))
        ):
            raise ConfigurationError("transport must be a gptimage_async Transport or None")
        if self.lanes is not None:
            fix(self, "lanes", _check_lanes(self))
            fix(self, "provider", self.lanes[0].provider)
        adapter = get_provider(self.provider)
        fix(self, "provider", adapter.name)
        if self.api_key is not None and not isinstance(self.api_key, Secret):
            fix(self, "api_key", Secret(check_key(self.api_key, adapter)))
        if self.base_url is not None:
            fix(self, "base_url", check_base_url(self.base_url))
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise ConfigurationError("rate_limit must be a gptimage_async.RateLimit or None")
        for name in ("request_timeout", "run_timeout"):
            fix(self, name, _positive_seconds(name, getattr(self, name)))
        if self.on_exit not in ("wait", "cancel"):
            raise ConfigurationError(f"on_exit must be 'wait' or 'cancel', not {self.on_exit!r}")
        for name in ("max_create_attempts", "max_connections"):
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigurationError(f"{name} must be a positive int")
        for name in ("resend_uncertain_creates", "remember"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False")
        agent = self.user_agent
        if agent is not None and (
            not isinstance(agent, str)
            or not agent.strip()
            or any(ord(c) < 32 or ord(c) == 127 for c in agent)
        ):
            # aiohttp would refuse it on the first request, with a plain ValueError.
            raise ConfigurationError(
                "user_agent must be a non-empty str without control characters"
            )
        if self.proxy is not None:
            check_proxy(self.proxy)
        check_redis_option(self.redis)
        if self.state_file is not None and not isinstance(self.state_file, str | os.PathLike):
            raise ConfigurationError("state_file must be a path (str or os.PathLike) or None")
        if self.lanes is None:
            check_routing(self.routing, self.spend_cap)  # the pool's own checks

    def pool(self) -> Pool:
        """The session's lanes as a ``Pool``: ``lanes``, or one lane from the options.

        The one lane's key is read now (``resolved_key``). Raises
        ``ConfigurationError`` when there is no key, or a ``spend_cap`` with a
        lane whose price is unknown (a Runbase lane given no ``prices``).
        """
        lanes = self.lanes
        if lanes is None:
            lane = Lane(
                self.provider,
                self.resolved_key().reveal(),
                base_url=self.base_url,
                rate_limit=self.rate_limit,
            )
            lanes = (lane,)
        return Pool(lanes, routing=self.routing, spend_cap=self.spend_cap)

    @property
    def adapter(self) -> Provider:
        """The provider's adapter (encodes requests, reads answers, knows its limits)."""
        return get_provider(self.provider)

    @property
    def api_root(self) -> str:
        """``base_url``, or the provider's own API root when it is ``None``."""
        return self.base_url or self.adapter.default_base_url

    @property
    def starting_rate(self) -> RateLimit:
        """``rate_limit``, or the provider's published limit when it is ``None``."""
        return self.rate_limit or self.adapter.default_rate_limit

    def resolved_key(self) -> Secret:
        """The API key: ``api_key``, else the provider's environment variable, read now.

        Raises ``ConfigurationError`` naming the variable when there is none.
        """
        if isinstance(self.api_key, Secret):
            return self.api_key
        return Secret(resolve_key(None, self.adapter))

    def __repr__(self) -> str:
        # Never the key; URLs without their user info (a proxy's or Redis's password).
        shown = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "api_key":
                value = None if value is None else Secret("")
            elif field.name in ("proxy", "redis") and isinstance(value, str):
                value = display_url(value)
            elif field.name == "redis" and value is not None:
                value = type(value).__name__
            if value != field.default:
                shown.append(f"{field.name}={value!r}")
        return f"SessionConfig({', '.join(shown)})"


class SessionOptions(TypedDict, total=False):
    """``SessionConfig``'s keywords but ``provider`` and ``on_exit``, for ``**options``.

    What the web integrations (``lifespan``, ``setup``) take: an app's shutdown
    waits ``shutdown_timeout`` seconds for runs in flight instead of
    ``on_exit``. Each option is documented on ``SessionConfig``.
    """

    api_key: str | None
    base_url: str | None
    rate_limit: RateLimit | None
    request_timeout: float
    run_timeout: float
    resend_uncertain_creates: bool
    max_create_attempts: int
    max_connections: int
    user_agent: str | None
    proxy: str | None
    redis: str | Redis | None
    state_file: str | os.PathLike[str] | None
    remember: bool
    transport: Transport | None
    lanes: Sequence[Lane] | None
    routing: Routing
    spend_cap: float | None


def _check_lanes(config: SessionConfig) -> tuple[Lane, ...]:
    given = [
        name for name in ("api_key", "base_url", "rate_limit") if getattr(config, name) is not None
    ]
    if given:
        raise ConfigurationError(
            f"with lanes=..., give {', '.join(given)} per gptimage_async.Lane, not to the session"
        )
    lanes = config.lanes
    if isinstance(lanes, Pool):
        raise ConfigurationError(
            "pass a Pool's parts: lanes=pool.lanes, routing=pool.routing, spend_cap=pool.spend_cap"
        )
    # Pool checks the lanes (empty, same key twice, labels, routing, cap and prices).
    pool = Pool(lanes, routing=config.routing, spend_cap=config.spend_cap)  # type: ignore[arg-type]
    if config.transport is not None and len(pool.lanes) > 1:
        # One transport sends with one key; each lane needs its own.
        raise ConfigurationError("transport= works with one lane, not a pool of several")
    return pool.lanes


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds")
    return float(value)
