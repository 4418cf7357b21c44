"""Choosing a proxy: an explicit URL, else the environment's, per target origin.

As requests and httpx: ``HTTPS_PROXY`` / ``HTTP_PROXY`` by the target's
scheme, else ``ALL_PROXY``; ``NO_PROXY`` wins. ``~/.netrc`` is never read.
A proxy set in the environment that this client cannot use (``socks5://``, no
host, a bad port) is refused with ``ConfigurationError`` naming the variable,
never bypassed: the user set it, maybe so that nothing leaves the network
directly.
"""

from __future__ import annotations

import os
import urllib.request
from urllib.parse import urlsplit

from yarl import URL

from .._exceptions import ConfigurationError
from ._protocol import display_url, origin

__all__ = ["check_env_proxy", "check_proxy", "env_proxy"]


def check_proxy(proxy: str) -> str:
    """``proxy`` if it is an http(s) URL with a host; else ``ConfigurationError``."""
    try:
        parts = urlsplit(proxy)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        shown = display_url(proxy) if isinstance(proxy, str) else type(proxy).__name__
        raise ConfigurationError(f"proxy must be an http(s) URL with a host, not {shown!r}")
    return proxy


def env_proxy(found: dict[str, str], scheme: str, host: str) -> URL | None:
    """The proxy the environment sets for ``scheme://host``, or ``None`` (direct).

    ``found`` is ``urllib.request.getproxies()``. Raises ``ConfigurationError``
    naming the variable (its value without credentials) when that proxy is not
    an http(s) URL with a host: a proxy the user set is never silently bypassed.
    """
    # As requests and httpx: the scheme's own variable, else ALL_PROXY; NO_PROXY wins.
    key = scheme if found.get(scheme) else "all"
    value = found.get(key)
    if not value or urllib.request.proxy_bypass(host):
        return None
    # "HTTPS_PROXY=proxy:3128" means an http proxy
    chosen = value if "://" in value else "http://" + value
    try:
        return URL(check_proxy(chosen))
    except ConfigurationError:
        raise ConfigurationError(
            f"the proxy set in {_variable(key, value)} ({display_url(chosen)}) is not one this "
            "client can use (an http(s) URL with a host): fix or unset it, or exempt "
            f"{host or 'the host'} with NO_PROXY; it is not bypassed"
        ) from None


def _variable(key: str, value: str) -> str:
    """Which variable set ``value`` for ``key`` (``https``): urllib prefers the lower-case one."""
    for name in (f"{key}_proxy", f"{key.upper()}_PROXY"):
        if os.environ.get(name) == value:
            return name
    return "the system's proxy settings"


def check_env_proxy(url: str) -> None:
    """Raise ``ConfigurationError`` if the environment sets, for ``url``, a proxy we cannot use.

    What ``HTTPTransport`` would find when it opens (``env_proxy``), checked
    when a session is made, so a bad ``HTTPS_PROXY`` is a usage error before
    anything opens.
    """
    scheme, host, _port = origin(url)
    env_proxy(urllib.request.getproxies(), scheme, host)
