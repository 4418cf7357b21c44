"""Spend: what a pool's runs cost, per lane and in all, and the optional cap.

The rules (issue 19, "Spend"):

* A create is **reserved** at its lane's price before it is sent:
  ``reserve(lane, quality)`` returns a ``SpendToken``, or a ``SpendCapError``
  (nothing sent) when committed + reserved + this price would pass the cap.
* When the provider answers with a run, the token is **committed**: the run
  is paid at its lane's price (providers charge at create).
* When the create was certainly **not created** (an error answer that says
  so, or a request that never left), the token is **released**: it never
  counts again.
* A create **resent** after an attempt of uncertain fate
  (``resend_uncertain_creates=True``) is reserved anew, ``resend(token)``,
  while that attempt stays reserved; if both do not fit, the resend is refused.
* A create of **uncertain** fate (``UncertainCreateError``) stays reserved:
  it may have been paid, so it keeps counting against the cap.
  ``uncertain(token)`` marks it so ``stats`` can say so; a later answer can
  still ``commit`` or ``release`` it.
* A created run that **failed** is given back by ``refund(token)`` on a
  provider that refunds failures (Runbase, per its docs); on API in One,
  which does not say, it stays spent.

Amounts are kept as exact fractions (prices may be decimals such as 0.02):
the cap check never drifts with float rounding. A lane whose price is unknown
counts its runs but not their cost; a pool with a cap has every price (the
``Pool`` refuses otherwise). The ledger is plain bookkeeping (no I/O, no
clock), owned by one event loop.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from .._exceptions import SpendCapError
from .._stats import SessionStats
from ._lanes import DEFAULT_QUALITY, Lane

__all__ = ["CreateSpend", "LaneSpend", "PoolStats", "SpendLedger", "SpendSnapshot", "SpendToken"]


#: Each ledger's number, so a token is only ever moved by the ledger that made it.
_LEDGERS = itertools.count(1)


class _Stage(enum.Enum):
    RESERVED = "reserved"
    UNCERTAIN = "uncertain"
    COMMITTED = "committed"
    RELEASED = "released"
    REFUNDED = "refunded"


@dataclass(slots=True, eq=False)
class SpendToken:
    """One create's reservation: its lane (index in the pool), quality and price.

    The token carries its own stage, so the ledger keeps nothing per create
    once its holder lets go of it: a long-lived session's ledger stays the
    size of its lanes, however many runs it has made.
    """

    id: int
    lane: int
    quality: str
    price: float | None
    _ledger: int = field(repr=False)
    _stage: _Stage = field(default=_Stage.RESERVED, repr=False)


@dataclass(frozen=True, slots=True)
class LaneSpend:
    """One lane's spend at one moment.

    ``created``: runs created (committed, refunded included); ``refunded``:
    created runs that failed and were given back; ``in_flight``: creates
    reserved and not yet answered; ``uncertain``: creates of unknown fate
    (counted as maybe paid); ``spent``: the cost of created runs net of
    refunds, ``reserved``: what in-flight and uncertain creates may still
    cost (both ``None`` when the lane's price is unknown); ``unit`` the unit
    of those amounts (``Lane.unit``: ``"credits"``, ``"price units"``, or
    ``None`` without a price).
    """

    label: str
    fingerprint: str
    created: int
    refunded: int
    in_flight: int
    uncertain: int
    spent: float | None
    reserved: float | None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class SpendSnapshot:
    """A frozen view of the spend for ``session.stats``.

    ``lanes`` in pool order; ``spent`` / ``reserved`` in all (``None`` if a
    lane with an unknown price created or reserved a run, or if lanes priced
    in different units both did: credits are never added to the user's
    price units); ``by_unit`` the totals per unit, ``(unit, spent,
    reserved)``, of the lanes with a price; ``cap`` the spend cap (``None``:
    no cap; a capped pool has one unit); ``headroom`` what may still be
    reserved under it (``None`` without a cap).
    """

    lanes: tuple[LaneSpend, ...]
    spent: float | None
    reserved: float | None
    cap: float | None
    headroom: float | None
    by_unit: tuple[tuple[str, float, float], ...] = ()


class SpendLedger:
    """Per-lane and total spend of a pool, with an optional cap (module docstring).

    ``SpendLedger(lanes, cap=None)``: ``lanes`` are the pool's ``Lane``
    objects in pool order; ``cap`` the pool's ``spend_cap``. Tokens are
    single-use: committing, releasing or refunding a token in a stage it
    cannot leave raises ``ValueError`` (a bug in the caller, not a user
    error), so nothing is ever counted twice. Every operation is O(1).
    """

    __slots__ = ("_cap", "_count", "_id", "_ids", "_lanes", "_sum", "_unpriced")

    def __init__(self, lanes: Sequence[Lane], *, cap: float | None = None) -> None:
        self._lanes = tuple(lanes)
        self._cap = None if cap is None else Fraction(str(cap))
        self._ids = itertools.count(1)
        self._id = next(_LEDGERS)
        # Per lane and stage: how many tokens, and their amount (exact).
        self._count = [dict.fromkeys(_Stage, 0) for _ in self._lanes]
        self._sum = [dict.fromkeys(_Stage, Fraction(0)) for _ in self._lanes]
        # Per lane: tokens of unknown price that are, or may be, paid.
        self._unpriced = [0] * len(self._lanes)

    def _total(self, stages: frozenset[_Stage]) -> Fraction:
        return sum((sums[st] for sums in self._sum for st in stages), Fraction(0))

    def headroom(self) -> float | None:
        """What may still be reserved under the cap (``None`` without a cap)."""
        if self._cap is None:
            return None
        return float(self._cap - self._total(_PAID | _HELD))

    def refusal(self, price: float, *, label: str, quality: str | None = None) -> SpendCapError:
        """The ``SpendCapError`` for a create of ``price`` on lane ``label`` that does not fit."""
        cap = float(self._cap) if self._cap is not None else float("inf")
        committed, reserved = float(self._total(_PAID)), float(self._total(_HELD))
        what = f"a {quality} create" if quality else "a create"
        return SpendCapError(
            f"{what} on lane {label!r} ({price:g}) could take the spend past the cap of "
            f"{cap:g} (spent {committed:g}, reserved {reserved:g}); it was not sent",
            cap=cap,
            committed=committed,
            reserved=reserved,
            price=price,
        )

    # -- the token's life ------------------------------------------------------------------

    def reserve(self, lane: int, quality: str | None) -> SpendToken | SpendCapError:
        """Reserve one create on lane ``lane`` at ``quality`` (``None``: medium).

        Returns the token, or (nothing reserved) a ``SpendCapError`` when
        committed + reserved + the lane's price would pass the cap.
        """
        quality = quality or DEFAULT_QUALITY
        price = self._lanes[lane].price(quality)
        amount = Fraction(0) if price is None else Fraction(str(price))
        if self._cap is not None and self._total(_PAID | _HELD) + amount > self._cap:
            return self.refusal(float(amount), label=self._lanes[lane].label, quality=quality)
        token = SpendToken(next(self._ids), lane, quality, price, self._id)
        self._count[lane][_Stage.RESERVED] += 1
        self._sum[lane][_Stage.RESERVED] += amount
        if price is None:
            self._unpriced[lane] += 1
        return token

    def _move(self, token: SpendToken, allowed: frozenset[_Stage], to: _Stage) -> None:
        stage = token._stage
        if token._ledger != self._id or not 0 <= token.lane < len(self._lanes):
            raise ValueError(f"spend token {token.id} is not from this ledger")
        if stage not in allowed:
            raise ValueError(f"spend token {token.id} is {stage.value}; cannot become {to.value}")
        amount = Fraction(0) if token.price is None else Fraction(str(token.price))
        token._stage = to
        self._count[token.lane][stage] -= 1
        self._sum[token.lane][stage] -= amount
        self._count[token.lane][to] += 1
        self._sum[token.lane][to] += amount
        if token.price is None and to in _GONE:
            self._unpriced[token.lane] -= 1

    def commit(self, token: SpendToken) -> None:
        """The create made a run: it is paid at its lane's price."""
        self._move(token, _HELD, _Stage.COMMITTED)

    def release(self, token: SpendToken) -> None:
        """The create certainly made no run: the reservation is dropped for good."""
        self._move(token, _HELD, _Stage.RELEASED)

    def uncertain(self, token: SpendToken) -> None:
        """The create's fate is unknown: it stays reserved (it may have been paid)."""
        self._move(token, frozenset({_Stage.RESERVED}), _Stage.UNCERTAIN)

    def refund(self, token: SpendToken) -> bool:
        """A created run failed: give its cost back if its lane's provider refunds failures.

        Returns True if refunded (Runbase), False if it stays spent (API in
        One: refunds not documented). The token must be committed.
        """
        if self._lanes[token.lane].refunds_failed:
            self._move(token, _PAID, _Stage.REFUNDED)
            return True
        if token._ledger != self._id or token._stage is not _Stage.COMMITTED:
            raise ValueError(f"spend token {token.id} is not committed; cannot be refunded")
        return False

    def resend(self, token: SpendToken) -> SpendToken:
        """``token``'s attempt may have made a run, and the create is sent again.

        That attempt stays reserved, ``uncertain`` (maybe paid), and the resend
        is reserved anew on the same lane: returns its token. Raises the
        ``SpendCapError`` of the resend (``token`` left as it is) when the cap
        cannot hold both: the resend is then not sent.
        """
        fresh = self.reserve(token.lane, token.quality)
        if isinstance(fresh, SpendCapError):
            raise fresh
        self.uncertain(token)
        return fresh

    def refund_created(self, lane: int, quality: str | None) -> bool:
        """A run created on lane ``lane`` at ``quality`` failed: ``refund`` without its token.

        The token of a created run need not be kept for its whole life (a
        session with 10,000 runs in flight would hold 10,000 of them): its
        lane and quality say what it cost. Returns True if refunded, False
        when the lane's provider does not refund failures or no run created
        on it is left to refund.
        """
        if not self._lanes[lane].refunds_failed or not self._count[lane][_Stage.COMMITTED]:
            return False
        price = self._lanes[lane].price(quality or DEFAULT_QUALITY)
        amount = Fraction(0) if price is None else Fraction(str(price))
        self._count[lane][_Stage.COMMITTED] -= 1
        self._sum[lane][_Stage.COMMITTED] -= amount
        self._count[lane][_Stage.REFUNDED] += 1
        self._sum[lane][_Stage.REFUNDED] += amount
        return True

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> SpendSnapshot:
        """The spend now, per lane and in all (a frozen copy)."""
        lanes = []
        for index, lane in enumerate(self._lanes):
            count, sums = self._count[index], self._sum[index]
            unpriced = self._unpriced[index] > 0
            lanes.append(
                LaneSpend(
                    label=lane.label,
                    fingerprint=lane.fingerprint,
                    created=count[_Stage.COMMITTED] + count[_Stage.REFUNDED],
                    refunded=count[_Stage.REFUNDED],
                    in_flight=count[_Stage.RESERVED],
                    uncertain=count[_Stage.UNCERTAIN],
                    spent=None if unpriced else float(sums[_Stage.COMMITTED]),
                    reserved=None
                    if unpriced
                    else float(sums[_Stage.RESERVED] + sums[_Stage.UNCERTAIN]),
                    unit=lane.unit,
                )
            )
        by_unit: dict[str, list[Fraction]] = {}
        for index, lane in enumerate(self._lanes):
            if lane.unit is not None:
                sums = self._sum[index]
                totals = by_unit.setdefault(lane.unit, [Fraction(0), Fraction(0)])
                totals[0] += sums[_Stage.COMMITTED]
                totals[1] += sums[_Stage.RESERVED] + sums[_Stage.UNCERTAIN]
        # Adding zero of another unit is honest; adding credits to price units is not.
        units = [unit for unit, (spent, held) in by_unit.items() if spent or held]
        known = not any(self._unpriced) and len(units) <= 1
        return SpendSnapshot(
            lanes=tuple(lanes),
            spent=float(self._total(_PAID)) if known else None,
            reserved=float(self._total(_HELD)) if known else None,
            cap=None if self._cap is None else float(self._cap),
            headroom=self.headroom(),
            by_unit=tuple((unit, float(sp), float(rs)) for unit, (sp, rs) in by_unit.items()),
        )


class CreateSpend:
    """The spend of one create bound to one lane: a token per attempt that may make a run.

    ``CreateSpend(ledger, token)``: ``token`` is the create's reservation. All
    tokens but the ``last`` are of attempts of uncertain fate, kept as maybe
    paid (``resend``). ``sent`` / ``settled`` follow whether an attempt is out whose fate is
    unknown, so that a create cancelled then is kept as maybe paid, and one
    cancelled while no attempt is out is released (``cancelled``); an attempt
    still out when its caller was cancelled releases its token when it
    settles with certainly no run.
    """

    __slots__ = ("__weakref__", "_cancelled", "_ledger", "_out", "tokens")

    def __init__(self, ledger: SpendLedger, token: SpendToken) -> None:
        self._ledger = ledger
        self.tokens = [token]
        self._out = False
        self._cancelled = False

    @property
    def last(self) -> SpendToken:
        """The token of the latest attempt."""
        return self.tokens[-1]

    @property
    def resent(self) -> bool:
        """Whether an earlier attempt may have made a run (the create must not move)."""
        return len(self.tokens) > 1

    def resend(self) -> None:
        """The attempt before may have made a run: the next is reserved anew
        (``SpendLedger.resend``: raises ``SpendCapError``, and nothing is sent)."""
        self.tokens.append(self._ledger.resend(self.tokens[-1]))

    def sent(self) -> None:
        """An attempt is on its way out: until it settles, its fate is unknown."""
        self._out = True

    def settled(self) -> None:
        """The latest attempt certainly made no run: nothing of it is outstanding."""
        self._out = False
        if self._cancelled and self.last._stage is _Stage.UNCERTAIN:
            self._ledger.release(self.last)  # the caller left while it was out

    def cancelled(self) -> None:
        """The create's caller is gone: maybe paid while an attempt is out, else released."""
        self._cancelled = True
        if self._out:
            self._ledger.uncertain(self.last)
        else:
            self._ledger.release(self.last)


_PAID = frozenset({_Stage.COMMITTED})
_HELD = frozenset({_Stage.RESERVED, _Stage.UNCERTAIN})
_GONE = frozenset({_Stage.RELEASED, _Stage.REFUNDED})


class PoolStats(SessionStats):
    """``SessionStats`` plus the pool's spend: ``stats.spend`` (a ``SpendSnapshot``).

    ``spend.lanes`` holds each lane's runs created, refunded, in flight and
    uncertain, and what they cost (``spent``, ``reserved``) in the lanes'
    price unit (``None`` where a price is unknown); ``spend.spent`` /
    ``spend.reserved`` are the totals, ``spend.cap`` / ``spend.headroom``
    the spend cap and what is left under it.
    """

    __slots__ = ("_ledger",)

    def __init__(self) -> None:
        super().__init__()
        self._ledger: SpendLedger | None = None

    @property
    def spend(self) -> SpendSnapshot | None:
        """The spend now, per lane and in all; ``None`` before the session is built."""
        return None if self._ledger is None else self._ledger.snapshot()

    def as_dict(self) -> dict[str, int]:
        """The counters (not the lateness samples nor the spend) as a plain dict."""
        return {name: getattr(self, name) for name in SessionStats.__slots__ if name != "lateness"}
