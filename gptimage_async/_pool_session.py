"""A session over the lanes of a pool file (TOML; README's pool file).

Above the session: it reads the file (``_pool``) and opens a ``Session`` on
its lanes, so nothing below ``_session`` has to import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ._exceptions import ConfigurationError
from ._pool import load_pool_file
from ._session import Session

__all__ = ["session_from_pool_file"]


def session_from_pool_file(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Session:
    """A ``Session`` over the lanes of the pool file at ``path`` (TOML; README's pool file).

    The file names, per lane, the provider, the environment variable that
    holds its key (read from ``environ``, default ``os.environ``), base URL,
    prices and rate limit, and the pool's ``routing`` and ``spend_cap``;
    ``options`` are any other ``Session`` keywords (``run_timeout``,
    ``state_file`` ...), but not ``lanes``, ``routing`` nor ``spend_cap``,
    which the file gives. Raises ``ConfigurationError`` naming the file, the
    lane and the field, before anything is sent; never shows a key.
    """
    given = sorted({"lanes", "routing", "spend_cap", "provider"} & set(options))
    if given:
        raise ConfigurationError(f"{', '.join(given)}: the pool file gives these, not options")
    pool = load_pool_file(path, environ=environ)
    return Session(lanes=pool.lanes, routing=pool.routing, spend_cap=pool.spend_cap, **options)
