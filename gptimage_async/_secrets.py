"""What a message may echo of a value the user gave: never something like an API key.

A key passed in the wrong place (``Lane(key, "runbase")``, ``base_url=key``,
``--lane KEY``, a pool file's ``key_env = "KEY"``) must not come back in an
exception, a log line or a usage error: those end up in CI logs and bug
reports. Two rules say what looks like a key (``looks_like_key``):

* a **prefixed key**: the providers' prefixes (``KEY_PREFIXES``) followed by
  at least 6 key characters, anywhere in a value;
* a **bare token** (``bare_token``): a key of no known prefix, as random
  tokens look: long, mixing letters and digits, not hexadecimal, not a ULID;
  base64 keys too (``+``, ``/``, ``=`` padding), and percent-encoded ones.

A URL's **host** is a DNS name: case-insensitive, and written in lower case
in practice, while random keys mix cases. So a host is hidden only when a
label of it holds a prefixed key or a mixed-case bare token, or when it is
a single label that is a bare token (``ftp://KEY``: no DNS name under any
domain). Random-looking lower-case subdomains (AWS Lambda function URLs,
``r3xkq7....lambda-url.us-east-1.on.aws``) stay readable: a user must see
which host failed.

A word a user typed and a message refuses (a usage error's, a pool file's
``key_env``) is judged by a looser third rule, ``key_shaped``: known key
shapes of no provider's prefix too (JWTs, ``AKIA...``, ``xoxb-...``, long hex
or digit strings), as such a message loses little by not repeating it.

``redact`` applies both to a whole message, word by word, and shows a URL
without its user info and query string; ``GPTImageError`` runs it on every
message, so a check that repeats the value it refuses (``not {value!r}``)
never repeats a key. ``shown`` is a value's ``repr`` for a message, or
``NOT_SHOWN``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence, Set
from urllib.parse import unquote, urlsplit

__all__ = [
    "KEY_PREFIXES",
    "NOT_SHOWN",
    "bare_token",
    "conventional_env_name",
    "has_key_prefix",
    "key_shaped",
    "looks_like_key",
    "mixed_case_token",
    "redact",
    "shown",
    "usage_message",
]

#: How the two providers' keys begin (Runbase ``sk-``, API in One ``aio_``; PROVIDERS.md).
KEY_PREFIXES: tuple[str, ...] = ("sk-", "aio_")
#: A bare token is at least this long (letters, digits, ``-``, ``_``, ``.``) ...
_TOKEN_LENGTH = 24
#: ... and holds a run this long between those separators, of letters and digits mixed.
_RUN_LENGTH = 16
#: What stands in a message for a value that looks like an API key.
NOT_SHOWN = "(a value that looks like an API key, not shown)"
#: A word of a message: a run of characters between spaces, quotes and brackets, or
#: a URL whose host is an IPv6 address in brackets (``http://[::1]:80/v1``), whole.
_WORD = re.compile(
    r"[^\s'\"()\[\]{}<>,;`]*://\[[0-9A-Za-z:.%]*\][^\s'\"()\[\]{}<>,;`]*"
    r"|[^\s'\"()\[\]{}<>,;`]+"
)
#: A key's prefix where a key would begin: at a word's start, after a
#: character that is not a letter or digit, or joined to a short option (``-ksk-...``);
#: at least 6 more key characters follow (``sk-`` alone, in a hint, is no key).
_PREFIXED = re.compile(
    r"(?:^-[A-Za-z]|^|[^A-Za-z0-9])(?:" + "|".join(map(re.escape, KEY_PREFIXES)) + r")[\w.\-]{6,}"
)
#: Token characters: a URL-safe token's, and base64's ``+`` with its ``=`` padding.
_TOKEN = re.compile(r"[A-Za-z0-9._\-+]+={0,2}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
#: A ULID (ulid/spec): 26 characters of Crockford's base32, upper case, 48-bit time first.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
#: A token judged whole by how it mixes cases (``_scrambled``): base64 of either alphabet.
_BASE64 = re.compile(r"[A-Za-z0-9+/_\-]{24,}={0,2}")
#: Where a word is cut into parts that may each be a key (``--api-kee=KEY``, ``ftp://KEY``).
_PARTS = re.compile(r"[\s=:/@?&#,;'\"]+")
#: A DNS name as written (lower case), with its port: ``api.example.com:443``.
_DNS_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}\.?(?::[0-9]{1,5})?")
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
    letters, digits, ``-``, ``_``, ``.`` and base64's ``+`` (``=`` padding
    at the end), holding a run of at least 16 characters between ``-``,
    ``_`` and ``.`` that has at least 3 letters and 3 digits and is neither
    hexadecimal nor a ULID. Or a base64 token whose separators cut it into
    short runs (``Qx7Lm2Np9R-t4Vw8Zk3Hj6_Fd1Ab``, ``Qx7Lm2Np9Rt4/Vw8Zk3Hj6Fd1``),
    told by how it mixes cases (``_scrambled``).
    Kept, as a user needs them: words and file names
    (``prompts_for_the_spring_catalogue.txt``, ``prompts-2026-12-07-v2.txt``:
    their runs are short), hexadecimal ids (content hashes, UUIDs,
    fingerprints, the simulator's run ids), ULIDs (``01HZX3K8M2Q4R5T6V7W8Y9Z0AB``,
    time-ordered ids of many servers). A key that is all hexadecimal is
    therefore not recognised.
    """
    if len(text) < _TOKEN_LENGTH:
        return False
    if _scrambled(text):
        return True
    if not _TOKEN.fullmatch(text):
        return False
    for run in re.split(r"[._\-]+", text.rstrip("=")):
        digits = sum(c.isdigit() for c in run)
        if (
            len(run) >= _RUN_LENGTH
            and digits >= 3
            and sum(c.isalpha() for c in run) >= 3
            and not _HEX.fullmatch(run)
            and not _ULID.fullmatch(run)
        ):
            return True
    return False


