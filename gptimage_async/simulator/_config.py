"""What the simulator is told to do: durations, limits, accounts and faults.

Every duration here is in *provider seconds*: the simulator multiplies it by
``SimulatorConfig.time_scale`` before it touches the wall clock, so one config
describes the real providers and a test only turns ``time_scale`` down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from typing import Any, Literal, get_args

import msgspec

from gptimage_async.simulator._keys import PROVIDER_PRICES, KeyConfig, KeyLimits, check_prices

__all__ = [
    "ApiInOneShape",
    "DurationMode",
    "FAULT_RATES",
    "FAULT_SETTINGS",
    "Faults",
    "ProtocolName",
    "RetryAfterMode",
    "SimulatorConfig",
    "UrlLocation",
    "VARIANTS",
]

ProtocolName = Literal["runbase", "apiinone"]
"""The two wire protocols the simulator speaks."""

DurationMode = Literal["uniform", "lognormal", "fixed"]
"""How run durations are drawn: ``fixed`` always takes ``duration_median``."""

RetryAfterMode = Literal["none", "seconds", "http-date"]
"""What a rate-limit 429 carries in ``Retry-After``."""

ApiInOneShape = Literal["envelope", "flat", "mixed"]
"""API in One body shape; ``mixed`` draws one of the two per response."""

UrlLocation = Literal[
    "output.urls",
    "output_list_str",
    "output_list_obj",
    "urls",
    "result.urls",
    "images",
    "random",
]
"""Where a finished API in One task keeps its URLs; ``random`` draws one per run."""


FAULT_RATES = (
    "poll_5xx",
    "create_5xx",
    "reset",
    "reset_after_create",
    "truncated_json",
    "create_500_after_effect",
    "slow",
    "bom",
    "poll_redirect",
    "keepalive_close",
    "other_run",
)
"""The ``Faults`` fields that are probabilities per request."""

FAULT_SETTINGS = ("slow_seconds", "keepalive_close_after", "read_lag")
"""The ``Faults`` fields that tune how a fault behaves, in provider seconds."""

VARIANTS: Mapping[str, Any] = {
    "apiinone_shape": "mixed",
    "apiinone_status_variants": True,
    "apiinone_url_location": "random",
    "apiinone_envelope_error_rate": 0.5,
    "error_variants": True,
    "runbase_extra_fields": True,
}
"""The ``SimulatorConfig`` settings that make it answer in every undocumented
variant a tolerant client must read (``SimulatorConfig.with_variants()``)."""


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_literal(name: str, value: object, alias: Any) -> None:
    allowed = get_args(alias)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


class Faults(msgspec.Struct, frozen=True, kw_only=True):
    """Per-request fault probabilities; all off by default.

    Each rate is the chance that one request is hit. Faults that fire before
    the request is processed (``outage``, ``create_5xx``, ``poll_5xx``,
    ``reset``) have no effect on the server; the ``*_after_*`` ones and
    ``truncated_json`` hit a request that *was* processed, which is what makes
    them dangerous for a client that retries creates.

    >>> Faults(poll_5xx=0.1, reset_after_create=0.02)  # doctest: +SKIP
    """

    poll_5xx: float = 0.0
    """GET answers 500, 502 or 503 with a small or empty body."""
    create_5xx: float = 0.0
    """POST answers 503 before doing anything: no run is created."""
    reset: float = 0.0
    """Connection reset before the request is processed (POST and GET)."""
    reset_after_create: float = 0.0
    """POST creates the run, then the connection is reset."""
    truncated_json: float = 0.0
    """A 200 answer whose JSON body is cut in half (POST: the run exists)."""
    create_500_after_effect: float = 0.0
    """POST creates the run, then answers a bare 500 with no body."""
    slow: float = 0.0
    """Chance that a request's answer is held back by ``slow_seconds``."""
    slow_seconds: float = 30.0
    """Provider seconds (scaled by ``time_scale``) a slow answer is held."""
    outage: tuple[float, float] | None = None
    """``(start, end)`` provider seconds since start: every request gets 503."""
    bom: float = 0.0
    """A JSON answer starts with a UTF-8 byte order mark (RFC 8259 lets clients ignore it)."""
    poll_redirect: float = 0.0
    """GET answers ``307`` to the same URL plus ``?redirected=1`` (same origin), once."""
    keepalive_close: float = 0.0
    """An answer says ``Connection: keep-alive``, then the server closes the
    connection ``keepalive_close_after`` later (a client reusing it sees a reset)."""
    keepalive_close_after: float = 1.0
    """Provider seconds (scaled by ``time_scale``) after the answer that connection closes."""
    applies_to: Set[ProtocolName] = frozenset({"runbase", "apiinone"})
    """Protocols the faults may hit; the other one is always healthy."""
    read_lag: float = 0.0
    """Provider seconds after its create during which a poll of a run answers 404:
    the provider's read side lags its write side (PROVIDERS.md). As
    ``SimulatorConfig.read_lag``, but as a fault: counted in ``stats.faults`` and
    limited to ``applies_to``."""
    other_run: float = 0.0
    """A poll is answered with another run's object (its id, status and URLs), as a
    mixed-up cache would; with no other run, the asked run's object under another id."""

    def __post_init__(self) -> None:
        for name in FAULT_RATES:
            _check_rate(name, getattr(self, name))
        if not self.read_lag >= 0:
            raise ValueError("read_lag must be >= 0 (provider seconds)")
        if self.slow_seconds < 0:
            raise ValueError("slow_seconds must be >= 0")
        if not self.keepalive_close_after >= 0:
            raise ValueError("keepalive_close_after must be >= 0")
        if self.outage is not None and not 0 <= self.outage[0] <= self.outage[1]:
            raise ValueError("outage must be (start, end) with 0 <= start <= end")
        for protocol in self.applies_to:
            _check_literal("applies_to", protocol, ProtocolName)


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the simulator does, in provider seconds and provider units.

    Immutable; derive a variant with :meth:`replace`::

        fast = SimulatorConfig(time_scale=0.05, seed=1)
        strict = fast.replace(rate_limit=5, retry_after="http-date")

    By default every answer has the shape the providers' documentation shows
    (API in One: the ``{"code", "message", "data"}`` envelope, statuses
    ``IN_PROGRESS`` / ``completed`` / ``failed``, URLs in ``output.urls``);
    :meth:`with_variants` turns on the undocumented variants seen in the wild.

    The account fields (``rate_limit``, ``rate_window``, ``credits``,
    ``quota``, ``spend_limit``, ``prices``) apply to every key on its own;
    ``keys`` overrides them for the keys it names (:class:`KeyConfig`).
    """

    time_scale: float = 1.0
    """Multiplies every duration and window (0.05: a 10 s window lasts 0.5 s)."""
    duration: DurationMode = "uniform"
    duration_min: float = 3.0
    duration_max: float = 10.0
    duration_median: float = 5.5
    duration_sigma: float = 0.35
    failure_rate: float = 0.0
    """Fraction of runs that end ``failed`` (refunded on Runbase, which documents it;
    kept charged on API in One, which does not)."""
    rate_limit: int | None = 20
    """Requests per key per window, POST and GET together; ``None``: no limit."""
    rate_window: float = 10.0
    count_rejected: bool = False
    """Also record 429-rejected requests, so a client that hammers stays out."""
    retry_after: RetryAfterMode = "seconds"
    api_keys: Set[str] | None = None
    """``None``: any key with the protocol's prefix; else exactly these keys."""
    credits: int | None = None
    """Per-key starting balance; ``None`` is unlimited. A create costs ``prices``."""
    quota: int | None = None
    """Most creates one key may make; ``None`` is unlimited."""
    spend_limit: int | None = None
    """Most credits one key may spend, net of refunds (403 past it); ``None``: no limit."""
    prices: dict[str, int] | None = None
    """Credits per run by quality; ``None``: API in One's published 10 medium, 28 high."""
    keys: dict[str, KeyConfig] = msgspec.field(default_factory=dict)
    """Per-key accounts overriding the fields above for the keys named."""
    blocked_keys: Set[str] = frozenset()
    """Keys answered 403 (as if their IP were not allowed)."""
    read_lag: float = 0.0
    """Provider seconds after a create during which polls of that run answer 404
    (the read side lags the write side)."""
    apiinone_shape: ApiInOneShape = "envelope"
    """``envelope`` is the documented one."""
    apiinone_status_variants: bool = False
    """Draw status words in other cases and spellings (``SUCCESS``, ``Running``...)."""
    apiinone_url_location: UrlLocation = "output.urls"
    apiinone_envelope_error_rate: float = 0.0
    """Chance that an API in One 4xx (not 429) comes as HTTP 200 + error envelope."""
    error_variants: bool = False
    """A failed run reports its error as a string or as ``{message, code}``, drawn
    per run; off: always the object."""
    runbase_extra_fields: bool = False
    """Runbase run objects also carry fields its docs do not show (``created_at``,
    the ``input`` echoed back); off: ``id``, ``model``, ``status``, ``output`` or ``error``."""
    images_per_run: int = 1
    relative_image_urls: bool = False
    """Image URLs as paths on the API's own host (``/files/...``), not absolute:
    a tolerant client resolves them against the API root of the run's lane."""
    seed: int | None = None
    faults: Faults = Faults()

    def __post_init__(self) -> None:
        if not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise ValueError("time_scale must be a positive finite number")
        _check_literal("duration", self.duration, DurationMode)
        _check_literal("retry_after", self.retry_after, RetryAfterMode)
        _check_literal("apiinone_shape", self.apiinone_shape, ApiInOneShape)
        _check_literal("apiinone_url_location", self.apiinone_url_location, UrlLocation)
        if not 0 < self.duration_min <= self.duration_max:
            raise ValueError("need 0 < duration_min <= duration_max")
        if self.duration_median <= 0 or self.duration_sigma < 0:
            raise ValueError("duration_median must be > 0 and duration_sigma >= 0")
        _check_rate("failure_rate", self.failure_rate)
        _check_rate("apiinone_envelope_error_rate", self.apiinone_envelope_error_rate)
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be >= 1 or None")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be > 0")
        if self.credits is not None and self.credits < 0:
            raise ValueError("credits must be >= 0 or None")
        if self.quota is not None and self.quota < 0:
            raise ValueError("quota must be >= 0 or None")
        if self.spend_limit is not None and self.spend_limit < 0:
            raise ValueError("spend_limit must be >= 0 or None")
        check_prices(self.prices)
        for key in self.keys:
            if not isinstance(key, str) or not key.strip():
                raise ValueError("keys must be named by non-empty strings")
        if not (self.read_lag >= 0 and math.isfinite(self.read_lag)):
            raise ValueError("read_lag must be a finite number of seconds >= 0")
        if self.images_per_run < 1:
            raise ValueError("images_per_run must be >= 1")

    def replace(self, **changes: Any) -> SimulatorConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return msgspec.structs.replace(self, **changes)

    def with_variants(self) -> SimulatorConfig:
        """A copy answering in every variant: both API in One shapes, status words
        in any case and spelling, URLs in any documented-or-seen place, errors
        under HTTP 200, failed-run errors as strings or objects, Runbase's
        undocumented fields (:data:`VARIANTS`)."""
        return self.replace(**VARIANTS)

    def limits(self, key: str) -> KeyLimits:
        """``key``'s account: its ``keys`` entry, with unset fields from this config."""
        own = self.keys.get(key, _NO_OVERRIDES)

        def pick(name: str) -> Any:
            value = getattr(own, name)
            return getattr(self, name) if value is msgspec.UNSET else value

        prices = pick("prices")
        return KeyLimits(
            rate_limit=pick("rate_limit"),
            rate_window=pick("rate_window"),
            credits=pick("credits"),
            quota=pick("quota"),
            spend_limit=pick("spend_limit"),
            prices=PROVIDER_PRICES if prices is None else prices,
        )

    def log_line(self) -> str:
        """This config as one line of JSON for a log, every key in it masked (``masked_key``).

        The simulator's keys are test keys, but a log line never holds a key:
        it may be a real one typed by mistake, and logs are shared.
        """
        data = msgspec.to_builtins(self)
        masks = _masks([*self.keys, *(self.api_keys or ()), *self.blocked_keys])
        data["keys"] = {masks[key]: own for key, own in data["keys"].items()}
        for name in ("api_keys", "blocked_keys"):
            if data[name] is not None:
                data[name] = sorted(masks[key] for key in data[name])
        return msgspec.json.encode(data).decode()

    def scaled(self, provider_seconds: float) -> float:
        """Wall-clock seconds that ``provider_seconds`` last in this simulation."""
        return provider_seconds * self.time_scale


_NO_OVERRIDES = KeyConfig()
#: The protocols' key prefixes (Runbase ``sk-``, API in One ``aio_``): shown, as they say whose.
_KEY_PREFIXES = ("sk-", "aio_")


def masked_key(key: str) -> str:
    """``key`` as a log line may show it: its prefix and, past 12 more characters, its last 4.

    ``sk-...Zt3Q`` for ``sk-CANARYrb7Q2x9Lm4Kp8Zt3Q``; ``sk-...`` for ``sk-test``
    (its last 4 would be most of it).
    """
    prefix = next((p for p in _KEY_PREFIXES if key.startswith(p)), "")
    rest = key[len(prefix) :]
    return f"{prefix}...{rest[-4:]}" if len(rest) >= 12 else f"{prefix}..."


def _masks(keys: list[str]) -> dict[str, str]:
    """Each key's ``masked_key``, numbered (``sk-...#2``) where two keys would look alike."""
    masks: dict[str, str] = {}
    used: set[str] = set()
    for key in keys:
        if key in masks:
            continue
        mask, number = masked_key(key), 1
        while mask in used:
            number += 1
            mask = f"{masked_key(key)}#{number}"
        masks[key] = mask
        used.add(mask)
    return masks
