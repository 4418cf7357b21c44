"""What an error message may echo of a value the user gave: never something like an API key.

A key passed in the wrong place (``Lane(key, "runbase")``, ``base_url=key``,
``--lane KEY``, a pool file's table named after it) must not come back in an
exception, a log line or a usage error: those end up in CI logs and bug
reports. ``shown`` gives the value's ``repr``, or a placeholder for anything
that looks like a key.
"""

from __future__ import annotations

import re

__all__ = ["KEY_PREFIXES", "NOT_SHOWN", "has_key_prefix", "looks_like_key", "redact", "shown"]

#: How the two providers' keys begin (Runbase ``sk-``, API in One ``aio_``; PROVIDERS.md).
KEY_PREFIXES: tuple[str, ...] = ("sk-", "aio_")
#: A bare token this long (letters, digits, ``-``, ``_``, ``.``) may be a key of another form.
_TOKEN_LENGTH = 24
#: What stands in a message for a value that looks like an API key.
NOT_SHOWN = "(a value that looks like an API key, not shown)"
#: A word of a message: a run of characters between spaces, quotes and brackets.
_WORD = re.compile(r"[^\s'\"()\[\]{}<>,;`]+")
#: A key's prefix where a key would begin: at a word's start, after a
#: character that is not a letter or digit, or joined to a short option (``-ksk-...``);
#: at least 6 more key characters follow (``sk-`` alone, in a hint, is no key).
_PREFIXED = re.compile(
    r"(?:^-[A-Za-z]|^|[^A-Za-z0-9])(?:" + "|".join(map(re.escape, KEY_PREFIXES)) + r")[\w.\-]{6,}"
)


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


def redact(text: str, *, bare: bool = False) -> str:
    """``text`` with each word holding something like an API key replaced by ``NOT_SHOWN``.

    A word holds a key when a key's prefix (``KEY_PREFIXES``) begins a key
    inside it (``--api-kee=sk-...``, ``/proc/sk-...``, ``-ksk-...``). With
    ``bare``, also when a part of it (split at ``=``, ``:`` and ``/``) is a
    long token of letters *and* digits (``_random_token``): what argparse
    echoes may be a key of any form, while a library message names URLs and
    run ids that may be long and random too, so there only prefixed keys go.
    """

    def one(word: re.Match[str]) -> str:
        text = word.group(0)
        if _PREFIXED.search(text):
            return NOT_SHOWN
        if bare and any(_random_token(part.lstrip("-")) for part in re.split(r"[=:/]", text)):
            return NOT_SHOWN
        return text

    return _WORD.sub(one, text)


def _random_token(text: str) -> bool:
    # A key of an unknown form: long, and mixing letters and digits as random
    # tokens do (a file name such as ``prompts_for_the_spring_catalogue.txt`` does not).
    bare = text.replace("-", "").replace("_", "").replace(".", "")
    digits = sum(c.isdigit() for c in bare)
    return len(text) >= _TOKEN_LENGTH and bare.isalnum() and digits >= 4 and len(bare) - digits >= 4


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, or a placeholder if it looks like a key."""
    if looks_like_key(value):
        return NOT_SHOWN
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
