"""One key's request budget shared by every process through Redis.

``SharedLimiter`` implements the ``Limiter`` protocol of ``_limiter`` with the
key's schedule kept in Redis, so that four ``uvicorn`` workers, or two bulk
scripts, on one API key pace themselves as one client would:

* **One GCRA timeline per key.** A Lua script keeps the theoretical arrival
  time (``tat``) of the key's next free slot and advances it by one interval
  per request granted, reading Redis's own clock (``TIME``): host clocks never
  matter, and one ``EVALSHA`` round trip decides one request. No burst:
  providers count with sliding windows, so slots stay evenly spaced (``CATCH_UP``
  caps the credit an idle key builds up, as in ``RateLimiter``).
* **Priorities across processes, in the same round trip.** A poll may *book
  ahead*: it is given the next free slot however far away and sleeps until
  it. A create is admitted only if the next free slot is (about) now *and* no
  other process has polls waiting (each process says so in a sorted set
  with a short expiry). A speculative poll (``try_acquire``) only takes a slot
  free now when nobody in the fleet waits. Each process books at most one
  slot at a time, so booking is first come, first served across processes: a
  busy process cannot starve a light one. Trade-off: creates poll Redis for
  their turn (one round trip per free slot per waiting process, cheap at the
  rates providers allow) instead of queueing in Redis, which keeps the script
  small and leaves nothing to clean up when a process dies.
* **What one process learns, all know.** A 429, its ``Retry-After`` or an
  outage backoff pauses the shared timeline and is pushed to every process
  through pub/sub (and echoed in every script reply). The belief about the
  provider's limit lives in Redis (for ``BELIEF_TTL``), learned with the same
  rules as ``AdaptiveRate`` from the fleet's own grant log, at most one cut
  per window fleet-wide.
* **Redis down or slow is not an outage.** Every call has ``timeout``; on a
  failure the process falls back to a local ``RateLimiter`` at its share of
  the last known belief (the share is one over the processes alive, known from
  heartbeats), logs one warning, keeps probing Redis, and rejoins the shared
  timeline (which grants no burst). The limiter never raises to its callers
  because of Redis, so no run is lost and no create is sent twice.

Redis keys are ``gptimage:{<hash>}:<name>``, where ``<hash>`` is an HMAC of the
provider and the API key (never the key itself); the braces are a Redis
Cluster hash tag, so one budget's keys share a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import itertools
import logging
import math
import os
import random
import re
import secrets
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._exceptions import ConfigurationError
from ._limiter import (
    BELOW_BAD,
    CATCH_UP,
    DECREASE_MIN,
    FORGET_BAD_AFTER,
    GRANT_AHEAD,
    INCREASE_FAST,
    INCREASE_SLOW,
    INCREASE_START,
    JITTER_BAND,
    JITTER_MEMORY,
    MAX_RATE_FACTOR,
    MIN_RATE_FACTOR,
    NUDGE,
    PRIORITY_CREATE,
    PRIORITY_POLL,
    SAFETY_MARGIN,
    TRUSTED_COUNT,
    Limiter,
    RateLimiter,
    promote_waiting_creates,
)
from ._models import RateLimit
from ._retry import backoff_delays

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = [
    "DEFAULT_REDIS_TIMEOUT",
    "SharedLimiter",
    "base_url_id",
    "budget_id",
    "check_redis_option",
    "make_limiter",
    "redact_url",
]

logger = logging.getLogger("gptimage_async")

#: Seconds every Redis call may take before this process paces itself locally.
DEFAULT_REDIS_TIMEOUT = 0.25
#: The fleet's learned belief outlives its processes this long (seconds).
BELIEF_TTL = 3 * 24 * 3600.0
#: A process counts as alive this long after its last call or heartbeat (seconds).
ALIVE_FOR = 5.0
HEARTBEAT_EVERY = 1.5
#: A create may book a slot this share of an interval ahead (polls: any distance).
CREATE_AHEAD = 0.25
#: A process's "polls waiting" mark outlives its next expected call by this
#: many intervals plus MARK_SLACK seconds (a dead process blocks creates no longer).
MARK_INTERVALS = 2.0
MARK_SLACK = 0.1
#: While Redis is away, probe it this often (seconds, and at most this share of a window).
PROBE_EVERY = 0.25
PROBE_WINDOW_SHARE = 0.05
#: A 429 cuts the shared belief only if the grant log covers this share of the
#: window before it (after a Redis restart it covers less: a pause, no cut).
MIN_COVERED = 0.5
#: Internal priority of a speculative poll: after every real waiter.
_PRIORITY_SPECULATIVE = 2


def _wire_priority(priority: int) -> int:
    """The priority class Redis sees: 0 poll, 1 create, 2 speculative.

    A job's last creates (``PRIORITY_LAST_CREATE``) go in the polls' class.
    As creates they would deadlock a fleet: this process's polls wait behind
    them, so it reports polls waiting, and another process in the same state
    would then hold its creates back for ours, and ours for its.
    """
    return max(PRIORITY_POLL, min(priority, _PRIORITY_SPECULATIVE))


#: Key of the HMAC naming a budget. Not a secret: it keeps raw key hashes out of Redis.
_NAME_KEY: Final = b"gptimage-async/shared-budget/v1"

# One script, four operations. Every time is Redis's (TIME), in seconds as a
# double; times are stored with %.6f (Lua's tostring keeps only 14 digits).
# Numbers go back as strings: Redis truncates Lua numbers to integers.
_SCRIPT = """
local st, w0, w1, glog, procs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local chan = ARGV[1]
local op, me = ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) * 1e-6
local function fmt(x) return string.format('%.6f', x) end
local h = redis.call('HMGET', st, 'rate', 'per', 'tat', 'pause', 'start', 'bad', 'cut',
  'l429', 'ws', 'wsat', 'w429', 'ceil', 'since')
