"""Choosing a proxy: an explicit URL, else the environment's, per target origin.

As requests and httpx: ``HTTPS_PROXY`` / ``HTTP_PROXY`` by the target's
scheme, else ``ALL_PROXY``; ``NO_PROXY`` wins. ``~/.netrc`` is never read.
"""

from __future__ import annotations

import logging
import urllib.request
from urllib.parse import urlsplit

from yarl import URL

from .._exceptions import ConfigurationError
from ._protocol import display_url

__all__ = ["check_proxy", "env_proxy"]

logger = logging.getLogger("gptimage_async")


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
    # As requests and httpx: the scheme's own variable, else ALL_PROXY; NO_PROXY wins.
    chosen = found.get(scheme) or found.get("all")
    if not chosen or urllib.request.proxy_bypass(host):
        return None
    if "://" not in chosen:
        chosen = "http://" + chosen  # "HTTPS_PROXY=proxy:3128" means an http proxy
    try:
        return URL(check_proxy(chosen))
    except ConfigurationError:
        logger.warning("ignoring the proxy set in the environment: %s", display_url(chosen))
        return None
