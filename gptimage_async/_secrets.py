"""What a message may echo of a value the user gave: never something like an API key.

A key passed in the wrong place (``Lane(key, "runbase")``, ``base_url=key``,
``--lane KEY``, a pool file's ``key_env = "KEY"``) must not come back in an
exception, a log line or a usage error: those end up in CI logs and bug
reports. Two rules say what looks like a key (``looks_like_key``):

* a **prefixed key**: the providers' prefixes (``KEY_PREFIXES``) followed by
  at least 6 key characters, anywhere in a value;
* a **bare token** (``bare_token``): a key of no known prefix, as random
  tokens look: long, mixing letters and digits, not hexadecimal.

``redact`` applies both to a whole message, word by word, and shows a URL
without its user info and query string; ``GPTImageError`` runs it on every
message, so a check that repeats the value it refuses (``not {value!r}``)
never repeats a key. ``shown`` is a value's ``repr`` for a message, or
``NOT_SHOWN``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = [
    "KEY_PREFIXES",
    "NOT_SHOWN",
    "bare_token",
    "has_key_prefix",
    "looks_like_key",
    "redact",
    "shown",
]

#: How the two providers' keys begin (Runbase ``sk-``, API in One ``aio_``; PROVIDERS.md).
KEY_PREFIXES: tuple[str, ...] = ("sk-", "aio_")
#: A bare token is at least this long (letters, digits, ``-``, ``_``, ``.``) ...
_TOKEN_LENGTH = 24
#: ... and holds a run this long between those separators, of letters and digits mixed.
_RUN_LENGTH = 16
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
_TOKEN = re.compile(r"[A-Za-z0-9._\-]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")
#: Where a word is cut into parts that may each be a key (``--api-kee=KEY``, ``ftp://KEY``).
_PARTS = re.compile(r"[\s=:/@?&#,;'\"]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def has_key_prefix(value: object) -> bool:
    """Whether ``value`` is a str that begins as the providers' keys do (``KEY_PREFIXES``).

    Case-sensitive: keys begin in lower case, environment variable names
    (``AIO_KEY``) in upper case.
    """
    return isinstance(value, str) and value.strip().startswith(KEY_PREFIXES)


def bare_token(text: str) -> bool:
    """Whether ``text`` is a bare token: an API key of no known prefix, as random tokens look.

    The one rule for a key of another form (the command line's usage errors,
    every library message, ``looks_like_key``): at least 24 characters of
    letters, digits, ``-``, ``_`` and ``.``, holding a run of at least 16
    letters and digits between those separators that has at least 3 of
    each and is not hexadecimal. Kept, as a user needs them: words and file
    names (``prompts_for_the_spring_catalogue.txt``,
    ``prompts-2026-12-07-v2.txt``: their runs are short), hexadecimal ids
    (content hashes, UUIDs, fingerprints, the simulator's run ids). A key
    that is all hexadecimal is therefore not recognised.
    """
    if len(text) < _TOKEN_LENGTH or not _TOKEN.fullmatch(text):
        return False
    for run in re.split(r"[._\-]+", text):
        digits = sum(c.isdigit() for c in run)
        if (
            len(run) >= _RUN_LENGTH
            and digits >= 3
            and len(run) - digits >= 3
            and not _HEX.fullmatch(run)
        ):
            return True
    return False


def looks_like_key(value: object) -> bool:
    """Whether ``value`` could be an API key: a str holding a prefixed key or a bare token.

    A key anywhere in it counts (``runbase:sk-...``, ``Bearer sk-...``,
    ``ftp://TOKEN``). Anything but a str is not a key.
    """
    if not isinstance(value, str):
        return False
    return any(has_key_prefix(part) or bare_token(part.lstrip("-")) for part in _PARTS.split(value))


def _key_in(word: str, bare: bool) -> bool:
    if _PREFIXED.search(word):
        return True
    return bare and any(bare_token(part.lstrip("-")) for part in _PARTS.split(word))


def _url(word: str, bare: bool) -> str:
    """A URL word without user info, query or fragment; a path segment holding a key hidden."""
    try:
        parts = urlsplit(word)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return NOT_SHOWN if _key_in(word, bare) else word
    if ":" in host:
        host = f"[{host}]"
    if _key_in(host, bare):
        host = NOT_SHOWN
    path = "/".join(NOT_SHOWN if _key_in(s, bare) else s for s in parts.path.split("/"))
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{path}{query}"


def redact(text: str, *, bare: bool = True, keep: Iterable[str | None] = ()) -> str:
    """``text`` with each word holding something like an API key replaced by ``NOT_SHOWN``.

    A word holds a key when a key's prefix (``KEY_PREFIXES``) begins a key
    inside it (``--api-kee=sk-...``, ``/proc/sk-...``, ``-ksk-...``), or, with
    ``bare`` (the default), when a part of it (split at ``=``, ``:``, ``/``,
    ``@``, ``?``, ``&``, ``#``) is a ``bare_token``. A URL (``scheme://...``)
    is shown without its user info and query string (``?...``), and only a
    path segment or host that holds a key is hidden. Words in ``keep`` (an
    error's own ``run_id``, which callers need) are left as they are.
    """
    kept = {word for word in keep if word and not has_key_prefix(word)}

    def one(match: re.Match[str]) -> str:
        word = match.group(0)
        if word in kept:
            return word
        scheme = _SCHEME.search(word)
        if scheme is not None:  # ``base_url=https://...``: what precedes is a word of its own
            head = word[: scheme.start()]
            return (NOT_SHOWN if _key_in(head, bare) else head) + _url(word[scheme.start() :], bare)
        return NOT_SHOWN if _key_in(word, bare) else word

    return _WORD.sub(one, text)


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, or ``NOT_SHOWN`` if it looks like a key."""
    if looks_like_key(value):
        return NOT_SHOWN
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
