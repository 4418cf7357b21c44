"""The ``redis=`` option: its checks, its redaction for logs, and the client made from a URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .._exceptions import ConfigurationError

__all__ = ["DEFAULT_REDIS_TIMEOUT", "check_redis_option", "connect", "import_redis", "redact_url"]

#: The scheme of a URL naming Redis Sentinels (and Sentinel's default port).
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
#: Seconds every Redis call may take before this process paces itself locally.
DEFAULT_REDIS_TIMEOUT = 0.25


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for reprs and logs).

    Both places redis-py reads one from are masked: the user info
    (``redis://:pw@host``, ``redis+sentinel://:pw@h1,h2/...``) and the query
    (``?password=pw``, any parameter whose name holds "pass", "secret" or "token").
    """
    try:
        parts = urlsplit(url)
        userinfo, at, hosts = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hosts}")
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


def import_redis() -> Any:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError:
        raise ConfigurationError(
            "sharing a key's budget through Redis needs the redis package: "
            "pip install 'gptimage-async[redis]'"
        ) from None
    return redis_asyncio


#: Redis's answers that no retry will change: a wrong password or user, a command the
#: user may not run, a database number the server does not have (redis-py raises them
#: on connecting). "READONLY" or "LOADING" during a failover pass: those stay Redis away.
_MISCONFIGURED = ("WRONGPASS", "NOAUTH", "NOPERM", "DB index", "invalid password")


def misconfigured(exc: BaseException, url: str | None) -> str | None:
    """The message when ``exc`` (from Redis at a session's start) is a setting to fix.

    ``None`` when Redis may answer later (unreachable, a timeout, a failover): the
    process then paces on its own and rejoins. ``url`` is already redacted; the
    message names the error's type and Redis's words, which hold no password.
    """
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        name = type(error).__name__
        text = str(error)
        if name in ("AuthenticationError", "AuthenticationWrongNumberOfArgsError",
                    "AuthorizationError", "NoPermissionError") or any(
            mark in text for mark in _MISCONFIGURED
        ):  # fmt: skip
            why = f"{name}: {text[:200]}" if text else name
            return (
                f"Redis at {url or 'the client given'} refused this session's settings "
                f"({why}): check the password, user and database number of the redis= URL"
            )
    return None


def check_redis_option(redis: object) -> None:
    """Validate a ``redis=`` option early (``Session.__init__``); raises ``ConfigurationError``."""
    if redis is None:
        return
    if isinstance(redis, str):
        module = import_redis()
        try:
            scheme = urlsplit(redis).scheme
        except ValueError as exc:
            raise ConfigurationError(f"the redis URL cannot be read: {exc}") from None
        if scheme == SENTINEL_SCHEME:
            parse_sentinel_url(redis)
            return
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"redis must be a redis://, rediss://, unix:// or {SENTINEL_SCHEME}:// URL, "
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
    module = import_redis()
    if not isinstance(redis, module.Redis):
        raise ConfigurationError("redis must be a URL or a redis.asyncio.Redis instance")


def with_host(url: str, host: str, port: int) -> str:
    """``url`` with its host and port replaced (user info, database and query kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{port}"))


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A ``redis+sentinel://`` URL read: where the Sentinels are, and what to ask them for."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``.

    The port defaults to 26379 (Sentinel's); the password is the primary's.
    Raises ``ConfigurationError`` naming what is missing (never the password).
    """
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, str(SENTINEL_PORT)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"redis URL {redact_url(url)}: {item!r} is no host:port")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigurationError(
            f"redis URL {redact_url(url)} must name the Sentinel service: "
            f"{SENTINEL_SCHEME}://host:26379/<service>[/<db>]"
        )
    user, colon, password = userinfo.partition(":") if at else ("", "", "")
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(user) or None,
        password=unquote(password) if colon else None,
    )


def connect(url: str, timeout: float) -> tuple[Any, list[Any]]:
    """A ``redis.asyncio.Redis`` for ``url`` that fails fast: ``timeout`` seconds, no retries.

    Returns the client and the other clients to close with it (a Sentinel's).
    The limiter has its own answer to a slow Redis (local fallback); redis-py
    retrying underneath would only stretch every call past ``timeout``. With a
    ``redis+sentinel://`` URL the client asks the Sentinels for the primary on
    every new connection, and a connection that finds its primary demoted (a
    failover) is dropped, so the next call reaches the new primary.
    """
    module = import_redis()
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    fast = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        return module.Redis.from_url(url, **fast), []
    from redis.asyncio.sentinel import Sentinel

    target = parse_sentinel_url(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        target.sentinels,
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        username=target.username,
        password=target.password,
        db=target.db,
        **fast,
    )
    return sentinel.master_for(target.service), list(sentinel.sentinels)
