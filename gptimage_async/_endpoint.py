"""A provider endpoint's two checked inputs: its API key and its base URL.

Used by ``SessionConfig`` and by ``Lane``, so a lane accepts exactly what
``Session(...)`` does, with neither importing the other.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urljoin, urlsplit

from ._exceptions import ConfigurationError
from ._providers import Provider
from ._secrets import looks_like_key, shown

__all__ = ["absolute_url", "check_base_url", "check_key", "resolve_key"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def check_key(key: object, adapter: Provider) -> str:
    """``key`` stripped; ``ConfigurationError`` if missing, not a str, or with whitespace inside."""
    if key is not None and not isinstance(key, str):
        raise ConfigurationError(f"api_key must be a str or None, not {type(key).__name__}")
    if key is None or not key.strip():
        raise ConfigurationError(
            f"no API key for {adapter.name}: pass api_key=... or set {adapter.env_var}"
        )
    if any(c.isspace() or ord(c) < 32 for c in key.strip()):
        raise ConfigurationError("the API key contains whitespace or control characters")
    return key.strip()


def resolve_key(key: object, adapter: Provider) -> str:
    """``key``, or the provider's environment variable (read now) when it is ``None``, checked.

    Raises ``ConfigurationError`` naming the variable when there is neither.
    """
    return check_key(os.environ.get(adapter.env_var) if key is None else key, adapter)


def check_base_url(url: object) -> str:
    """``url`` without its trailing ``/``; ``ConfigurationError`` unless an http(s) API root.

    No credentials, query or fragment; plain http only for loopback hosts
    (the simulator).
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a str or None, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError(f"base_url is not a URL: {shown(url)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, not {shown(url)}")
    if parts.username or parts.password:
        raise ConfigurationError("base_url must not carry credentials; use api_key")
    if looks_like_key(parts.path):  # it would be in every request's URL, log line and repr
        raise ConfigurationError("base_url's path holds what looks like an API key; use api_key")
    if parts.query or parts.fragment or url.rstrip("/").endswith(("?", "#")):
        # Paths are appended to base_url, so a query or fragment would swallow them.
        raise ConfigurationError(
            "base_url must not carry a query string or fragment ('?' or '#'): "
            "give the endpoint's base, e.g. https://host/v1"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            "plain http is accepted only for loopback hosts (the simulator), "
            f"not {parts.hostname!r}"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def absolute_url(url: str, base_url: str | None) -> str:
    """``url`` itself if absolute (or a ``data:`` URL), else resolved against the API root."""
    if not isinstance(url, str) or urlsplit(url).scheme or base_url is None:
        return url
    # "files/a.png" is under the API root, "/files/a.png" under its host.
    return urljoin(base_url.rstrip("/") + "/", url)