local start_rate = tonumber(h[5]) or tonumber(ARGV[7])
local per = tonumber(h[2]) or tonumber(ARGV[5])
local rate = tonumber(h[1]) or tonumber(ARGV[4])
local ceil = h[12] or ARGV[6]
local tat = tonumber(h[3]) or 0
local pause = tonumber(h[4]) or 0
local bad = tonumber(h[6])
local cut = tonumber(h[7]) or -1e18
local l429 = tonumber(h[8]) or -1e18
local ws = tonumber(h[9]) or now
local wsat = tonumber(h[10]) or 0
local w429 = tonumber(h[11]) or 0
-- When the grant log began (a new budget, or Redis restarted empty).
local since = tonumber(h[13]) or now
local rate0 = rate
local function interval() return 1 / (rate * (1 - @MARGIN@)) end

local function increase()
  if bad and now - l429 > @FORGET@ * per then bad = bad * @SLOW@ end
  local r = rate
  if not bad then r = r * @START@
  elseif r * @FAST@ <= bad * @BELOW@ then r = r * @FAST@
  elseif r < bad * @BELOW@ then r = bad * @BELOW@
  else return end
  if ceil == '1' then r = math.min(r, start_rate) end
  r = math.min(r, start_rate * @MAXF@)
  if r > rate then rate = r end
end

local function roll()
  if now - ws >= per then
    if wsat == 1 and w429 == 0 then increase() end
    ws = now; wsat = 0; w429 = 0
  end
end

local function limited(age)
  local previous = l429
  l429 = now; w429 = 1
  local sent = now - age
  if sent < cut + per then return end
  -- The log covers only what went through Redis since it began: estimate the
  -- rate over that span, and not at all from a sliver of a window.
  local covered = math.min(per, sent - since)
  if covered < @COVER@ * per then return end
  local n = redis.call('ZCOUNT', glog, '(' .. fmt(sent - per), '(' .. fmt(sent))
  local r = rate
  local new, failing
  if n > 0 then
    local est = n / covered
    if est >= r * @JBAND@ and now - previous > @JMEM@ * per then
      if bad then bad = math.min(bad, r) else bad = r end
      return
    end
    new = math.min(r, est)
    if est >= r * @JBAND@ then new = new * (1 - @NUDGE@) else new = new * (1 - @MARGIN@) end
    failing = math.min(r, est)
  else
    new = r * @DMIN@
    failing = r
  end
  if bad then bad = math.min(bad, failing) else bad = failing end
  local floor = 0
  if n < @TRUSTED@ then floor = r * @DMIN@ end
  rate = math.max(new, floor, start_rate * @MINF@)
  cut = now; ws = now; wsat = 0; w429 = 0
end

redis.call('ZREMRANGEBYSCORE', w0, '-inf', fmt(now))
redis.call('ZREMRANGEBYSCORE', w1, '-inf', fmt(now))
redis.call('ZREMRANGEBYSCORE', procs, '-inf', fmt(now))
redis.call('ZADD', procs, fmt(now + @ALIVE@), me)
local admit = 0
local delay = 0

