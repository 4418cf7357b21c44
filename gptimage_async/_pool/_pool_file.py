"""The CLI's pool file: several keys and sellers, named in a small TOML file.

Keys never go in the file (nor on the command line): each lane names the
*environment variable* that holds its key. A file::

    routing = "cheapest"          # or "earliest" (the default)
    spend_cap = 2000              # optional, in the lanes' price unit

    [lanes.rb-main]               # the table's name is the lane's label
    provider = "runbase"
    key_env = "RUNBASE_API_KEY"   # default: the provider's own variable
    prices = { medium = 4, high = 11 }
    rate_limit = "20/10"          # N/SECONDS, as the CLI's --rate-limit

    [lanes.rb-second]
    provider = "runbase"
    key_env = "RUNBASE_API_KEY_2"

    [lanes.aio]
    provider = "apiinone"         # prices default to its published 10 / 28
    base_url = "https://apiin.one/api/v1"

Every mistake is a ``ConfigurationError`` whose message starts with the file
and names the lane and the field: an unknown field (a typo must not pass
silently), a key written in the file (any ``api_key``/``key``/``token``
field, or a value starting ``sk-`` or ``aio_``: the two providers' key
prefixes), a variable that is unset or empty, a malformed rate, and all of
``Lane`` / ``Pool``'s own checks (empty pool, same key twice, prices, cap).
The file is read with the standard library's ``tomllib``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from .._exceptions import ConfigurationError
from .._models import RateLimit
from .._providers import get_provider, provider_names
from .._secrets import NOT_SHOWN, conventional_env_name, has_key_prefix, looks_like_key, shown
from ._lanes import ROUTINGS, Lane, Pool

__all__ = ["POOL_FILE_FIELDS", "load_pool_file", "parse_pool", "parse_rate"]

#: The fields a lane's table may hold.
POOL_FILE_FIELDS: frozenset[str] = frozenset(
    {"provider", "key_env", "base_url", "prices", "rate_limit"}
)
#: Top-level fields besides ``[lanes.*]``.
_TOP_FIELDS = frozenset({"lanes", "routing", "spend_cap"})
#: How the providers' keys begin (Runbase ``sk-``, API in One ``aio_``): a
#: value starting so is a key pasted where a variable's name belongs.
#: Field names that would hold a key itself.
_KEY_FIELDS = frozenset({"api_key", "apikey", "key", "token", "secret"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_rate(text: str) -> RateLimit:
    """``"20/10"`` (N requests per SECONDS) as a ``RateLimit``.

    A bare number is refused: ``"20"`` could mean per second, per 10 s or per
    minute (the CLI's ``--rate-limit`` reads it the same way). Raises
    ``ConfigurationError``.
    """
    requests, slash, per = text.partition("/") if isinstance(text, str) else ("", "", "")
    try:
        if not slash:
            raise ValueError
        count, seconds = int(requests), float(per)
    except ValueError:
        raise ConfigurationError(
            f"expected N/SECONDS such as 20/10 (20 requests per 10 seconds), not {text!r:.40}"
        ) from None
    # In the file's own terms, not RateLimit's field names.
    if count < 1:
        raise ConfigurationError(f"at least 1 request per window, not {text!r:.40}")
    if not 0 < seconds < float("inf"):
        raise ConfigurationError(
            f"the window must be a positive number of seconds, not {text!r:.40}"
        )
    return RateLimit(count, seconds)


class _Where:
    """Where in the file a value came from, for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str, *, lane: str | None = None, field: str | None = None) -> NoReturn:
        # A table or field named after a key (pasted in the wrong place) is not echoed.
        place = "".join(
            (
                f": lane {shown(lane)}" if lane is not None else "",
                f": {shown(field).strip(chr(39))}" if field else "",
            )
        )
        raise ConfigurationError(f"{self.source}{place}: {message}")


