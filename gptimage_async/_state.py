"""What a session learned, kept for the next one: the rate belief and run durations.

A session loads a ``LearnedState`` when it opens and saves one when it
closes, through a ``StateStore``. ``FileStateStore`` keeps it in a small JSON
file (``Session(state_file=...)``; the command line keeps one per provider and
base URL in the user's cache directory). ``RedisStateStore`` keeps it in the
Redis a session shares its budget through (``Session(redis=...)``), so every
process on the key, and the next job, starts from what the fleet learned; the
file, if one is given too, is its fallback while Redis does not answer.

A state that is missing, unreadable, of another format version, for another
provider or base URL, or older than ``MAX_AGE`` is ignored with a DEBUG line:
the session then learns from scratch, as it always could. Never an error.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgspec

from ._budget import DEFAULT_REDIS_TIMEOUT, AdaptiveRate, base_url_id
from ._durations import DurationModel
from ._models import RateLimit

__all__ = [
    "MAX_AGE",
    "MAX_OBSERVATIONS",
    "VERSION",
    "FileStateStore",
    "LearnedRate",
    "LearnedState",
    "RedisStateStore",
    "StateStore",
    "apply_state",
    "capture_state",
    "decode_state",
    "encode_state",
]

logger = logging.getLogger("gptimage_async")

#: Format version; a file of any other version is ignored (and overwritten on close).
VERSION = 1
#: Seconds after which a saved state is too old to trust (7 days): limits and
#: run times change, and a week-old belief is no better than a fresh start.
MAX_AGE = 7 * 24 * 3600.0
#: Finished runs kept: enough for the duration model to be trusted at once
#: (it needs 4), few enough that the file stays a few kilobytes.
MAX_OBSERVATIONS = 128
#: A state file larger than this is not a state file (bytes).
MAX_BYTES = 1 << 20


class LearnedRate(msgspec.Struct, frozen=True, kw_only=True):
    """The limiter's belief at the end of a session. Strictly private.

    ``requests`` and ``per`` are the stated belief it started from: a session
    started from another one ignores this (the user said something new).
    """

    requests: int
    per: float
    """Seconds."""
    rate: float
    """The believed limit, requests per second."""
    bad: float | None = None
    """The rate (requests per second) that last drew a 429, if any did."""
    confirmed: bool = False
    """Whether a saturated window at ``rate`` passed without a 429."""
    recent: list[float] = []
    """Ages (seconds before ``saved_at``) of the requests sent in the last window.

    A server counting a sliding window still holds them when the next session
    opens right away: that session paces as if it had sent them itself.
    """


class LearnedState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one session hands to the next. Strictly private."""

    version: int = VERSION
    provider: str
    base_url: str
    saved_at: float
    """Unix time, seconds."""
    rate: LearnedRate | None = None
    durations: list[tuple[float, float]] = []
    """Finished runs as ``(lo, hi)`` seconds of age: done after ``lo``, by ``hi``."""


_decoder = msgspec.json.Decoder(LearnedState)


def encode_state(state: LearnedState) -> bytes:
    """The state as JSON bytes."""
    return msgspec.json.encode(state)


def decode_state(
    data: bytes,
    *,
    provider: str,
    base_url: str,
    now: float | None = None,
    source: str = "state",
) -> LearnedState | None:
    """``data`` decoded, or ``None`` (with a DEBUG line) if it is not a usable state.

    ``now`` is Unix time in seconds (default: ``time.time()``).
    """
    now = time.time() if now is None else now
    try:
        state = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _ignored(source, f"unreadable ({exc})")
    if state.version != VERSION:
        return _ignored(source, f"format version {state.version}, not {VERSION}")
    if state.provider != provider or state.base_url != base_url:
        return _ignored(source, f"saved for {state.provider} at {state.base_url}")
    age = now - state.saved_at
    if not math.isfinite(age) or not 0.0 <= age <= MAX_AGE:
        return _ignored(source, f"saved {age:.0f} s ago, not within {MAX_AGE:.0f} s")
    rate = state.rate
    if rate is not None and not (
        rate.requests >= 1 and rate.per > 0 and math.isfinite(rate.rate) and rate.rate > 0
    ):
        return _ignored(source, "its rate belief is not a positive number")
    return state


def _ignored(source: str, why: str) -> LearnedState | None:
    """Log why a state is not used; the caller returns this (always ``None``)."""
    logger.debug("ignoring the learned state in %s: %s", source, why)
    return None