if op == 'acquire' then
  local prio = tonumber(ARGV[8])
  local more_polls, more = ARGV[9], ARGV[10]
  local queued_for = tonumber(ARGV[11])
  local iv = interval()
  local start = math.max(tat, pause, now - @CATCHUP@ * iv)
  local polls_elsewhere = redis.call('ZCARD', w0) - (redis.call('ZSCORE', w0, me) and 1 or 0)
  local waits_elsewhere = redis.call('ZCARD', w1) - (redis.call('ZSCORE', w1, me) and 1 or 0)
  if prio == 0 then
    admit = 1
  elseif prio == 1 then
    if polls_elsewhere == 0 and start <= now + @CAHEAD@ * iv then admit = 1 end
  else
    if waits_elsewhere == 0 and start <= now + @GAHEAD@ then admit = 1 end
  end
  local at
  if admit == 1 then
    at = start
    tat = start + iv
    redis.call('ZADD', glog, fmt(at), me .. ':' .. fmt(at))
    redis.call('ZREMRANGEBYSCORE', glog, '-inf', fmt(now - 2 * per))
    roll()
    if prio < 2 and queued_for >= iv and pause <= now - queued_for then wsat = 1 end
  elseif prio == 1 and polls_elsewhere > 0 then
    at = math.max(start, now) + iv
  elseif prio == 2 and waits_elsewhere > 0 then
    at = math.max(start, now) + iv
  else
    at = math.max(start, now + @GAHEAD@)
  end
  delay = at - now
  local mark = fmt(math.max(at, now) + @MARKN@ * iv + @MARKS@)
  if more_polls == '1' or (admit == 0 and prio == 0) then
    redis.call('ZADD', w0, mark, me)
  else
    redis.call('ZREM', w0, me)
  end
  if more == '1' or (admit == 0 and prio < 2) then
    redis.call('ZADD', w1, mark, me)
  else
    redis.call('ZREM', w1, me)
  end
elseif op == 'limited' or op == 'trouble' then
  if op == 'limited' then limited(tonumber(ARGV[8])) end
  local seconds = tonumber(ARGV[9])
  if op == 'limited' and ARGV[10] == '1' then seconds = math.max(seconds, interval()) end
  pause = math.max(pause, now + seconds)
  tat = math.max(tat, pause)
  redis.call('PUBLISH', chan, 'p ' .. fmt(pause - now))
elseif op == 'leave' then
  redis.call('ZREM', w0, me)
  redis.call('ZREM', w1, me)
  redis.call('ZREM', procs, me)
end

if rate ~= rate0 then redis.call('PUBLISH', chan, 'r ' .. fmt(rate)) end
redis.call('HSET', st, 'rate', fmt(rate), 'per', fmt(per), 'tat', fmt(tat), 'pause', fmt(pause),
  'start', fmt(start_rate), 'cut', fmt(cut), 'l429', fmt(l429), 'ws', fmt(ws),
  'wsat', wsat, 'w429', w429, 'ceil', ceil, 'since', fmt(since))
if bad then redis.call('HSET', st, 'bad', fmt(bad)) end
local keep = math.max(math.ceil(per * 4000), 60000)
redis.call('PEXPIRE', st, @BELIEFMS@)
redis.call('PEXPIRE', w0, keep)
redis.call('PEXPIRE', w1, keep)
redis.call('PEXPIRE', glog, keep)
redis.call('PEXPIRE', procs, keep)
local live = redis.call('ZCOUNT', procs, fmt(now), '+inf')
return {admit, fmt(delay), fmt(rate), fmt(per), fmt(math.max(pause - now, 0)), live}
"""

for _name, _value in {
    "MARGIN": SAFETY_MARGIN,
    "FORGET": FORGET_BAD_AFTER,
    "SLOW": INCREASE_SLOW,
    "START": INCREASE_START,
    "FAST": INCREASE_FAST,
    "BELOW": BELOW_BAD,
    "MAXF": MAX_RATE_FACTOR,
    "MINF": MIN_RATE_FACTOR,
    "JBAND": JITTER_BAND,
    "JMEM": JITTER_MEMORY,
    "NUDGE": NUDGE,
    "DMIN": DECREASE_MIN,
    "TRUSTED": TRUSTED_COUNT,
    "ALIVE": ALIVE_FOR,
    "CATCHUP": CATCH_UP,
    "CAHEAD": CREATE_AHEAD,
    "GAHEAD": GRANT_AHEAD,
    "MARKN": MARK_INTERVALS,
    "MARKS": MARK_SLACK,
    "BELIEFMS": int(BELIEF_TTL * 1000),
    "COVER": MIN_COVERED,
}.items():
    _SCRIPT = _SCRIPT.replace(f"@{_name}@", repr(float(_value)))


def budget_id(provider: str, api_key: str) -> str:
    """The name of a key's shared budget: an HMAC-SHA256 of provider and key, 32 hex digits.

    The API key cannot be read back from it, and it is the same in every
    process, so processes on one key meet on the same Redis keys.
    """
    digest = hmac.new(_NAME_KEY, f"{provider}\0{api_key}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def base_url_id(provider: str, base_url: str) -> str:
    """An HMAC-SHA256 of provider and base URL, 32 hex digits: names a URL in Redis without it.

    A base URL carries no credentials (``Session`` refuses user info), but a
    query string might; Redis never sees it in clear.
    """
    digest = hmac.new(_NAME_KEY, f"url\0{provider}\0{base_url}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for reprs and logs).

    Both places redis-py reads one from are masked: the user info
    (``redis://:pw@host``) and the query (``?password=pw``, any parameter
    whose name holds "pass", "secret" or "token").
    """
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            user = parts.username or ""
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        if parts.query:
            query = [
                (name, "***" if _SECRET_PARAM.search(name) else value)
                for name, value in parse_qsl(parts.query, keep_blank_values=True)
            ]
            parts = parts._replace(query=urlencode(query, safe="*"))
        return urlunsplit(parts)
    except ValueError:
        return "<redis url>"