def _lane(where: _Where, label: str, table: object, environ: Mapping[str, str]) -> Lane:
    if not isinstance(table, Mapping):
        where.fail("must be a table of fields ([lanes.NAME])", lane=label)
    if looks_like_key(label):
        where.fail(
            "a lane's name ([lanes.NAME]) must not be an API key: keys go in key_env's variable",
            lane=label,
        )
    for field, value in table.items():
        if field.lower() in _KEY_FIELDS or (field != "key_env" and has_key_prefix(value)):
            where.fail(
                "API keys never go in the pool file: put the key in an environment "
                "variable and name it with key_env",
                lane=label,
                field=field,
            )
        if field not in POOL_FILE_FIELDS:
            known = ", ".join(sorted(POOL_FILE_FIELDS))
            where.fail(f"unknown field; expected one of {known}", lane=label, field=field)
    provider = table.get("provider")
    if not isinstance(provider, str):
        known = ", ".join(provider_names())
        where.fail(f"required, one of {known}", lane=label, field="provider")
    try:
        adapter = get_provider(provider)
    except ConfigurationError as exc:
        where.fail(exc.message, lane=label, field="provider")
    env = table.get("key_env", adapter.env_var)
    if looks_like_key(env):
        where.fail(
            "this looks like an API key, not the name of an environment variable: "
            "keys never go in the pool file",
            lane=label,
            field="key_env",
        )
    # Only a name written as variables are (RUNBASE_API_KEY_2) is repeated: any other
    # value may be a key of a shape no rule knows, pasted where its variable's name goes.
    named = env if conventional_env_name(env) else NOT_SHOWN
    if not isinstance(env, str) or not _ENV_NAME.fullmatch(env):
        where.fail(
            "must name an environment variable (letters, digits, _), not "
            + (f"{env!r:.40}" if named == env else named),
            lane=label,
            field="key_env",
        )
    key = environ.get(env)
    if key is None or not key.strip():
        where.fail(
            f"the environment variable {named} is not set or empty", lane=label, field="key_env"
        )
    rate_text = table.get("rate_limit")
    rate: RateLimit | None = None
    if rate_text is not None:
        try:
            rate = parse_rate(rate_text)
        except ConfigurationError as exc:
            where.fail(exc.message, lane=label, field="rate_limit")
    base_url = table.get("base_url")
    if base_url is not None and not isinstance(base_url, str):
        where.fail("must be a string (an https URL)", lane=label, field="base_url")
    try:
        return Lane(
            provider,
            key,
            base_url=base_url,
            rate_limit=rate,
            prices=table.get("prices"),
            label=label,
        )
    except ConfigurationError as exc:
        # Lane's message names the lane and the field already.
        where.fail(exc.message)


def parse_pool(
    data: Mapping[str, object], *, source: str, environ: Mapping[str, str] | None = None
) -> Pool:
    """A ``Pool`` from a pool file's parsed TOML ``data``; ``source`` names it in errors.

    ``environ`` is where keys are read (default ``os.environ``). Raises
    ``ConfigurationError`` (module docstring); never shows a key.
    """
    where = _Where(source)
    env = os.environ if environ is None else environ
    for field, value in data.items():
        if field.lower() in _KEY_FIELDS or has_key_prefix(value):
            where.fail(
                "API keys never go in the pool file; name a variable with key_env", field=field
            )
        if field not in _TOP_FIELDS:
            where.fail(f"unknown field; expected {', '.join(sorted(_TOP_FIELDS))}", field=field)
    tables = data.get("lanes")
    if tables is None or (isinstance(tables, Mapping) and not tables):
        where.fail("no lanes: add at least one [lanes.NAME] table")
    if not isinstance(tables, Mapping):
        where.fail("must be tables [lanes.NAME], one per lane", field="lanes")
    lanes = [_lane(where, str(label), table, env) for label, table in tables.items()]
    routing = data.get("routing", "earliest")
    if routing not in ROUTINGS:
        where.fail(f"must be one of {', '.join(ROUTINGS)}, not {routing!r:.40}", field="routing")
    spend_cap = data.get("spend_cap")
    if spend_cap is not None and (
        isinstance(spend_cap, bool) or not isinstance(spend_cap, int | float)
    ):
        where.fail(f"must be a number, not {type(spend_cap).__name__}", field="spend_cap")
    try:
        return Pool(lanes, routing=routing, spend_cap=spend_cap)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        where.fail(exc.message)


def load_pool_file(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Pool:
    """Read and check the pool file at ``path`` (TOML, module docstring) into a ``Pool``.

    Keys are read from ``environ`` (default ``os.environ``) by the variable
    each lane names. Raises ``ConfigurationError`` naming the file (and the
    lane and field where there is one) for a file that cannot be read, bad
    TOML, or any bad value; nothing is sent before it returns.
    """
    source = os.fspath(path)
    try:
        with Path(source).open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot read the pool file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
    return parse_pool(data, source=source, environ=environ)