def _scrambled(text: str) -> bool:
    """A base64 token (``+``, ``/``, ``-``, ``_`` inside): at least 2 upper-case letters,
    lower-case letters and digits each, switching between them as random characters do.

    Random base64 changes character class at about 2 in 3 neighbours; names
    that mix cases (``Batch_2026_Spring_Catalogue_v2``, the relative path
    ``out/Spring2026/Catalogue12/v3x``) at far fewer, and an absolute path
    begins with ``/``.
    """
    if not _BASE64.fullmatch(text) or text.startswith("/"):
        return False
    # Words between ``-`` and ``_`` are left out: ``run_`` before a ULID mixes no cases.
    kept = [part for part in re.split(r"[_\-]+", text.rstrip("=")) if not part.isalpha()]
    kinds = ["u" if c.isupper() else "l" if c.islower() else "d" for c in "".join(kept)]
    kinds = [kind for kind, c in zip(kinds, "".join(kept), strict=True) if c.isalnum()]
    if len(kinds) < _RUN_LENGTH or min(kinds.count(kind) for kind in "uld") < 2:
        return False
    changes = sum(a != b for a, b in itertools.pairwise(kinds))
    return changes >= 0.45 * (len(kinds) - 1)


def mixed_case_token(text: str) -> bool:
    """Whether ``text`` is a ``bare_token`` mixing upper- and lower-case letters.

    The stricter rule where a value of another kind may look random: a DNS
    host's label (written in lower case) and a run id a user gives, as
    servers' ids are often of one case (base32, base36, ULIDs) while keys
    mix cases.
    """
    return bare_token(text) and any(c.islower() for c in text) and any(c.isupper() for c in text)


def looks_like_key(value: object) -> bool:
    """Whether ``value`` could be an API key: a str holding a prefixed key or a bare token.

    A key anywhere in it counts (``runbase:sk-...``, ``Bearer sk-...``,
    ``ftp://TOKEN``): whatever ``redact`` would hide (so a URL's host by the
    rule for hosts), and a part that begins with a key's prefix. Anything
    but a str is not a key.
    """
    if not isinstance(value, str):
        return False
    return _redacted(value, True, frozenset())[1] or any(
        has_key_prefix(part) for part in _PARTS.split(value)
    )


#: Where a word is cut into pieces that may be a base64 key holding ``/``.
_PIECES = re.compile(r"[\s=:@?&#,;'\"]+")


def _parts(text: str) -> list[str]:
    """``text`` cut at ``_PARTS``, and again once percent-decoded (``KEY%0A``, ``%2B``)."""
    parts = _PARTS.split(text)
    if "%" in text:
        parts += _PARTS.split(unquote(text))
    return parts


def _key_in(word: str, bare: bool, kept: Set[str] = frozenset()) -> bool:
    if _PREFIXED.search(word) or ("%" in word and _PREFIXED.search(unquote(word))):
        return True
    if not bare:
        return False
    return any(bare_token(part.lstrip("-")) for part in _parts(word) if part not in kept) or any(
        _scrambled(piece) for piece in _PIECES.split(unquote(word)) if piece not in kept
    )


def _host_key(host: str, bare: bool) -> bool:
    """Whether a URL's host, as written, holds a key (the module's rule for hosts)."""
    if _key_in(host, bare=False):
        return True
    if not bare:
        return False
    labels = [label for label in unquote(host).split(".") if label]
    if len(labels) == 1:
        return _key_in(labels[0], bare)
    return any(mixed_case_token(label) for label in labels)


