"""The poll planner's rules as tables on plain numbers (no loop, no clock, no I/O).

Each rule of ``gptimage_async._planner`` is a pure function of numbers and of
a real ``DurationModel``; the tables say where polls go in each case.
"""

from __future__ import annotations

import itertools
import math

import pytest

from gptimage_async._durations import DurationModel
from gptimage_async._planner import (
    COLD_FIRST_RTTS,
    COLD_GROWTH,
    COLD_RELEASE,
    COLD_SCOUTS,
    COLD_SPECULATIVE_GROWTH,
    FINAL_POLL_LEAD,
    GAP_SHARE_KEEP,
    MATURITY_PRIOR,
    MAX_NOT_FOUND,
    MIN_STEP,
    NOT_FOUND_GRACE,
    NOT_FOUND_POLLS,
    PLANNED_DONE_SHARE,
    SHARE_KEEP,
    SHARE_OF_RATE,
    SHARE_YOUNG,
    SPREAD_KEEP,
    TAIL_GROWTH,
    WINDOW_KEEP,
    PollState,
    TailCohort,
    deadline_poll_at,
    fair_share_pick,
    not_found_ceiling,
    not_found_is_final,
    plan_age,
    poll_share,
    retry_ceiling,
    share_age,
    should_park,
    speculative_age,
    window_gap,
)

RTT = 0.05


def uniform_model(model: DurationModel | None = None, n: int = 400) -> DurationModel:
    """Runs of 3-10 s, each seen done within 1 ms of finishing, in no particular order.

    (Sorted by duration they would read as a provider slowing down, which the
    model's change detector is there to catch.)
    """
    model = DurationModel() if model is None else model
    for i in range(n):
        k = i * 7919 % n  # a fixed permutation: 7919 is prime to n
        d = 3.0 + 7.0 * (k + 0.5) / n
        model.observe(d - 0.001, d)
    return model


# -- planned polls -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "polls", "interval", "expected"),
    [
        # First poll after a few create round trips ...
        (0.0, 0, 0.01, COLD_FIRST_RTTS * RTT),
        # ... then geometric growth ...
        (0.2, 1, 0.01, 0.2 * COLD_GROWTH),
        (0.4, 2, 0.01, 0.4 * COLD_GROWTH),
        (1.6, 4, 0.01, 1.6 * COLD_GROWTH),
        # ... never closer than one slot of the budget.
        (0.0, 0, 1.0, 1.0),
        (0.2, 1, 0.5, 0.2 + 0.5),
    ],
)
def test_cold_start_probes_geometrically_from_the_rtt(
    last: float, polls: int, interval: float, expected: float
) -> None:
    age = plan_age(DurationModel(), last_pending_age=last, polls=polls, interval=interval, rtt=RTT)
    assert age == pytest.approx(expected)


@pytest.mark.parametrize(
    ("cold_floor", "cold_scale", "expected"),
    [
        (0.0, 3.0, COLD_RELEASE * 3.0),  # a run done by 3 s: nearly all are done by twice that
        (0.0, 0.0, COLD_RELEASE * 3.0),  # no scale yet: the longest run observed gives it
        (8.0, 3.0, 8.0),  # but never before a run was seen still going
    ],
)
def test_cold_start_never_plans_before_what_earlier_runs_showed(
    cold_floor: float, cold_scale: float, expected: float
) -> None:
    model = DurationModel()
    model.observe(2.0, 3.0)  # one run done by 3 s: not enough to be ready
    assert not model.ready
    age = plan_age(
        model,
        last_pending_age=0.0,
        polls=0,
        interval=0.01,
        rtt=RTT,
        cold_floor=cold_floor,
        cold_scale=cold_scale,
    )
    assert age == pytest.approx(expected)


