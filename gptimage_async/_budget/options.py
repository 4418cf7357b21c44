"""The ``redis=`` option: its checks, its redaction for logs, and the client made from a URL."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._exceptions import ConfigurationError

__all__ = ["DEFAULT_REDIS_TIMEOUT", "check_redis_option", "connect", "import_redis", "redact_url"]

#: Seconds every Redis call may take before this process paces itself locally.
DEFAULT_REDIS_TIMEOUT = 0.25


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


def import_redis() -> Any:
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
        module = import_redis()
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
    module = import_redis()
    if not isinstance(redis, module.Redis):
        raise ConfigurationError("redis must be a URL or a redis.asyncio.Redis instance")


def connect(url: str, timeout: float) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` that fails fast: ``timeout`` seconds, no retries.

    The limiter has its own answer to a slow Redis (local fallback); redis-py
    retrying underneath would only stretch every call past ``timeout``.
    """
    module = import_redis()
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return module.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