def _url(word: str, bare: bool, kept: Set[str]) -> str:
    """A URL word without user info, query or fragment; a path segment holding a key hidden."""
    try:
        parts = urlsplit(word)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return NOT_SHOWN if _key_in(word, bare, kept) else word
    # ``hostname`` is lower-cased: the case as written tells a key from a DNS name.
    written = parts.netloc.rpartition("@")[2]
    written = written[1:].partition("]")[0] if written.startswith("[") else written
    if ":" in host:
        host = f"[{host}]"
    elif _host_key(written.partition(":")[0], bare):
        host = NOT_SHOWN
    path = "/".join(NOT_SHOWN if _key_in(s, bare, kept) else s for s in parts.path.split("/"))
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{path}{query}"


def redact(text: str, *, bare: bool = True, keep: Iterable[str | None] = ()) -> str:
    """``text`` with each word holding something like an API key replaced by ``NOT_SHOWN``.

    A word holds a key when a key's prefix (``KEY_PREFIXES``) begins a key
    inside it (``--api-kee=sk-...``, ``/proc/sk-...``, ``-ksk-...``), or, with
    ``bare`` (the default), when a part of it (split at ``=``, ``:``, ``/``,
    ``@``, ``?``, ``&``, ``#``) is a ``bare_token``. A URL (``scheme://...``)
    is shown without its user info and query string (``?...``), and only a
    path segment or host that holds a key is hidden (a host, in a URL or
    named alone, by the module's rule for hosts); an IPv6 host in brackets
    keeps its port and path. The ids in ``keep`` (a server's answer's, that
    an error carries: ``GPTImageError._ids``, its ``run_id`` and such, which
    callers need whatever they look like) are left as they are, as words
    and as parts of words (``.../runs/ID``, ``ID:``).
    """
    return _redacted(text, bare, {word for word in keep if word and not has_key_prefix(word)})[0]