@pytest.mark.parametrize(
    ("last", "polls", "expected"),
    [
        # PLANNED_DONE_SHARE of all runs are done by 9.65 s (3 + 0.95 * 7) ...
        (0.0, 0, 3.0 + PLANNED_DONE_SHARE * 7.0),
        # ... of runs still going at 5 s, by 5 + 0.95 * 5 ...
        (5.0, 1, 5.0 + PLANNED_DONE_SHARE * 5.0),
        # ... and always at least MIN_STEP of the median (6.5 s) after the last poll.
        (9.9, 3, 9.9 + MIN_STEP * 6.5),
        # Past everything seen: the gap grows by TAIL_GROWTH.
        (20.0, 5, 20.0 * TAIL_GROWTH),
    ],
)
def test_with_a_model_a_planned_poll_is_its_conditional_quantile(
    last: float, polls: int, expected: float
) -> None:
    model = uniform_model()
    assert model.ready
    age = plan_age(model, last_pending_age=last, polls=polls, interval=0.01, rtt=RTT)
    assert age == pytest.approx(expected, abs=0.15)


# -- speculative polls ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "polls", "in_flight", "interval", "expected"),
    [
        # A few runs in flight, nothing learned: half the planned first poll ...
        (0.0, 0, 1, 0.01, COLD_FIRST_RTTS * RTT / 2),
        # ... then, within a window (here 0.2 s), as many even polls as it holds ...
        (0.2, 1, 1, 0.1, 0.2 + 2.0 / (20.0 - WINDOW_KEEP)),
        # ... past it, fine geometric steps, at least a slot apart ...
        (1.0, 3, 1, 0.01, 1.0 * COLD_SPECULATIVE_GROWTH),
        (2.0, 5, 1, 0.1, 2.0 + 0.2),
        # ... and nothing at all for a crowd that should wait for the model.
        (0.0, 0, COLD_SCOUTS + 1, 0.01, math.inf),
    ],
)
def test_cold_speculative_polls(
    last: float, polls: int, in_flight: int, interval: float, expected: float
) -> None:
    age = speculative_age(
        DurationModel(),
        last_pending_age=last,
        polls=polls,
        in_flight=in_flight,
        rtt=RTT,
        interval=interval,
        slots_per_window=20.0,
    )
    assert age == pytest.approx(expected)


def test_speculative_polls_spread_over_the_likely_finish() -> None:
    # 20 per 10 s: a window longer than the runs, as with Runbase's limit.
    interval, slots = 0.5, 20.0
    args = {"in_flight": 1, "rtt": RTT, "interval": interval, "slots_per_window": slots}
    # One finished run gives the scale: speculation starts before its duration.
    one = DurationModel()
    one.observe(4.9, 5.0)
    assert not one.ready
    assert 0.0 < speculative_age(one, last_pending_age=0.0, polls=0, **args) < 4.9
    # A mature model of 3-10 s runs: nothing before about 3 s, then the
    # window's slots spread over 3-10 s, closer together than the even pace.
    model = uniform_model()
    assert 2.5 < speculative_age(model, last_pending_age=0.0, polls=0, **args) < 3.2
    step = speculative_age(model, last_pending_age=5.0, polls=1, **args) - 5.0
    assert step == pytest.approx((10.0 - 3.0) / (slots - SPREAD_KEEP), rel=0.1)
    assert step < interval


def cold_probe(model: DurationModel, *, until: float, in_flight: int = 1) -> list[float]:
    """The ages of one run's speculative polls under 20 requests per 10 s, if still going."""
    args = {"in_flight": in_flight, "rtt": RTT, "interval": 0.5, "slots_per_window": 20.0}
    ages, last = [], 0.0
    while last < until:
        last = speculative_age(model, last_pending_age=last, polls=len(ages), **args)
        ages.append(last)
    return ages


def test_a_first_run_alone_is_probed_as_densely_as_a_window_holds() -> None:
    # Nothing learned, 20 requests per 10 s: the create and a spare slot leave 18
    # polls a window. Polls at the even pace (0.5 s) would fill it a slot before
    # its end, and a run ending there would wait most of a slot more.
    ages = cold_probe(DurationModel(), until=14.0)
    dense = 10.0 / (20.0 - WINDOW_KEEP)
    steps = [b - a for a, b in itertools.pairwise(ages)]
    assert ages[0] == pytest.approx(dense)
    assert [a for a in ages if a <= 10.0] == pytest.approx([dense * k for k in range(1, 19)])
    assert all(step == pytest.approx(dense) for step in steps[:17])
    # Past a window the gaps grow: a long run costs polls by the log of its duration.
    late = [b / a for a, b in itertools.pairwise(ages) if a > 10.5]
    assert late and all(r == pytest.approx(COLD_SPECULATIVE_GROWTH) for r in late)


