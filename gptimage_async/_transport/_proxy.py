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
import re
import urllib.request
from urllib.parse import urlsplit

from yarl import URL

from .._exceptions import ConfigurationError
from ._protocol import display_url, origin

__all__ = ["check_env_proxy", "check_proxy", "env_proxy", "shown_proxy"]


#: A proxy's host: a name or an IPv4 address (an IPv6 one is in brackets: ``hostname`` has ":").
_HOST = re.compile(r"[A-Za-z0-9._~-]+|[0-9A-Fa-f:.%]+")


def check_proxy(proxy: str) -> str:
    """``proxy`` if it is an http(s) URL with a host; else ``ConfigurationError``.

    Only ``scheme://[user:password@]host[:port][/]``: a path, query or fragment
    (``http//host`` read as host ``http``, a PAC file's URL) or a host with
    spaces is not a proxy. The message never shows the URL's user or password.
    """
    try:
        parts = urlsplit(proxy)
        host = parts.hostname or ""
        ok = (
            parts.scheme in ("http", "https")
            and _HOST.fullmatch(host) is not None
            and parts.path in ("", "/")
            and not parts.query
            and not parts.fragment
        )
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        # The option's own value: every message's redaction hides a key-shaped one.
        shown = display_url(proxy) if isinstance(proxy, str) else type(proxy).__name__
        raise ConfigurationError(f"proxy must be an http(s) URL with a host, not {shown!r}")
    return proxy


def shown_proxy(url: str) -> str:
    """``scheme://host[:port]`` of a proxy URL for a message: never its credentials or path
    (a malformed URL may hold a password there); ``<an unreadable URL>`` without both."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<an unreadable URL>"
    if not parts.scheme or _HOST.fullmatch(host) is None:
        return "<an unreadable URL>"
    if ":" in host:
        host = f"[{host}]"
    rest = "/..." if parts.path not in ("", "/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{port}{rest}"


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
            f"the proxy set in {_variable(key, value)} ({shown_proxy(chosen)}) is not one this "
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