def _redacted(text: str, bare: bool, kept: Set[str]) -> tuple[str, bool]:
    """``redact``'s text, and whether it hid anything."""
    hidden = False

    def one(match: re.Match[str]) -> str:
        nonlocal hidden
        word = match.group(0)
        if word in kept:
            return word
        scheme = _SCHEME.search(word)
        if scheme is not None:  # ``base_url=https://...``: what precedes is a word of its own
            head = word[: scheme.start()]
            out = (NOT_SHOWN if _key_in(head, bare, kept) else head) + _url(
                word[scheme.start() :], bare, kept
            )
        elif _DNS_NAME.fullmatch(word):  # a host named alone (``host:443``): the rule for hosts
            out = NOT_SHOWN if _host_key(word.partition(":")[0], bare) else word
        else:
            out = NOT_SHOWN if _key_in(word, bare, kept) else word
        hidden = hidden or NOT_SHOWN in out
        return out

    return _WORD.sub(one, text), hidden


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, or ``NOT_SHOWN`` if it looks like a key."""
    if looks_like_key(value):
        return NOT_SHOWN
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: An option whose value is a secret by its name: ``--api-key``, ``--key``, ``--token``,
#: ``--client-secret``, ``--password``, ``--auth``.
_SECRET_OPTION = re.compile(r"--?[\w-]*(?:key|token|secret|passw(?:or)?d|auth)[\w-]*", re.I)
#: ``--api-key VALUE`` / ``--api-key=VALUE`` inside a message argparse wrote.
_SECRET_PAIR = re.compile(
    r"(?<![\w-])(" + _SECRET_OPTION.pattern + r")(=|[ \t]+)(?![-(])(\S+)", re.I
)
#: ``argument --api-key: ...``: argparse's error about one option's value.
_ABOUT_OPTION = re.compile(r"^argument ([^:]+): ")
_QUOTED = re.compile(r"'[^']*'")
#: A word of token characters (no ``.``: file names, hosts and versions have one).
_WORD_TOKEN = re.compile(r"[A-Za-z0-9_\-+/]+={0,2}")
#: The usual form of an environment variable's name (POSIX: upper case, digits, ``_``).
_CONVENTIONAL_ENV = re.compile(r"[A-Z_][A-Z0-9_]*")


def conventional_env_name(value: object) -> bool:
    """Whether ``value`` is written as environment variable names are: ``^[A-Z_][A-Z0-9_]*$``.

    A message may name such a variable (``RUNBASE_API_KEY_2``); any other value
    given where a variable's name belongs (``key_env = "rb_live_..."``) may be a
    key pasted in the wrong place, and is shown as ``NOT_SHOWN``; so is a name of
    a key's shape (``key_shaped``: ``AKIA4EXAMPLE7KEY9Q2Z``).
    """
    return (
        isinstance(value, str)
        and _CONVENTIONAL_ENV.fullmatch(value) is not None
        and not key_shaped(value)  # AWS-style keys are upper case too: AKIA...
    )


#: Keys whose shape is known however they begin (gitleaks' and GitHub secret scanning's
#: patterns, simplified): a JWT (three base64url parts, the first ``{"`` encoded: ``eyJ``),
#: an AWS access key id (``AKIA`` + 16 upper-case letters and digits), vendors' prefixed
#: tokens (Slack ``xoxb-``, GitHub ``ghp_``/``github_pat_``, GitLab ``glpat-``, Google
#: ``AIza``, Hugging Face ``hf_``, npm, PyPI, Stripe), 32+ hexadecimal digits, 20+ digits.
_KNOWN_SHAPE = re.compile(
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"
    r"|(?:A3T[A-Z0-9]|AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}"
    r"|(?:xox[abposr]-|xapp-|gh[pousr]_|github_pat_|glpat-|AIza|hf_|npm_|pypi-"
    r"|[sr]k_(?:live|test)_)[A-Za-z0-9_\-]{10,}"
    r"|[0-9A-Fa-f]{32,}"
    r"|[0-9]{20,}"
)


def key_shaped(word: str) -> bool:
    """Whether ``word``, typed by a user, may be a key: the one rule for refused values.

    The command line's usage errors (``usage_message``: a stray argument, an
    invalid choice, an invalid value of any option) and a pool file's
    ``key_env`` (``conventional_env_name``) hide such a word. Looser than
    ``bare_token``: a message loses little by not repeating a word the user
    typed. A word (or the part after its last ``=``) is key-shaped when it

    * is of a known key shape (``_KNOWN_SHAPE``): a JWT, an AWS access key id
      (``AKIAIOSFODNN7EXAMPLE``), a vendor's prefixed token
      (``xoxb-1234-5678-...``, ``ghp_...``), 32 or more hexadecimal digits
      (``abcdef0123456789abcdef0123456789``), 20 or more digits; or
    * has at least 16 token characters with no ``.``, is not hexadecimal, and
      holds a run (between ``-``, ``_``, ``/``, ``+``) of at least 8 characters
      with 3 letters and 3 digits: ``rb_live_CANARY123456789``; or
    * is what ``looks_like_key`` finds (a provider's prefix, a bare token).

    Shown still: words, file names and paths, URLs without credentials
    (``http://127.0.0.1:8080/v1``), numbers (``20``, ``3.5``, ``20/10``),
    prompts (``a fox``), UUIDs and short hexadecimal ids.
    """
    value = word.rpartition("=")[2] if "=" in word.rstrip("=") else word
    return any(_shaped(text) for text in {word, value} if text) or looks_like_key(word)


def _shaped(word: str) -> bool:
    if _KNOWN_SHAPE.fullmatch(word):
        return True
    if len(word) < _RUN_LENGTH or not _WORD_TOKEN.fullmatch(word) or _HEX.fullmatch(word):
        return False
    return any(
        len(run) >= 8
        and sum(c.isdigit() for c in run) >= 3
        and sum(c.isalpha() for c in run) >= 3
        and not _HEX.fullmatch(run)
        for run in re.split(r"[_\-/+]+", word.rstrip("="))
    )


def usage_message(message: str, argv: Sequence[str] = ()) -> str:
    """A command-line usage error (argparse's) as it may be shown: no secret in it.

    ``argv`` are the words argparse did not recognise, which the message
    lists (``unrecognized arguments: ...``): the message is then rebuilt from
    them. Hidden as ``NOT_SHOWN``: the value of an option whose name says it
    is a secret (``_SECRET_OPTION``: ``--api-key VALUE``, ``--token=VALUE``,
    whatever the value looks like), every quoted value of argparse's error
    about such an option, a word or quoted value of a key's shape
    (``key_shaped``, from 16 characters), and what ``redact`` hides.
    """
    if argv:
        words: list[str] = []
        hide_next = False
        for word in argv:
            name, equals, _value = word.partition("=")
            if hide_next:
                words.append(NOT_SHOWN)
                hide_next = False
            elif _SECRET_OPTION.fullmatch(name):
                words.append(f"{name}={NOT_SHOWN}" if equals else word)
                hide_next = not equals
            else:
                words.append(NOT_SHOWN if key_shaped(word) else word)
        message = "unrecognized arguments: " + " ".join(words)
    about = _ABOUT_OPTION.match(message)
    if about and any(_SECRET_OPTION.fullmatch(name) for name in about.group(1).split("/")):
        head = message[: about.end()]
        message = head + _QUOTED.sub(NOT_SHOWN, message[about.end() :])
    message = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{NOT_SHOWN}", message)
    message = _QUOTED.sub(
        lambda m: NOT_SHOWN if key_shaped(m.group(0)[1:-1]) else m.group(0), message
    )
    return redact(message, bare=True)
