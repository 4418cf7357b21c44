"""Per-key accounts: each API key's own rate limit, credits, quota, spend limit and prices.

The real providers keep all of these per key (PROVIDERS.md, "Several keys,
two sellers"): N keys give N rate budgets, and each key runs out of credits
(402), quota (429 ``USAGE_EXCEEDED``) or spend limit (403) on its own. A
:class:`KeyConfig` names only what differs for one key; every field it leaves
unset comes from the :class:`SimulatorConfig` fields of the same name, which
are also what any key not listed gets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
from msgspec import UNSET, UnsetType

__all__ = ["PROVIDER_PRICES", "KeyConfig", "KeyLimits", "check_prices"]

PROVIDER_PRICES: Mapping[str, int] = {"medium": 10, "high": 28}
"""Credits per run by quality: API in One's published price (10 medium, 28 high).

Runbase publishes no price for this model; the simulator charges the same
unless ``prices`` says otherwise.
"""


def check_prices(prices: Mapping[str, int] | None) -> None:
    """Raise ``ValueError`` unless ``prices`` gives ``medium`` and ``high`` as credits >= 0."""
    if prices is None:
        return
    if set(prices) != {"medium", "high"}:
        raise ValueError(f"prices must give exactly 'medium' and 'high', got {sorted(prices)}")
    for quality, price in prices.items():
        if not isinstance(price, int) or price < 0:
            raise ValueError(f"prices[{quality!r}] must be a whole number >= 0, got {price!r}")


def _check_count(name: str, value: object) -> None:
    if value is not UNSET and value is not None and not (isinstance(value, int) and value >= 0):
        raise ValueError(f"{name} must be a whole number >= 0 or None, got {value!r}")


class KeyConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One key's own account; a field left unset takes the ``SimulatorConfig`` value.

    ::

        SimulatorConfig(keys={
            "sk-a": KeyConfig(rate_limit=20, rate_window=10, credits=1000),
            "aio_b": KeyConfig(quota=50, spend_limit=500),
        })

    Credits, quota and spend limit are counted per key from the simulator's
    start; ``None`` means unlimited. Refusals: ``credits`` -> 402,
    ``quota`` -> Runbase 429 ``USAGE_EXCEEDED`` (API in One 403),
    ``spend_limit`` -> 403 (Runbase ``api_key_spend_limit_exceeded``).
    """

    rate_limit: int | UnsetType | None = UNSET
    """Requests per ``rate_window``, creates and polls together; ``None``: no limit."""
    rate_window: float | UnsetType = UNSET
    """Provider seconds (scaled by ``time_scale``)."""
    credits: int | UnsetType | None = UNSET
    """Starting balance in credits; a create that costs more than is left gets 402."""
    quota: int | UnsetType | None = UNSET
    """Most runs this key may create."""
    spend_limit: int | UnsetType | None = UNSET
    """Most credits this key may spend (net of refunds); a create past it gets 403."""
    prices: dict[str, int] | UnsetType | None = UNSET
    """Credits per run by quality, e.g. ``{"medium": 8, "high": 20}``; ``None``: 10/28."""

    def __post_init__(self) -> None:
        if self.rate_limit is not UNSET and self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be >= 1 or None")
        if self.rate_window is not UNSET and not (
            self.rate_window > 0 and math.isfinite(self.rate_window)
        ):
            raise ValueError("rate_window must be a positive number of seconds")
        for name in ("credits", "quota", "spend_limit"):
            _check_count(name, getattr(self, name))
        if not isinstance(self.prices, UnsetType):
            check_prices(self.prices)


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """One key's account with every default filled in (``SimulatorConfig.limits``)."""

    rate_limit: int | None
    rate_window: float
    """Provider seconds."""
    credits: int | None
    quota: int | None
    spend_limit: int | None
    prices: Mapping[str, int]
    """Credits per run by quality."""