_SECRET_PARAM = re.compile(r"pass|secret|token", re.IGNORECASE)


def make_limiter(
    belief: RateLimit,
    *,
    provider: str,
    api_key: str,
    redis: str | Redis | None,
    timeout: float = DEFAULT_REDIS_TIMEOUT,
) -> Limiter:
    """The session's limiter: a local ``RateLimiter``, or a ``SharedLimiter`` when ``redis`` is set.

    Without ``redis`` the redis package is never imported. With it, raises
    ``ConfigurationError`` if redis-py is not installed (the extra
    ``gptimage-async[redis]``) or the URL is not a ``redis://``, ``rediss://``
    or ``unix://`` URL. Call it inside the running loop (its clock is the limiter's).
    """
    if redis is None:
        return RateLimiter(belief)
    return SharedLimiter(belief, provider=provider, api_key=api_key, redis=redis, timeout=timeout)


def _import_redis() -> Any:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError:
        raise ConfigurationError(
            "sharing a key's budget through Redis needs the redis package: "
            "pip install 'gptimage-async[redis]'"
        ) from None
    return redis_asyncio


def check_redis_option(redis: object) -> None:
    """Validate a ``redis=`` option early (``Session.__init__``); raises ``ConfigurationError``."""
    if redis is None:
        return
    if isinstance(redis, str):
        module = _import_redis()
        try:
            scheme = urlsplit(redis).scheme
        except ValueError as exc:
            raise ConfigurationError(f"the redis URL cannot be read: {exc}") from None
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                "redis must be a redis://, rediss:// or unix:// URL, "
                f"not a {scheme or 'bare'!r} one"
            )
        try:
            # redis-py's own reading, now, so a bad port is no surprise when the session opens.
            module.connection.parse_url(redis)
        except ValueError as exc:
            raise ConfigurationError(
                f"redis URL {redact_url(redis)} cannot be used: {exc}"
            ) from None
        return
    module = _import_redis()
    if not isinstance(redis, module.Redis):
        raise ConfigurationError("redis must be a URL or a redis.asyncio.Redis instance")


class _Redirect(Exception):
    """Tells a waiter to take its slot from the local fallback limiter."""


