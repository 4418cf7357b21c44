"""What a batch spent, per lane and in all; and what a dry run would spend at most, per lane.

Amounts are in each lane's price unit (``Lane.unit``): ``credits`` for a
provider's published prices, ``price units`` for prices the user gave (their
unit is theirs). Amounts of different units are never added: the total then
lists one sum per unit. A lane with
no price (Runbase publishes none) shows ``unknown``; the rules are the pool's
(``_pool/_spend``): created runs at their lane's price, refunded failures
(Runbase) not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from .._batch_plan import entry_lane
from .._exceptions import SpendCapError
from .._journal import Journal, JournalEntry
from .._manifest import price_unit
from .._pool import DEFAULT_QUALITY, Pool, SpendLedger, SpendSnapshot, same_lane

if TYPE_CHECKING:
    from .._session import Session

__all__ = [
    "JobSpend",
    "at_most_lines",
    "earlier_spend",
    "fit_under_cap",
    "pool_unit",
    "session_spend_lines",
    "spend_lines",
]


def _amount(value: float | None, unit: str = "") -> str:
    if value is None:
        return "unknown"
    return f"{value:g} {unit}".rstrip()


def pool_unit(lanes: Iterable[tuple[str, Mapping[str, float]]]) -> str:
    """The unit of lanes given as ``(provider, prices)``: ``credits`` if every price is published.

    One price the user gave makes it theirs: ``price units`` (``_manifest.price_unit``).
    """
    units = {price_unit(provider, q, p) for provider, prices in lanes for q, p in prices.items()}
    return "credits" if units == {"credits"} else "price units"


def _lane_name(label: str, provider: str, fingerprint: str) -> str:
    # The label alone when it is the default (provider:fingerprint); else both.
    lane = f"{provider}:{fingerprint}"  # as Run.lane and the manifest name it
    return lane if label.startswith(lane) else f"{label} ({lane})"


class JobSpend(NamedTuple):
    """A job's cap as the pool file sets it, and what earlier runs into its ``--out`` spent."""

    cap: float
    earlier: float


def spend_lines(
    spend: SpendSnapshot | None,
    providers: dict[str, str],
    unit: str = "price units",
    *,
    job: JobSpend | None = None,
) -> list[str]:
    """Lines for the end of a batch: the spend in all, then one per lane.

    ``providers`` maps a lane's fingerprint to its provider (for its name);
    ``unit`` names the amounts (``pool_unit``); ``job``: the cap the user set
    and what earlier runs spent of it, when this run had only the rest (the
    session's cap). Nothing when no lane created a run.
    """
    if spend is None or not any(lane.created or lane.uncertain for lane in spend.lanes):
        return []
    if spend.spent is None and len(spend.by_unit) > 1:
        # Never added across units: credits are not the user's price units.
        each = " + ".join(_amount(spent, name) for name, spent, _ in spend.by_unit)
        total = f"spend: {each} in all (different units, not added)"
    else:
        total = f"spend: {_amount(spend.spent, _unit_of(spend, unit))} in all"
    if job is not None and job.earlier and spend.cap is not None:
        # The session's cap is what was left: the user set the job's, the words say both.
        total = total.replace(" in all", " in this run", 1)
        total += (
            f" (cap {job.cap:g} for the job: {job.earlier:g} spent by earlier runs, "
            f"{spend.cap:g} left for this run)"
        )
    elif spend.cap is not None:
        total += f" (cap {spend.cap:g})"
    lines = [total]
    for lane in spend.lanes:
        name = _lane_name(lane.label, providers.get(lane.fingerprint, "?"), lane.fingerprint)
        created = lane.created - lane.refunded
        # A lane without prices has no unit of its own: the pool's is not its.
        own = lane.unit or (unit if lane.spent else "")
        part = f"  {name}: {_amount(lane.spent, own)} for {created} run(s)"
        if lane.refunded:
            part += f", {lane.refunded} failed and refunded"
        if lane.uncertain:
            part += f", {lane.uncertain} create(s) of unknown fate (maybe paid)"
        if lane.spent is None and lane.created:
            part += "; no price given for this lane"
        lines.append(part)
    return lines


def _unit_of(spend: SpendSnapshot, unit: str) -> str:
    # The one unit of the priced lanes, else the caller's word.
    return spend.by_unit[0][0] if len(spend.by_unit) == 1 else unit