def capture_state(
    *,
    provider: str,
    base_url: str,
    belief: RateLimit,
    adaptive: AdaptiveRate | None,
    model: DurationModel,
    clock_now: float = 0.0,
    now: float | None = None,
) -> LearnedState:
    """What a closing session learned.

    ``clock_now`` is the limiter's clock (seconds); ``now`` is Unix time in
    seconds (default ``time.time()``).
    """
    rate = None
    if adaptive is not None:
        current, bad, confirmed = adaptive.snapshot()
        rate = LearnedRate(
            requests=belief.requests,
            per=belief.per,
            rate=current,
            bad=bad,
            confirmed=confirmed,
            recent=adaptive.recent_sends(clock_now),
        )
    return LearnedState(
        provider=provider,
        base_url=base_url,
        saved_at=time.time() if now is None else now,
        rate=rate,
        durations=model.observations(MAX_OBSERVATIONS),
    )


def apply_state(
    state: LearnedState,
    *,
    belief: RateLimit,
    adaptive: AdaptiveRate | None,
    model: DurationModel,
    clock_now: float,
    now: float | None = None,
    run_timeout: float = math.inf,
) -> None:
    """Start a session from ``state``: its durations always, its rate if the belief is the same.

    ``clock_now`` is the limiter's clock (seconds); ``now`` is Unix time in
    seconds (default ``time.time()``). A rate learned from another stated
    belief is ignored: the user has said something new. The requests sent in
    the last window are always noted: the server still counts them.
    Durations longer than this session's ``run_timeout`` (seconds) are left
    out: such runs would time out here anyway, and a model that believed in
    them would plan every poll past the deadline.
    """
    model.restore((lo, hi) for lo, hi in state.durations if hi <= run_timeout)
    rate = state.rate
    if adaptive is None or rate is None:
        return
    elapsed = (time.time() if now is None else now) - state.saved_at
    adaptive.note_sends([age + elapsed for age in rate.recent], clock_now)
    if (rate.requests, rate.per) != (belief.requests, belief.per):
        logger.debug(
            "not using the learned rate: it was learned from RateLimit(%d, %g), not (%d, %g)",
            rate.requests,
            rate.per,
            belief.requests,
            belief.per,
        )
        return
    adaptive.restore(rate.rate, rate.bad, confirmed=rate.confirmed, now=clock_now)


class StateStore(Protocol):
    """Where a session's learned state lives between sessions. Strictly private."""

    async def load(self, provider: str, base_url: str) -> LearnedState | None:
        """The state saved for ``provider`` at ``base_url``; ``None`` if there is none to trust.

        Never raises for a missing, stale or corrupt state.
        """
        ...

    async def save(self, state: LearnedState) -> None:
        """Keep ``state`` for the next session (replacing what was there)."""
        ...


