"""Redis key names of a shared budget, and the keyed hashes that name it without a secret.

Keys are ``gptimage:{<budget>}:<name>``, where ``<budget>`` is an HMAC of the
provider and the API key (never the key itself); the braces are a Redis
Cluster hash tag, so one budget's keys share a slot (the scripts touch several).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

__all__ = ["BudgetKeys", "base_url_id", "budget_id"]

#: Key of the HMAC naming a budget. Not a secret: it keeps raw key hashes out of Redis.
_NAME_KEY: Final = b"gptimage-async/shared-budget/v1"


def budget_id(provider: str, api_key: str) -> str:
    """The name of a key's shared budget: an HMAC-SHA256 of provider and key, 32 hex digits.

    The API key cannot be read back from it, and it is the same in every
    process, so processes on one key meet on the same Redis keys.
    """
    digest = hmac.new(_NAME_KEY, f"{provider}\0{api_key}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def base_url_id(provider: str, base_url: str) -> str:
    """An HMAC-SHA256 of provider and base URL, 32 hex digits: names a URL in Redis without it.

    A base URL carries no credentials (``Session`` refuses user info), but a
    query string might; Redis never sees it in clear.
    """
    digest = hmac.new(_NAME_KEY, f"url\0{provider}\0{base_url}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    """The Redis keys of one budget (``budget`` is its ``budget_id``).

    ``timeline`` (hash): the GCRA's next free slot, the pause, when the logs
    began. ``belief`` (hash): the fleet's belief and its version. ``polls`` /
    ``waiting`` (sorted sets): processes with polls / any request waiting, by
    expiry. ``grants`` / ``refusals`` (sorted sets): slot times granted and
    send times answered 429, a few windows back. ``procs``: processes alive,
    by expiry. ``events``: the pub/sub channel of pauses and belief versions.
    """

    budget: str

    def _key(self, name: str) -> str:
        return f"gptimage:{{{self.budget}}}:{name}"

    @property
    def timeline(self) -> str:
        return self._key("budget")

    @property
    def belief(self) -> str:
        return self._key("belief")

    @property
    def polls(self) -> str:
        return self._key("polls")

    @property
    def waiting(self) -> str:
        return self._key("waiting")

    @property
    def grants(self) -> str:
        return self._key("grants")

    @property
    def refusals(self) -> str:
        return self._key("refusals")

    @property
    def procs(self) -> str:
        return self._key("procs")

    @property
    def events(self) -> str:
        return self._key("events")