def test_a_young_model_alone_polls_as_densely_as_the_window_allows_no_denser() -> None:
    # Three runs took 6.0-6.3 s: a narrow estimate, not ready. One run alone is
    # polled from the earliest age it may end, evenly, at what a window holds
    # from there; not at the estimate's narrow spread, which fills the window
    # early and leaves a hole of a second where the run ends.
    young = band_model((6.0, 6.3, 3))
    assert not young.ready
    ages = cold_probe(young, until=9.0)
    earliest = ages[0]
    assert 3.0 < earliest < 4.0  # MATURITY_PRIOR: 3 / (3 + 2) of the 2% quantile
    step = (10.0 - earliest) / (20.0 - WINDOW_KEEP)
    assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(ages))
    # A window then holds the create, its polls and a spare slot.
    assert len([a for a in ages if a < 10.0]) <= 20 - WINDOW_KEEP
    # With other runs in flight the window is not this run's alone: the spread
    # rule stands (the widened estimate's 2%-98% over a window's slots less a few).
    crowd = cold_probe(young, until=9.0, in_flight=2)
    maturity = 3 / (3 + MATURITY_PRIOR)
    spread = young.quantile(0.98) / maturity - young.quantile(0.02) * maturity
    assert crowd[0] == pytest.approx(earliest)
    assert crowd[1] - crowd[0] == pytest.approx(spread / (20.0 - SPREAD_KEEP))


# -- fair-share polls ----------------------------------------------------------------


def band_model(*bands: tuple[float, float, int]) -> DurationModel:
    """Runs evenly spread over each band ``(lo, hi, count)``, seen done within 1 ms, mixed."""
    durations = [lo + (hi - lo) * (i + 0.5) / n for lo, hi, n in bands for i in range(n)]
    model = DurationModel()
    for i in range(len(durations)):
        d = durations[i * 7919 % len(durations)]  # 7919 is prime to the counts used here
        model.observe(d - 0.001, d)
    return model


def polls_from(model: DurationModel, share: float, *, until: float) -> list[float]:
    """The ages of one run's fair-share polls, if it is still going at each."""
    ages, last = [], 0.0
    while last < until:
        last = share_age(model, last_pending_age=last, share=share)
        ages.append(last)
    return ages


def test_the_budget_share_follows_the_load() -> None:
    # Runs of 8-10 s (mean 9) under 20 requests per 10 s (2 per second).
    model = band_model((8.0, 10.0, 400))
    share = {n: poll_share(model, rate=2.0, in_flight=n, slots_per_window=20.0) for n in (1, 6, 9)}
    # 6 in flight: Little's law gives SHARE_OF_RATE x 2 x 9 / 6 requests each (2.7 of
    # the 3), one the create: k = 1.7 polls, which split the distribution in 2k - 1
    # even parts (they cost (2k - 1 + 1) / 2 = k polls a run).
    k = SHARE_OF_RATE * 2.0 * 9.0 / 6 - 1.0
    assert share[6] == pytest.approx(1 / (2 * k - 1), rel=0.03)
    # 9 in flight: 2 requests each, a create and one poll: the planned poll only.
    assert share[9] == PLANNED_DONE_SHARE
    # One run alone: as many parts as one window holds (less SHARE_KEEP), not the
    # 17 polls the average would give: the sliding window forbids borrowing more.
    assert share[1] == pytest.approx(1 / (20.0 - SHARE_KEEP), rel=0.02)


