"""What an error message may echo of a value the user gave: never something like an API key.

A key passed in the wrong place (``Lane(key, "runbase")``, ``base_url=key``,
``--lane KEY``, a pool file's table named after it) must not come back in an
exception, a log line or a usage error: those end up in CI logs and bug
reports. ``shown`` gives the value's ``repr``, or a placeholder for anything
that looks like a key.
"""

from __future__ import annotations

import re

__all__ = ["KEY_PREFIXES", "has_key_prefix", "looks_like_key", "shown"]

#: How the two providers' keys begin (Runbase ``sk-``, API in One ``aio_``; PROVIDERS.md).
KEY_PREFIXES: tuple[str, ...] = ("sk-", "aio_")
#: A bare token this long (letters, digits, ``-``, ``_``, ``.``) may be a key of another form.
_TOKEN_LENGTH = 24


def has_key_prefix(value: object) -> bool:
    """Whether ``value`` is a str that begins as the providers' keys do (``KEY_PREFIXES``).

    Case-sensitive: keys begin in lower case, environment variable names
    (``AIO_KEY``) in upper case.
    """
    return isinstance(value, str) and value.strip().startswith(KEY_PREFIXES)


def looks_like_key(value: object) -> bool:
    """Whether ``value`` could be an API key: a str with a key's prefix, or a long bare token."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    # A key anywhere in it (``runbase:sk-...``, ``Bearer sk-...``) counts.
    if any(has_key_prefix(part) for part in re.split(r"[\s:=/,;'\"]+", text)):
        return True
    bare = text.replace("-", "").replace("_", "").replace(".", "")
    return len(text) >= _TOKEN_LENGTH and bare.isalnum()


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, or a placeholder if it looks like a key."""
    if looks_like_key(value):
        return "(a value that looks like an API key, not shown)"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
