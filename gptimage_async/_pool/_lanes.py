"""Lanes and pools: what a session over several keys and sellers is made of.

A *lane* is one (provider, API key, base URL): it has its own rate budget,
its own learned state and its own price per quality. A *pool* is the ordered
lanes of one session plus its routing policy and optional spend cap. Both are
frozen descriptions, checked in full before anything is sent; the running
parts (limiters, schedulers, health, spend) are built from them.

Names a lane may show anywhere (journals, manifests, logs, Redis, errors):

* ``fingerprint``: 12 hex digits, the head of ``budget_id(provider, key)``
  (an HMAC-SHA256 under the project's naming key), so the key cannot be read
  back and the same key has the same fingerprint in every process;
* ``label``: the user's name for the lane, by default ``provider:fingerprint``.

The key itself is held in a ``Secret``: no repr, str or error shows it.

Prices are per image, per quality (``"medium"``, ``"high"``), in any unit the
user likes (credits, cents). A lane's ``unit`` says whose unit its prices are
in: ``"credits"`` for a provider's published prices (none given), ``"price
units"`` (the user's own, which the library does not know) as soon as the
user gives prices for the lane, ``None`` when it has no price at all. Amounts
of different units are never added; a spend cap needs one unit.
API in One publishes 10 credits a medium image and 28 a high one: those are
its default. Runbase publishes no price for this model, so a Runbase lane's
price is unknown unless given (``/work/shared/PROVIDERS.md``, "Several keys,
two sellers"). Runbase refunds failed runs (its docs: "cost is taken when the
run is created and refunded if it fails"); API in One does not say, so no
refund is assumed.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NoReturn, final

from .._budget import base_url_id, budget_id
from .._endpoint import check_base_url, resolve_key
from .._exceptions import ConfigurationError
from .._models import DEFAULT_QUALITY, QUALITIES, RateLimit
from .._providers import get_provider
from .._secrets import looks_like_key, shown
from .._transport import Secret

__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_QUALITY",
    "FINGERPRINT_DIGITS",
    "OLD_FINGERPRINT_DIGITS",
    "PUBLISHED_UNIT",
    "REFUNDS_FAILED_RUNS",
    "USER_UNIT",
    "ROUTINGS",
    "Lane",
    "Pool",
    "Routing",
    "check_routing",
    "lane_fingerprint",
    "lane_state_file",
    "same_lane",
]

#: How a pool picks the lane of a create (see ``_routing``).
Routing = Literal["earliest", "cheapest"]
ROUTINGS: tuple[str, ...] = ("earliest", "cheapest")

#: The quality a request without one is made at: both providers default to medium.
#: Published prices per provider and quality. API in One: 10 credits medium,
#: 28 high (its docs); Runbase publishes none for this model.
DEFAULT_PRICES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {"apiinone": MappingProxyType({"medium": 10, "high": 28})}
)
#: Providers that give back the cost of a run that failed. Runbase says so; API
#: in One does not say, so a failed run there is counted as spent.
REFUNDS_FAILED_RUNS: frozenset[str] = frozenset({"runbase"})
#: The unit of a provider's published prices (API in One's price list), and of prices
#: the user gives, whose unit is theirs and unknown to the library.
PUBLISHED_UNIT = "credits"
USER_UNIT = "price units"
#: Hex digits of a lane fingerprint: 48 bits, enough to tell a user's keys apart.
#: The one length: ``Lane.fingerprint``, ``Run.lane``, journals, manifests, state
#: files and the CLI's spend lines all show this many.
FINGERPRINT_DIGITS = 12
#: What journals and manifests written before the lengths were made one hold
#: (``Run.lane`` had 8 digits): still read, as a prefix of the full fingerprint.
OLD_FINGERPRINT_DIGITS = 8


def lane_fingerprint(provider: str, api_key: str) -> str:
    """A lane's fingerprint: the first ``FINGERPRINT_DIGITS`` hex digits of ``budget_id``.

    ``budget_id`` is the HMAC-SHA256 of provider and key that already names a
    key's shared budget in Redis, so a fingerprint in a journal or a log can be
    matched to the budget without the key. The key cannot be read back from it.
    """
    return budget_id(provider, api_key)[:FINGERPRINT_DIGITS]


#: Hex digits of a base URL's tag in a lane's state file name (``base_url_id``'s head).
URL_TAG_DIGITS = 8


def lane_state_file(path: str | os.PathLike[str], lane: Lane) -> Path:
    """The learned-state file of ``lane`` in a pool of several: ``path``, named per lane.

    ``states.json`` becomes ``states.<fingerprint>-<url tag>.json``: the
    state is keyed by provider and key (the fingerprint) and base URL (the
    first ``URL_TAG_DIGITS`` hex digits of ``base_url_id``, a keyed hash, so
    the URL is not shown), as issue 19 asks, so one key used at two URLs
    (a proxy, ``localhost``) never overwrites the other's file. A file of the
    old name (``states.<fingerprint>.json``, before the URL was in it) is
    taken over once, if the new one does not exist yet: the state inside names
    its own base URL and is ignored if it was learned at another.
    """
    file = Path(path).expanduser()
    tag = base_url_id(lane.provider, lane.base_url)[:URL_TAG_DIGITS]
    named = file.with_name(f"{file.stem}.{lane.fingerprint}-{tag}{file.suffix}")
    old = file.with_name(f"{file.stem}.{lane.fingerprint}{file.suffix}")
    if not named.exists() and old.exists():
        # Another process may take it first, or it may be unreadable: a cold start, no more.
        with contextlib.suppress(OSError):
            old.replace(named)
    return named


def same_lane(recorded: str, lane: str) -> bool:
    """Whether ``recorded`` (a journal's or manifest's ``"provider:fingerprint"``) is ``lane``.

    ``lane`` is a ``Run.lane`` of now (``FINGERPRINT_DIGITS``); ``recorded``
    may be that or an older record's ``OLD_FINGERPRINT_DIGITS``-digit form,
    which names the same key when it is a prefix of the full fingerprint.
    """
    if recorded == lane:
        return True
    provider, _, digits = recorded.partition(":")
    mine, _, full = lane.partition(":")
    return (
        provider == mine
        and len(digits) == OLD_FINGERPRINT_DIGITS
        and len(full) == FINGERPRINT_DIGITS
        and full.startswith(digits)
    )


def check_routing(routing: object, spend_cap: object) -> None:
    """Raise ``ConfigurationError`` unless ``routing`` is known and ``spend_cap`` a number >= 0."""
    if routing not in ROUTINGS:
        raise ConfigurationError(
            f"routing must be one of {', '.join(ROUTINGS)}, not {routing!r:.40}"
        )
    if spend_cap is not None:
        if isinstance(spend_cap, bool) or not isinstance(spend_cap, int | float):
            raise ConfigurationError(
                f"spend_cap must be a number or None, not {type(spend_cap).__name__}"
            )
        if not math.isfinite(spend_cap) or spend_cap < 0:
            raise ConfigurationError(f"spend_cap must be a finite number >= 0, not {spend_cap!r}")


def _fail(lane: str, message: str) -> NoReturn:
    raise ConfigurationError(f"lane {lane}: {message}")


def _check_prices(where: str, prices: object) -> dict[str, float]:
    if not isinstance(prices, Mapping):
        _fail(where, f"prices must be a mapping of quality to price, not {type(prices).__name__}")
    checked: dict[str, float] = {}
    for quality, price in prices.items():
        if quality not in QUALITIES:
            known = ", ".join(sorted(QUALITIES))
            _fail(where, f"prices: unknown quality {shown(quality, 40)}; expected one of {known}")
        if isinstance(price, bool) or not isinstance(price, int | float):
            _fail(where, f"prices[{quality!r}] must be a number, not {type(price).__name__}")
        if not math.isfinite(price) or price < 0:
            _fail(where, f"prices[{quality!r}] must be a finite number >= 0, not {price!r}")
        checked[quality] = price
    return checked


@final
class Lane:
    """One lane of a pool: a provider, an API key, a base URL, and what it costs.

    ``Lane(provider, api_key=None, *, base_url=None, rate_limit=None,
    prices=None, label=None)``:

    * ``provider``: ``"runbase"`` or ``"apiinone"``;
    * ``api_key``: the key, or ``None`` to read the provider's environment
      variable (``RUNBASE_API_KEY``, ``APIINONE_API_KEY``), as ``Session`` does;
      kept in a ``Secret`` (``api_key``), never shown;
    * ``base_url``: default the provider's; ``https`` (``http`` only on loopback);
    * ``rate_limit``: the starting belief (``RateLimit``); default the provider's;
    * ``prices``: price per image by quality, e.g. ``{"medium": 10, "high": 28}``,
      numbers >= 0; merged over the provider's published prices (API in One:
      10/28; Runbase: none). A quality without a price has an unknown price.
      ``unit`` is ``"credits"`` with no prices given (published ones),
      ``"price units"`` once any is given (yours), ``None`` with no price;
    * ``label``: a display name (non-empty, at most 64 characters); default
      ``"provider:fingerprint"``.

    Raises ``ConfigurationError`` for an unknown provider, a missing or
    malformed key, a bad URL, a bad rate limit, an unknown quality or a price
    that is not a number >= 0. Frozen; equal lanes have the same provider, key
    and base URL.
    """

    __slots__ = (
        "_identity",
        "_key",
        "_prices",
        "base_url",
        "fingerprint",
        "label",
        "provider",
        "rate_limit",
        "refunds_failed",
        "unit",
    )

    _identity: tuple[str, str, str]
    _key: Secret
    _prices: Mapping[str, float]
    provider: str
    base_url: str
    rate_limit: RateLimit
    fingerprint: str
    label: str
    refunds_failed: bool
    unit: str | None

    def __init__(
        self,
        provider: str,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        rate_limit: RateLimit | None = None,
        prices: Mapping[str, float] | None = None,
        label: str | None = None,
    ) -> None:
        adapter = get_provider(provider)
        if label is not None and (
            not isinstance(label, str) or not label.strip() or len(label) > 64
        ):
            raise ConfigurationError("a lane's label must be a non-empty str of at most 64 chars")
        if label is not None and (looks_like_key(label) or label.strip() == str(api_key).strip()):
            # Labels are shown everywhere (logs, manifests, the gallery): never a key.
            raise ConfigurationError(
                "a lane's label must not be an API key (pass the key as api_key)"
            )
        where = repr(label) if label is not None else repr(adapter.name)
        try:
            # Session's own checks, so a lane accepts exactly what Session(...) does.
            key = resolve_key(api_key, adapter)
            url = check_base_url(base_url) if base_url is not None else adapter.default_base_url
        except ConfigurationError as exc:
            _fail(where, exc.message)
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            _fail(where, "rate_limit must be a gptimage_async.RateLimit or None")
        merged = dict(DEFAULT_PRICES.get(adapter.name, {}))
        if prices is not None:
            merged.update(_check_prices(where, prices))
        fingerprint = lane_fingerprint(adapter.name, key)
        sets = object.__setattr__
        sets(self, "provider", adapter.name)
        sets(self, "_key", Secret(key))
        sets(self, "base_url", url)
        sets(self, "rate_limit", rate_limit or adapter.default_rate_limit)
        sets(self, "_prices", MappingProxyType(merged))
        sets(self, "fingerprint", fingerprint)
        sets(self, "label", label.strip() if label is not None else self.name)
        sets(self, "refunds_failed", adapter.name in REFUNDS_FAILED_RUNS)
        # Whose unit the prices are in: given ones are the user's, even if equal to published.
        sets(self, "unit", (USER_UNIT if prices else PUBLISHED_UNIT) if merged else None)
        # The full HMAC, not the short fingerprint: two keys never compare equal by chance.
        sets(self, "_identity", (adapter.name, budget_id(adapter.name, key), url))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Lane is frozen; cannot set {name!r}")

    @property
    def name(self) -> str:
        """``"provider:fingerprint"``: the lane as ``Run.lane``, manifests and journals name it."""
        return f"{self.provider}:{self.fingerprint}"

    @property
    def api_key(self) -> Secret:
        """The key, in a ``Secret``: ``api_key.reveal()`` is for the Authorization header only."""
        return self._key

    @property
    def prices(self) -> Mapping[str, float]:
        """Known price per quality (read-only); a quality missing here has no known price."""
        return self._prices

    def price(self, quality: str | None) -> float | None:
        """The price of one image at ``quality`` (``None``: medium); ``None`` if unknown."""
        return self.prices.get(quality or DEFAULT_QUALITY)

    @property
    def identity(self) -> tuple[str, str, str]:
        """``(provider, budget_id, base_url)``: what makes two lanes the same lane (no key)."""
        return self._identity

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lane) and self.identity == other.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    def __repr__(self) -> str:
        prices = ", ".join(f"{q}={p}" for q, p in sorted(self.prices.items())) or "unknown"
        return (
            f"Lane({self.provider!r}, label={self.label!r}, fingerprint={self.fingerprint!r}, "
            f"base_url={self.base_url!r}, rate_limit={self.rate_limit.requests}/"
            f"{self.rate_limit.per:g}, prices=({prices}))"
        )


def _one_unit(lanes: tuple[Lane, ...]) -> None:
    """Raise ``ConfigurationError`` when priced lanes of a capped pool differ in unit."""
    units: dict[str, list[str]] = {}
    for lane in lanes:
        if lane.unit is not None:
            units.setdefault(lane.unit, []).append(repr(lane.label))
    if len(units) > 1:
        where = "; ".join(f"{', '.join(labels)} in {unit}" for unit, labels in units.items())
        raise ConfigurationError(
            f"a spend cap needs every lane priced in one unit, but these are not ({where}): "
            "the library never adds credits to your own price units. Give prices= to "
            "every lane in your unit (a lane with prices= given is in your unit, even at "
            "the published figures), or drop the cap"
        )


@final
class Pool:
    """The lanes of one session, how creates are routed over them, and the spend cap.

    ``Pool(lanes, *, routing="earliest", spend_cap=None)``:

    * ``lanes``: one or more ``Lane``, in order (order breaks routing ties);
    * ``routing``: ``"earliest"`` (the lane whose next slot is free first) or
      ``"cheapest"`` (price first, overflow when the cheap lane is saturated);
      see ``gptimage_async._pool._routing``;
    * ``spend_cap``: ``None``, or the most all created runs may cost together,
      in the lanes' price unit (a number >= 0). Every lane then needs a price
      for every quality, or a create could go out whose cost is unknown.

    Raises ``ConfigurationError`` (naming the lane, never its key) for an
    empty pool, a spend cap over lanes priced in different units (``unit``),
    a non-``Lane`` item, the same key twice (same provider and
    key, whatever the base URLs: a lane's identity in journals is
    ``provider:fingerprint``), the same label twice, an unknown routing, a bad spend cap,
    or a spend cap with a lane whose prices are unknown.
    """

    __slots__ = ("lanes", "routing", "spend_cap")

    lanes: tuple[Lane, ...]
    routing: Routing
    spend_cap: float | None

    def __init__(
        self,
        lanes: Iterable[Lane],
        *,
        routing: Routing = "earliest",
        spend_cap: float | None = None,
    ) -> None:
        if isinstance(lanes, Lane | str | bytes) or not isinstance(lanes, Iterable):
            raise ConfigurationError("lanes must be an iterable of gptimage_async Lane objects")
        items = tuple(lanes)
        if not items:
            raise ConfigurationError("a pool needs at least one lane")
        # Keyed by provider and key only, not base URL: one key behind two URLs
        # (127.0.0.1 and localhost, a proxy) is one budget, one balance, and one
        # ``provider:fingerprint`` in journals, so it is refused as the same key.
        seen: dict[tuple[str, str], Lane] = {}
        labels: set[str] = set()
        for item in items:
            if not isinstance(item, Lane):
                raise ConfigurationError(
                    f"a pool's lanes must be Lane objects, not {type(item).__name__}"
                )
            key = item.identity[:2]
            if key in seen:
                first = seen[key]
                urls = (
                    item.base_url
                    if first.base_url == item.base_url
                    else f"at {first.base_url} and {item.base_url}"
                )
                raise ConfigurationError(
                    f"lanes {first.label!r} and {item.label!r} are the same key "
                    f"({item.provider}, fingerprint {item.fingerprint}, {urls}): "
                    "a lane is its provider and key, whatever its base URL; "
                    "give each lane its own key"
                )
            if item.label in labels:
                raise ConfigurationError(
                    f"two lanes are labelled {item.label!r}: labels must differ (pass label=...)"
                )
            seen[key] = item
            labels.add(item.label)
        check_routing(routing, spend_cap)
        if spend_cap is not None:
            _one_unit(items)
            for item in items:
                missing = sorted(QUALITIES - set(item.prices))
                if missing:
                    raise ConfigurationError(
                        f"lane {item.label!r}: a spend cap needs a price for every quality; "
                        f"none is known for {', '.join(missing)} (give prices={{...}})"
                    )
        sets = object.__setattr__
        sets(self, "lanes", items)
        sets(self, "routing", routing)
        sets(self, "spend_cap", spend_cap)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Pool is frozen; cannot set {name!r}")

    def __repr__(self) -> str:
        labels = ", ".join(repr(lane.label) for lane in self.lanes)
        return f"Pool([{labels}], routing={self.routing!r}, spend_cap={self.spend_cap!r})"