def session_spend_lines(session: Session, job: JobSpend | None = None) -> list[str]:
    """``spend_lines`` of what ``session`` spent (``session.stats.spend``), per lane and in all.

    ``job``: the job's cap and earlier spend (``job_cap`` keeps them on ``args.job_spend``).
    """
    lanes = session.lanes
    providers = {lane.fingerprint: lane.provider for lane in lanes}
    unit = pool_unit((lane.provider, lane.prices) for lane in lanes)
    return spend_lines(session.stats.spend, providers, unit, job=job)


def at_most_lines(pool: Pool, qualities: Counter[str]) -> list[str]:
    """Lines for ``--dry-run`` over a pool: what the job would cost at most, per lane.

    Each lane's figure is the job sent wholly through it, at its price per
    quality (``qualities`` counts the prompts to send by quality);
    ``unknown`` where the lane has no price for a quality it would need.
    """
    lines = ["expected cost at most, per lane (the whole job at that lane's price):"]
    unit = pool_unit((lane.provider, lane.prices) for lane in pool.lanes)
    for lane in pool.lanes:
        prices = [lane.price(quality or DEFAULT_QUALITY) for quality in qualities]
        if any(price is None for price in prices):
            cost = "unknown (no price given)"
        else:
            cost = _amount(
                sum((lane.price(q or DEFAULT_QUALITY) or 0) * n for q, n in qualities.items()),
                lane.unit or unit,
            )
        name = _lane_name(lane.label, lane.provider, lane.fingerprint)
        lines.append(f"  {name}: {cost}")
    if pool.spend_cap is not None:
        # A capped pool has one unit (Pool refuses mixed ones).
        unit = next((lane.unit for lane in pool.lanes if lane.unit), unit)
        lines.append(
            f"spend cap: {pool.spend_cap:g} {unit} (no create goes out that could pass it)"
        )
    return lines


def earlier_spend(journal: Journal, pool: Pool) -> float:
    """What earlier runs of a job spent, or may have, by its journal: a cap is the job's.

    Succeeded runs at the cost their manifest line gave; runs created and not
    finished (a rerun attaches them: paid) and creates of unknown fate (maybe
    paid) at their lane's price for their quality, or, for a lane no longer
    in ``pool``, the dearest lane's. Failed runs and prompts never created
    cost nothing (Runbase refunds failures; a refused create made no run).
    """
    total = 0.0
    for entry in journal:
        done = entry.entry
        if done is not None and entry.state == "finished":
            if done.status == "succeeded":
                total += done.cost if done.cost is not None else _price(entry, pool)
            elif done.status == "unknown":
                total += _price(entry, pool)
        elif entry.state in ("created", "intent"):
            total += _price(entry, pool)
    return total


def _price(entry: JournalEntry, pool: Pool) -> float:
    quality = (entry.input.quality if entry.input is not None else None) or DEFAULT_QUALITY
    lane = entry_lane(entry)
    own = [spec for spec in pool.lanes if lane is not None and same_lane(lane, spec.name)]
    prices = [spec.price(quality) for spec in (own or pool.lanes)]
    return max((price for price in prices if price is not None), default=0.0)


def fit_under_cap(pool: Pool, cap: float | None, qualities: Iterable[str | None]) -> int | None:
    """How many creates of ``qualities`` (in the batch's order) a run could send under ``cap``.

    ``cap`` is this run's, what ``job_cap`` left of the job's (``None``: no
    cap, every one goes: returns ``None``). Reserved, one by one, in a
    ``SpendLedger`` of the pool with that cap: the ledger's own rule, which
    refuses the first create that would pass the cap, and that stops the
    batch. Each is reserved on the cheapest lane for its quality, so this is
    the most a real run sends; ``0`` exactly when the first does not fit
    anywhere. A quality no lane prices ends the count (a capped pool prices
    every quality: ``Pool`` checks).
    """
    if cap is None:
        return None
    ledger, sent = SpendLedger(pool.lanes, cap=cap), 0
    for quality in qualities:
        priced = [
            (price, i)
            for i, lane in enumerate(pool.lanes)
            if (price := lane.price(quality or DEFAULT_QUALITY)) is not None
        ]
        if not priced or isinstance(ledger.reserve(min(priced)[1], quality), SpendCapError):
            break
        sent += 1
    return sent