def test_a_fair_share_poll_goes_where_the_probability_mass_is() -> None:
    # 80% of runs take 3-4 s, 20% take 9-10 s: nothing ends in between.
    model = band_model((3.0, 4.0, 320), (9.0, 10.0, 80))
    ages = polls_from(model, 0.1, until=10.0)
    # Even parts of the distribution: 8 polls where 80% of runs end, 2 where 20% do ...
    assert len([a for a in ages if 2.9 <= a <= 4.1]) >= 7
    assert 1 <= len([a for a in ages if 8.9 <= a <= 10.1]) <= 3
    # ... and across the 5 s where no run ends, a single one (the smoothed
    # estimate's edge), where an even split of 3-10 s would put seven.
    assert len([a for a in ages if 4.3 < a < 8.7]) <= 1
    # On one even band, the polls are evenly spaced over it: 2 s in 5 parts.
    even = [a for a in polls_from(band_model((8.0, 10.0, 400)), 0.2, until=10.0) if a < 10.0]
    steps = [b - a for a, b in itertools.pairwise(even)]
    assert even[0] > 7.8 and steps == [pytest.approx(0.4, abs=0.08)] * len(steps)


def test_where_the_window_binds_polls_go_no_closer_than_it_allows() -> None:
    # One run at a time on an idle budget (20 requests per 10 s), runs of 3-10 s:
    # the window, not the share, bounds its polls. A window holds the create, the
    # limiter's spare slot kept free and 7 s of polls: 18, 7 / 18 s apart at most.
    model = uniform_model()
    idle = {"rate": 2.0, "slots_per_window": 20.0, "window": 10.0}
    gap = window_gap(model, in_flight=1, **idle)
    assert gap == pytest.approx(7.0 / (20.0 - WINDOW_KEEP), rel=0.04)
    # Spaced so, a run may take more parts of its likely finish: a window keeps
    # GAP_SHARE_KEEP slots from the fair share, not SHARE_KEEP.
    share = poll_share(model, in_flight=1, **idle)
    fits = min(20.0, 2.0 * model.quantile(0.98))
    assert share == pytest.approx(1 / (fits - GAP_SHARE_KEEP))
    assert poll_share(model, rate=2.0, in_flight=1, slots_per_window=20.0) == pytest.approx(
        1 / (fits - SHARE_KEEP)
    )
    ages, last = [], 0.0
    while last < 10.0:
        last = share_age(model, last_pending_age=last, share=share, gap=gap)
        ages.append(last)
    steps = [b - a for a, b in itertools.pairwise(ages)]
    # Never denser than the window allows (the smoothed estimate's edges would
    # pack them closer, and the next run's first polls would wait for slots) ...
    assert min(steps) >= gap - 1e-9
    # ... and all where runs end: the first at 3 s or after, none more than the
    # window holds for a 10 s run, the last gap before 10 s no wider than two.
    inside = [a for a in ages if a <= 10.0]
    assert inside[0] >= 2.9 and len(inside) <= 20.0 - WINDOW_KEEP
    assert 10.0 - inside[-1] <= 2 * gap
    # Several runs in flight (a web app at 1/4 of the budget): the share binds, no gap.
    assert window_gap(model, in_flight=4, **idle) == 0.0
    assert window_gap(model, in_flight=1, rate=2.0, slots_per_window=20.0, window=0.0) == 0.0
    # A narrow band (3-4 s): each run's parts are as many as its 4 s earn, already
    # fewer than the window holds: no gap, the polls stay where the runs end.
    assert window_gap(band_model((3.0, 4.0, 400)), in_flight=1, **idle) == 0.0


def test_a_spare_slot_never_polls_one_run_closer_than_the_window_gap() -> None:
    model = uniform_model()
    args = {"default": "none", "rate": 2.0, "slots_per_window": 20.0}
    gap = window_gap(model, rate=2.0, in_flight=1, slots_per_window=20.0, window=10.0)
    bound = 0
    for last in (3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.0, 9.5, 9.8):
        runs = [("a", 0.0, PollState(last_pending_age=last))]
        when, _ = fair_share_pick(model, runs, now=last, window=10.0, **args)
        assert when >= last + gap - 1e-9
        # Without the window, its share alone sets the next poll: sooner at the
        # estimate's end (it packs its last parts there).
        alone, _ = fair_share_pick(model, runs, now=last, **args)
        bound += alone < when - 0.01
    assert bound >= 1