class SharedLimiter:
    """Paces one key's requests across every process that names the same Redis. Strictly private.

    ``redis`` is a URL (``redis://``, ``rediss://`` for TLS, ``unix://``) or a
    ``redis.asyncio.Redis`` client (used as given and not closed here).
    ``timeout`` bounds every Redis call, in seconds. ``belief`` is the
    starting belief when Redis holds none yet; the fleet's learned belief wins
    otherwise. Times taken and returned are on the event loop's clock.
    """

    __slots__ = (
        "_api_key",
        "_backoff",
        "_belief",
        "_bg",
        "_client",
        "_fallback",
        "_fallback_since",
        "_joined",
        "_keys",
        "_lease",
        "_live",
        "_local",
        "_local_start",
        "_loop",
        "_next_free",
        "_owns_client",
        "_paused_until",
        "_per",
        "_provider",
        "_pubsub",
        "_rate",
        "_script",
        "_seq",
        "_spec_pending",
        "_state",
        "_timeout",
        "_url",
        "_waiters",
        "_wake",
        "_warned",
        "channel",
        "granted",
        "me",
        "rate_limited",
        "redis_errors",
    )

    def __init__(
        self,
        belief: RateLimit,
        *,
        provider: str,
        api_key: str,
        redis: str | Redis,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        check_redis_option(redis)
        if not timeout > 0:
            raise ConfigurationError("the Redis timeout must be a positive number of seconds")
        self._belief = belief
        self._provider = provider
        self._api_key = api_key
        self._url = redact_url(redis) if isinstance(redis, str) else None
        self._client: Any = redis
        self._owns_client = isinstance(redis, str)
        self._timeout = float(timeout)
        name = budget_id(provider, api_key)
        prefix = f"gptimage:{{{name}}}:"
        self._keys = [prefix + part for part in ("budget", "polls", "waiting", "grants", "procs")]
        self.channel = prefix + "events"
        self.me = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._rate = belief.rate
        self._per = float(belief.per)
        self._live = 1
        self._next_free = -math.inf
        self._paused_until = -math.inf
        self._lease: tuple[float, float] | None = None  # (slot, usable until)
        self._spec_pending = False
        self._waiters: list[tuple[int, int, float, asyncio.Future[float]]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._joined: asyncio.Event | None = None  # set while sharing (not in fallback)
        self._bg: list[asyncio.Task[None]] = []
        self._script: AsyncScript | None = None
        self._pubsub: Any = None
        self._local: RateLimiter | None = None
        self._local_start = -math.inf
        self._fallback = False
        self._fallback_since = 0.0
        self._warned = False
        self._backoff: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"
        self.granted = 0
        self.rate_limited = 0
        self.redis_errors = 0

    # -- the Limiter protocol ----------------------------------------------------

    @property
    def rate(self) -> float:
        """The fleet's believed limit, in requests per second (before the safety margin)."""
        if self._fallback and self._local is not None:
            return self._local.rate
        return self._rate

    @property
    def interval(self) -> float:
        """Seconds between two of the key's requests at the current pace, margin included."""
        if self._fallback and self._local is not None:
            return self._local.interval
        return 1.0 / (self._rate * (1.0 - SAFETY_MARGIN))

    @property
    def per(self) -> float:
        """The window length of the belief, in seconds."""
        return self._per

    @property
    def waiting(self) -> int:
        """Requests of this process waiting for a slot (speculative polls not counted)."""
        n = sum(1 for w in self._waiters if w[0] < _PRIORITY_SPECULATIVE and not w[3].done())
        if self._local is not None:
            n += self._local.waiting
        return n

    @property
    def client(self) -> Any:
        """The ``redis.asyncio.Redis`` client this limiter talks through (after ``start()``).

        Closed by ``aclose()`` if the limiter made it from a URL.
        """
        return self._client

    @property
    def timeout(self) -> float:
        """Seconds every Redis call may take."""
        return self._timeout

    @property
    def fallback(self) -> bool:
        """True while Redis is unreachable and this process paces itself locally."""
        return self._fallback

    @property
    def live_processes(self) -> int:
        """Processes on this budget seen alive at the last Redis answer (at least 1)."""
        return self._live

    def next_free(self) -> float:
        """Loop time of the key's next free slot as last seen, ignoring waiters."""
        now = self._now()
        if self._fallback and self._local is not None:
            return max(self._local.next_free(), self._local_start)
        lease = self._valid_lease(now)
        if lease is not None:
            return lease
        free = max(self._next_free, self._paused_until)
        if self._spec_pending:
            # A speculative slot is being asked for: look again in a moment.
            free = max(free, now + GRANT_AHEAD)
        return free

    def next_spare(self) -> float:
        """``next_free()``, but the local fallback limiter's own spare slots while it paces."""
        if self._fallback and self._local is not None:
            return max(self._local.next_spare(), self._local_start)
        return self.next_free()

    def try_acquire(self, *, speculative: bool = False) -> bool:
        """Take a slot only if one is free now and nobody in the fleet waits; never blocks.

        Redis cannot be asked synchronously: the first call asks it in the
        background for a slot free now (a *lease*, usable for half an
        interval) and returns False; a later call takes the lease.
        ``speculative`` matters only to the local fallback limiter (whose
        share of the belief bounds its spare slots too).
        """
        now = self._now()
        if self._fallback and self._local is not None:
            return now >= self._local_start and self._local.try_acquire(speculative=speculative)
        if self._valid_lease(now) is not None and not self.waiting:
            self._lease = None
            self.granted += 1
            return True
        if (
            not self._spec_pending
            and not self.waiting
            and self._state == "open"
            and now >= self._paused_until
        ):
            self._spec_pending = True
            self._enqueue(_PRIORITY_SPECULATIVE, now)
        return False

    def promote_creates(self) -> int:
        """Creates waiting now go ahead of this process's polls; return how many.

        To Redis they are then in the polls' class (see ``_wire_priority``).
        """
        moved = promote_waiting_creates(self._waiters)
        if moved and self._wake is not None:
            self._wake.set()  # the head may have changed
        if self._local is not None:
            moved += self._local.promote_creates()
        return moved

    async def acquire(self, priority: int = PRIORITY_CREATE) -> float:
        """Wait for a slot (polls before creates, across processes); return its loop time."""
        while True:
            if not self._fallback:
                now = self._now()
                if self._valid_lease(now) is not None and not self.waiting:
                    self._lease = None
                    self.granted += 1
                    return now
                try:
                    return await self._enqueue(priority, now)
                except _Redirect:
                    continue
            granted = await self._acquire_local(priority)
            if granted is not None:
                return granted

    def on_rate_limited(self, sent_at: float, retry_after: float | None) -> None:
        """A 429: pause every process on the key (``retry_after`` seconds, else backoff)."""
        self.rate_limited += 1
        now = self._now()
        if self._local is not None:
            self._local.on_rate_limited(sent_at, retry_after)
        if retry_after is not None:
            pause = max(retry_after, self.interval)
        else:
            pause = self.interval + next(self._backoff_seq())
        self._pause_locally(now + pause)
        self._report("limited", str(max(0.0, now - sent_at)), repr(pause), "1")

    def on_server_trouble(self) -> None:
        """A 5xx or failed connection: every process on the key backs off (capped at a window)."""
        now = self._now()
        if self._local is not None:
            self._local.on_server_trouble()
        pause = next(self._backoff_seq())
        self._pause_locally(now + pause)
        self._report("trouble", "0", repr(pause), "0")

    def on_answer(self) -> None:
        """A good answer: this process's backoff sequence restarts."""
        self._backoff = None
        if self._local is not None:
            self._local.on_answer()

    async def start(self) -> None:
        """Connect to Redis, subscribe to the key's events, start the heartbeat.

        Never fails because Redis is unreachable: the process then starts in
        fallback (local pacing) and joins when Redis answers.
        """
        if self._state != "new":
            raise RuntimeError("a SharedLimiter starts once")
        self._state = "open"
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._joined = asyncio.Event()
        self._joined.set()
        module = _import_redis()
        if self._owns_client:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = module.Redis.from_url(
                self._client,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        self._script = self._client.register_script(_SCRIPT)
        loop = self._loop
        self._bg = [
            loop.create_task(self._pump(), name="gptimage-shared-limiter"),
            loop.create_task(self._listen(), name="gptimage-shared-events"),
            loop.create_task(self._heartbeat(), name="gptimage-shared-heartbeat"),
        ]
        # Learn the fleet's belief (and whether Redis is there) before the first request.
        try:
            await self._call("ping", [])
        except Exception as exc:
            self._enter_fallback(exc)

    def close(self) -> None:
        """Cancel every waiter and background task (the session is closing)."""
        self._state = "closed"
        for task in self._bg:
            task.cancel()
        for *_, future in self._waiters:
            future.cancel()
        self._waiters.clear()
        if self._local is not None:
            self._local.close()

    async def aclose(self) -> None:
        """``close()``, then leave the fleet (best effort) and release connections."""
        tasks = self._bg
        self.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._script is not None and not self._fallback:
            with contextlib.suppress(Exception):
                await self._call("leave", [])
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if self._owns_client and self._client is not None and not isinstance(self._client, str):
            with contextlib.suppress(Exception):
                await self._client.aclose()

    # -- internals -----------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _valid_lease(self, now: float) -> float | None:
        lease = self._lease
        if lease is None:
            return None
        if now > lease[1] or now < self._paused_until:
            self._lease = None
            return None
        return lease[0]

    def _backoff_seq(self) -> Any:
        if self._backoff is None:
            self._backoff = backoff_delays(self.interval, cap=self.per)
        return self._backoff

    def _pause_locally(self, until: float) -> None:
        if until > self._paused_until:
            self._paused_until = until
            self._lease = None
            if self._wake is not None:
                self._wake.set()

    def _enqueue(self, priority: int, now: float) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), now, future))
        if self._wake is not None:
            self._wake.set()
        return future

    def _head(self) -> tuple[int, int, float, asyncio.Future[float]] | None:
        waiters = self._waiters
        while waiters and waiters[0][3].done():
            entry = heapq.heappop(waiters)
            if entry[0] == _PRIORITY_SPECULATIVE:
                self._spec_pending = False
        return waiters[0] if waiters else None

    async def _call(self, op: str, args: list[str]) -> list[Any]:
        assert self._script is not None
        belief = self._belief
        argv = [
            self.channel,
            op,
            self.me,
            # If Redis lost the budget (a restart), what this process knows seeds it again.
            repr(self._rate),
            repr(float(belief.per)),
            "1" if belief.ceiling else "0",
            repr(belief.rate),
            *args,
        ]
        async with asyncio.timeout(self._timeout):
            reply = await self._script(keys=self._keys, args=argv)
        self._rate = float(reply[2])
        self._per = float(reply[3])
        remaining = float(reply[4])
        self._live = max(1, int(reply[5]))
        if remaining > 0:
            self._pause_locally(self._now() + remaining)
        return list(reply)

    def _report(self, op: str, *args: str) -> None:
        """Tell the fleet (a pause, a cut) in the background; Redis away: local only."""
        if self._state != "open" or self._fallback or self._loop is None:
            return
        task = self._loop.create_task(self._report_now(op, list(args)))
        self._bg.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._bg.remove(task)

    async def _report_now(self, op: str, args: list[str]) -> None:
        try:
            await self._call(op, args)
        except Exception as exc:
            self._enter_fallback(exc)

    async def _pump(self) -> None:
        """Run ``_serve`` for good: a bug in it must not leave every waiter hanging."""
        while True:
            try:
                await self._serve()
            except Exception as exc:  # pragma: no cover - a bug; waiters go local
                logger.exception("the shared limiter failed; pacing locally")
                self._enter_fallback(exc)
                await asyncio.sleep(PROBE_EVERY)

    async def _serve(self) -> None:
        """Ask Redis for a slot for the best local waiter, one at a time."""
        assert self._wake is not None
        wake = self._wake
        while True:
            head = self._head()
            if head is None or self._fallback:
                wake.clear()
                await wake.wait()
                continue
            now = self._now()
            if now < self._paused_until:
                # The pause is known locally already: no need to ask Redis until it ends.
                await self._sleep_until(self._paused_until)
                continue
            priority, _, queued_at, _ = head
            more_polls = sum(1 for w in self._waiters if w[0] == PRIORITY_POLL and not w[3].done())
            if priority == PRIORITY_POLL:
                more_polls -= 1
            more = sum(1 for w in self._waiters if w[0] < _PRIORITY_SPECULATIVE and not w[3].done())
            if priority < _PRIORITY_SPECULATIVE:
                more -= 1
            try:
                reply = await self._call(
                    "acquire",
                    [
                        str(_wire_priority(priority)),
                        "1" if more_polls > 0 else "0",
                        "1" if more > 0 else "0",
                        repr(max(0.0, now - queued_at)),
                    ],
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._enter_fallback(exc)
                continue
            got = self._now()
            at = got + max(0.0, float(reply[1]))
            if int(reply[0]) != 1:
                self._next_free = at
                if priority == _PRIORITY_SPECULATIVE:
                    self._drop_speculative()
                    continue
                await self._sleep_until(at, interruptible_by_priority=priority)
                continue
            self._next_free = at + self.interval
            if at > got + GRANT_AHEAD:
                await self._sleep_until(at)
                if self._paused_until > at:
                    continue  # a pause began after booking: the slot is given up
            self._hand_out(at)

    def _hand_out(self, at: float) -> None:
        now = self._now()
        head = self._head()
        if head is not None and head[0] < _PRIORITY_SPECULATIVE:
            heapq.heappop(self._waiters)
            self.granted += 1
            head[3].set_result(now)
            return
        if head is not None:  # the speculative ask: its slot becomes a lease
            heapq.heappop(self._waiters)
            head[3].cancel()
            self._spec_pending = False
        self._lease = (at, max(at, now) + 0.5 * self.interval)

    def _drop_speculative(self) -> None:
        head = self._head()
        if head is not None and head[0] == _PRIORITY_SPECULATIVE:
            heapq.heappop(self._waiters)
            head[3].cancel()
        self._spec_pending = False

    async def _sleep_until(
        self, when: float, *, interruptible_by_priority: int | None = None
    ) -> None:
        """Sleep until ``when`` (loop time); a longer pause or a more urgent waiter ends it."""
        assert self._wake is not None
        wake = self._wake
        while True:
            head = self._head()
            if self._paused_until > when and self._now() < self._paused_until:
                return
            if (
                interruptible_by_priority is not None
                and head is not None
                and head[0] < interruptible_by_priority
            ):
                return
            delay = when - self._now()
            if delay <= 0:
                return
            wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                return

    # -- fallback ------------------------------------------------------------------

    def _enter_fallback(self, exc: BaseException) -> None:
        self.redis_errors += 1
        if self._fallback or self._state != "open":
            return
        self._fallback = True
        if self._joined is not None:
            self._joined.clear()
        self._fallback_since = self._now()
        share = max(1, self._live)
        # Exactly this process's share: whole requests over a window stretched to fit.
        requests = max(1, math.floor(self._rate * self._per / share))
        per = requests * share / self._rate
        local = RateLimiter(RateLimit(requests=requests, per=per, ceiling=True))
        if self._local is not None:
            self._local.close()
        self._local = local
        # Processes falling back together must not all send at once.
        self._local_start = self._now() + random.uniform(0.0, local.interval)
        why = type(exc).__name__
        if not self._warned:
            self._warned = True
            logger.warning(
                "Redis at %s did not answer (%s): this process paces key budget %s on its own "
                "at 1/%d of %.3g requests/s until Redis is back",
                self._url or "the given client",
                why,
                self.channel.split("{")[1].split("}")[0][:8],
                share,
                self._rate,
            )
        else:
            logger.info("Redis unreachable again (%s): pacing locally", why)
        for priority, _, _, future in self._waiters:
            if future.done():
                continue
            if priority == _PRIORITY_SPECULATIVE:
                future.cancel()
            else:
                future.set_exception(_Redirect())
        self._waiters.clear()
        self._spec_pending = False
        self._lease = None
        assert self._loop is not None
        task = self._loop.create_task(self._probe(), name="gptimage-shared-probe")
        self._bg.append(task)
        task.add_done_callback(self._forget)

    async def _acquire_local(self, priority: int) -> float | None:
        """A slot from the local limiter, or ``None`` if Redis came back first.

        Waiters go back to the shared timeline when Redis returns: left in the
        local queue they would be paced at a share on top of the full shared rate.
        """
        local = self._local
        joined = self._joined
        assert local is not None
        assert joined is not None
        delay = self._local_start - self._now()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await joined.wait()
            if joined.is_set():
                return None
        if joined.is_set():
            return None
        task = asyncio.ensure_future(local.acquire(priority))
        rejoin = asyncio.ensure_future(joined.wait())
        try:
            await asyncio.wait({task, rejoin}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rejoin.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        return None

    async def _probe(self) -> None:
        every = min(PROBE_EVERY, max(0.01, PROBE_WINDOW_SHARE * self._per))
        while self._state == "open" and self._fallback:
            await asyncio.sleep(every)
            try:
                await self._call("ping", [])
            except asyncio.CancelledError:
                raise
            except Exception:
                self.redis_errors += 1
                continue
            self._rejoin()

    def _rejoin(self) -> None:
        # The shared timeline grants no burst (CATCH_UP); local waiters finish locally.
        self._fallback = False
        if self._joined is not None:
            self._joined.set()
        logger.info(
            "Redis is back after %.1fs: sharing the key's budget again",
            self._now() - self._fallback_since,
        )
        if self._wake is not None:
            self._wake.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            if self._fallback:
                continue
            try:
                await self._call("ping", [])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._enter_fallback(exc)

    async def _listen(self) -> None:
        """Receive pauses and belief changes pushed by other processes."""
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                self._pubsub = pubsub
                async with asyncio.timeout(self._timeout):
                    await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_event(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception:
                self.redis_errors += 1
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()
                    self._pubsub = None
                await asyncio.sleep(min(PROBE_EVERY, max(0.01, PROBE_WINDOW_SHARE * self._per)))

    def _on_event(self, data: object) -> None:
        if isinstance(data, bytes):
            data = data.decode("ascii", "replace")
        if not isinstance(data, str) or " " not in data:
            return
        kind, _, value = data.partition(" ")
        try:
            number = float(value)
        except ValueError:
            return
        if kind == "p" and number > 0:
            self._pause_locally(self._now() + number)
        elif kind == "r" and number > 0:
            self._rate = number

    def __repr__(self) -> str:
        mode = "fallback" if self._fallback else "shared"
        return (
            f"<SharedLimiter {self._rate:.3g}/s {mode} redis={self._url or '<client>'} "
            f"live={self._live} waiting={self.waiting} granted={self.granted} "
            f"rate_limited={self.rate_limited}>"
        )