class FileStateStore:
    """A learned state in one small JSON file, replaced atomically on save.

    >>> store = FileStateStore("~/.cache/gptimage-async/runbase.json")  # doctest: +SKIP
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    async def load(self, provider: str, base_url: str) -> LearnedState | None:
        """Read and check the file (missing, stale or corrupt: ``None``, DEBUG logged)."""
        try:
            data = await anyio.to_thread.run_sync(self._read)
        except FileNotFoundError:
            logger.debug("no learned state in %s yet", self.path)
            return None
        except (OSError, ValueError) as exc:
            return _ignored(str(self.path), f"unreadable ({exc})")
        return decode_state(data, provider=provider, base_url=base_url, source=str(self.path))

    def _read(self) -> bytes:
        with self.path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        return data

    async def save(self, state: LearnedState) -> None:
        """Write the file atomically (a temporary file, then a rename); creates its directory."""
        await anyio.to_thread.run_sync(self._write, encode_state(state))

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A reader (another process opening its session) sees the old file or
        # the new one, never half of one.
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        return f"<FileStateStore {str(self.path)!r}>"


class RedisStateStore:
    """A learned state in Redis, next to the key's shared budget; a file as fallback.

    ``client`` is a ``redis.asyncio.Redis`` (the ``SharedLimiter``'s: no second
    connection), ``budget`` the budget's name (``budget_id``: an HMAC of
    provider and API key). The state lives at
    ``gptimage:{<budget>}:learned:<url>``, where ``<url>`` is an HMAC of
    provider and base URL (``base_url_id``): neither the API key nor the base
    URL is ever written to Redis in clear (the stored state names its base URL
    by that HMAC too). It is the file's versioned JSON, kept ``MAX_AGE``
    seconds after the last save; its age is measured on Redis's clock
    (``TIME``), so the hosts' clocks never matter.

    Every call takes at most ``timeout`` seconds (default
    ``DEFAULT_REDIS_TIMEOUT``, the shared limiter's) and never raises because
    of Redis:

    * ``load``: Redis's state if it holds a usable one; otherwise (Redis away,
      nothing there, or stale, foreign or corrupt: a DEBUG line) the
      ``fallback`` store's, if any.
    * ``save``: to Redis, and to ``fallback`` too, so the file is fresh when
      Redis is away next time. Redis away: a WARNING if no fallback kept the
      state, else a DEBUG line. Several processes closing on one key: the last
      to save wins (each holds the fleet's state it loaded plus what it saw
      since, so the survivor is a fair sample of recent runs). A session whose
      load found Redis away saves only where Redis holds nothing (``SET NX``):
      its few runs must not replace the fleet's state it never saw.
    """

    __slots__ = ("_blind", "budget", "client", "fallback", "timeout")

    def __init__(
        self,
        client: Any,
        *,
        budget: str,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
        fallback: StateStore | None = None,
    ) -> None:
        self.client = client
        self.budget = budget
        self.timeout = float(timeout)
        self.fallback = fallback
        self._blind = False  # the load could not read Redis

    def key(self, provider: str, base_url: str) -> str:
        """The Redis key of the state for ``provider`` at ``base_url``."""
        return f"gptimage:{{{self.budget}}}:learned:{base_url_id(provider, base_url)[:16]}"

    async def load(self, provider: str, base_url: str) -> LearnedState | None:
        """The state in Redis; else (away, missing, unusable) the fallback's; else ``None``."""
        state = await self._load_redis(provider, base_url)
        if state is None and self.fallback is not None:
            return await self.fallback.load(provider, base_url)
        return state

    async def _load_redis(self, provider: str, base_url: str) -> LearnedState | None:
        key = self.key(provider, base_url)
        try:
            async with asyncio.timeout(self.timeout):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.time()
                    pipe.get(key)
                    (seconds, micros), data = await pipe.execute()
        except Exception as exc:
            logger.debug("no learned state from Redis: it did not answer (%s)", _why(exc))
            self._blind = True
            return None
        if data is None:
            logger.debug("no learned state in Redis at %s yet", key)
            return None
        if isinstance(data, str):  # a client made with decode_responses=True
            data = data.encode()
        source = f"Redis at {key}"
        if len(data) > MAX_BYTES:
            return _ignored(source, f"larger than {MAX_BYTES} bytes")
        redis_now = float(seconds) + float(micros) * 1e-6
        tag = _url_tag(provider, base_url)
        state = decode_state(data, provider=provider, base_url=tag, now=redis_now, source=source)
        if state is None:
            return None
        # Back to this host's clock and the real URL, as a file's state is.
        return msgspec.structs.replace(
            state, base_url=base_url, saved_at=time.time() - (redis_now - state.saved_at)
        )

    async def save(self, state: LearnedState) -> None:
        """Save to Redis (never raises because of it), then to the fallback (which may raise)."""
        kept = await self._save_redis(state)
        if self.fallback is not None:
            await self.fallback.save(state)
        if kept is not None:
            log = logger.debug if self.fallback is not None else logger.warning
            log("could not save the learned state to Redis: %s", kept)

    async def _save_redis(self, state: LearnedState) -> str | None:
        """``None`` once saved, else why not."""
        key = self.key(state.provider, state.base_url)
        try:
            async with asyncio.timeout(self.timeout):
                seconds, micros = await self.client.time()
                stored = msgspec.structs.replace(
                    state,
                    base_url=_url_tag(state.provider, state.base_url),
                    saved_at=float(seconds) + float(micros) * 1e-6,
                )
                await self.client.set(
                    key, encode_state(stored), px=int(MAX_AGE * 1000), nx=self._blind
                )
        except Exception as exc:
            return f"it did not answer ({_why(exc)})"
        return None

    def __repr__(self) -> str:
        return f"<RedisStateStore budget {self.budget[:8]} fallback={self.fallback!r}>"


def _url_tag(provider: str, base_url: str) -> str:
    """What a state kept in Redis says for its base URL (never the URL itself)."""
    return f"hmac:{base_url_id(provider, base_url)}"


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