def test_the_first_polls_of_runs_are_staggered_by_their_phase() -> None:
    model = band_model((8.0, 10.0, 400))
    firsts = [share_age(model, last_pending_age=0.0, share=0.2, phase=p) for p in (0.25, 0.5, 1.0)]
    assert firsts == sorted(firsts) and firsts[0] < firsts[-1] - 0.2
    assert firsts[-1] == pytest.approx(8.4, abs=0.1)


def test_a_young_model_keeps_polling_evenly_below_the_runs_it_has_seen() -> None:
    # A session's first runs happened to take 6-7.5 s; the provider says 3-10 s.
    young = band_model((6.0, 7.5, 6))
    assert young.observed < SHARE_YOUNG
    share = 0.25
    even = (young.quantile(0.98) - young.quantile(0.02)) * share
    first = share_age(young, last_pending_age=0.0, share=share)
    assert first < 5.0  # early, by MATURITY_PRIOR: few runs say little of the shortest
    ages = polls_from(young, share, until=7.5)
    steps = [b - a for a, b in itertools.pairwise(ages) if b < young.quantile(0.98)]
    # No gap between the early first poll and the ages it has seen runs end: a run
    # shorter than any seen yet is found within the even spacing, not at ~6 s.
    assert max(steps) == pytest.approx(even, rel=0.05)
    assert len([a for a in ages if first < a < 6.0]) >= 3
    # The same runs with more seen: polls go where the mass is, the even spacing
    # only caps the gaps where the model has some (the mature rule).
    mature = band_model((6.0, 7.5, SHARE_YOUNG + 12))
    later = polls_from(mature, share, until=7.5)
    assert len([a for a in later if a < 5.5]) <= 1


def test_a_spare_slot_goes_to_the_run_most_likely_done_since_its_last_poll() -> None:
    model = band_model((8.0, 10.0, 400))
    args = {"rate": 2.0, "slots_per_window": 20.0, "default": "none"}
    # At 19.9 s: a seen still going at 9.5 s and now 9.9 s old is done with a chance
    # of 0.4 / 0.5; b, never polled and 8.9 s old, with 0.45. Both are due: a goes.
    a = ("a", 10.0, PollState(last_pending_age=9.5))
    b = ("b", 11.0, PollState())
    assert fair_share_pick(model, [b, a], now=19.9, **args) == (19.9, "a")
    # A Retry-After holds a back: b goes.
    held = ("a", 10.0, PollState(last_pending_age=9.5, not_before=25.0))
    assert fair_share_pick(model, [held, b], now=19.9, **args) == (19.9, "b")
    # Nobody due yet (young runs): the soonest fair-share poll, and when.
    young = [("c", 19.0, PollState()), ("d", 18.0, PollState())]
    when, pick = fair_share_pick(model, young, now=20.0, **args)
    assert pick == "d" and 18.0 + 7.5 < when < 18.0 + 9.0
    assert fair_share_pick(model, [], now=20.0, **args) == (math.inf, "none")


# -- the deadline ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "last", "not_before", "expected"),
    [
        (50.0, 0.0, 0.0, 50.0),  # before the deadline: as planned
        (120.0, 0.0, 0.0, 100.0 - FINAL_POLL_LEAD * 100.0),  # past it: one last poll before it
        (math.inf, 0.0, 0.0, 100.0 - FINAL_POLL_LEAD * 100.0),  # parked runs too
        (120.0, 99.0, 0.0, 100.0),  # already seen going there: only the timeout is left
        (120.0, 0.0, 99.0, 100.0),  # the server asked for a wait past it
    ],
)
def test_no_run_times_out_unpolled(
    when: float, last: float, not_before: float, expected: float
) -> None:
    at = deadline_poll_at(
        when, created_at=0.0, deadline=100.0, last_pending_age=last, not_before=not_before
    )
    assert at == pytest.approx(expected)


# -- retries and "not found" -----------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "grace", "errors", "final"),
    [
        # A run we created: within the grace a 404 is "not visible yet", however many.
        (0.1, NOT_FOUND_GRACE, 0, False),
        (0.11, NOT_FOUND_GRACE, 20, False),  # three polls in 0.1 s at a high rate limit
        (NOT_FOUND_GRACE - 0.01, NOT_FOUND_GRACE, 50, False),
        # After it, the count of 404s in a row decides, as for any run.
        (NOT_FOUND_GRACE, NOT_FOUND_GRACE, MAX_NOT_FOUND - 1, True),
        (NOT_FOUND_GRACE + 5.0, NOT_FOUND_GRACE, 0, False),  # seen before: a first 404
        # An attached run: no grace.
        (0.1, 0.0, MAX_NOT_FOUND - 2, False),
        (0.1, 0.0, MAX_NOT_FOUND - 1, True),
    ],
)
def test_a_404_ends_a_run_only_after_its_grace(
    age: float, grace: float, errors: int, final: bool
) -> None:
    assert not_found_is_final(age=age, grace=grace, errors=errors) is final


def test_the_grace_is_seconds_and_outlasts_a_lagging_read_side() -> None:
    # PROVIDERS.md: both sellers' read side may lag briefly (3 s seen); runs take 3-10 s.
    assert 10.0 <= NOT_FOUND_GRACE <= 60.0


@pytest.mark.parametrize(
    ("errors", "ready", "interval", "expected"),
    [
        (1, False, 0.01, 2 * RTT),  # cold: from the round trip
        (3, False, 0.01, 8 * RTT),
        (1, False, 0.5, 1.0),  # never closer than the request interval
        (10, False, 0.5, 10.0),  # capped at the window
        (1, True, 0.01, 2 * MIN_STEP * 6.5),  # with a model: a share of the median
    ],
)
def test_retries_back_off_from_the_budget_or_the_runs(
    errors: int, ready: bool, interval: float, expected: float
) -> None:
    model = uniform_model() if ready else DurationModel()
    ceiling = retry_ceiling(errors, model=model, rtt=RTT, interval=interval, window=10.0)
    assert ceiling == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(
    ("errors", "window", "expected"),
    [
        (1, 10.0, 2 * RTT),  # as any retry at first ...
        (20, 10.0, 10.0),  # ... capped at the window where that is long (Runbase's default)
        (20, 1.0, NOT_FOUND_GRACE / NOT_FOUND_POLLS),  # a short window: a few polls per grace
    ],
)
def test_a_run_not_visible_yet_is_polled_a_few_times_per_grace(
    errors: int, window: float, expected: float
) -> None:
    model = DurationModel()
    ceiling = not_found_ceiling(errors, model=model, rtt=RTT, interval=0.001, window=window)
    assert ceiling == pytest.approx(expected)


# -- cold start in bulk: scouts and parked runs ---------------------------------------------


@pytest.mark.parametrize(
    ("ready", "scale", "scout", "scouts", "waiting", "park"),
    [
        (False, 0.0, False, 1, True, True),  # a bulk job: one scout probes, the rest wait
        (False, 0.0, False, 0, True, False),  # ... the first run is that scout
        (False, 0.0, False, 1, False, False),  # idle budget: every run probes
        (False, 0.0, True, 1, True, False),  # a scout is never parked
        (False, 4.0, False, 1, True, False),  # a duration is known: plan from it
        (True, 0.0, False, 1, True, False),
    ],
)
def test_only_scouts_probe_a_bulk_cold_start(
    ready: bool, scale: float, scout: bool, scouts: int, waiting: bool, park: bool
) -> None:
    parked = should_park(
        model_ready=ready, cold_scale=scale, is_scout=scout, scouts=scouts, waiting=waiting
    )
    assert parked is park


# -- a bulk job's tail -------------------------------------------------------------------


def test_the_tail_cohort_is_chosen_by_creation_time() -> None:
    tail, longest = TailCohort(), 10.0
    assert 50.0 not in tail  # no tail yet
    tail.began(100.0, longest=longest)
    tail.began(110.0, longest=longest)  # the same tail: a stream's next last create
    tail.ended(110.0)
    table = [(89.0, False), (90.5, True), (105.0, True), (110.0, True), (111.0, False)]
    assert [(t, t in tail) for t, _ in table] == table
    tail.began(500.0, longest=longest)  # long after: a new cohort
    assert 105.0 not in tail and 495.0 in tail
