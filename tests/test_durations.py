"""The duration model stays consistent under the polling it drives."""

from __future__ import annotations

import itertools
import random

import pytest

from gptimage_async._durations import DurationModel


def simulate(draw: random.Random, n: int, theta: float) -> tuple[DurationModel, float]:
    """Bulk policy: first poll at the model's quantile, then conditional ones."""
    model = DurationModel()
    polls = 0
    for _ in range(n):
        d = draw.uniform(3.0, 10.0)
        if not model.ready:
            lo, age = 0.0, 0.5
            while age < d:
                lo, age = age, age * 1.5
                polls += 1
            polls += 1
            model.observe(lo, age)
            continue
        lo, age = 0.0, model.conditional_quantile(0.0, theta) or 10.0
        while True:
            polls += 1
            if age >= d:
                break
            lo = age
            nxt = model.conditional_quantile(age, theta)
            age = max(nxt or 0.0, age + 0.25)
        model.observe(lo, age)
    return model, polls / n


def test_quantile_converges_without_drifting_late() -> None:
    model, polls_per_run = simulate(random.Random(7), 800, 0.95)
    assert model.quantile(0.95) == pytest.approx(9.65, abs=0.35)
    assert polls_per_run < 1.25


def test_cdf_and_quantile_are_inverse() -> None:
    model = DurationModel()
    for i in range(100):
        model.observe(i / 10, i / 10 + 0.1)
    for q in (0.1, 0.5, 0.9):
        assert model.cdf(model.quantile(q)) == pytest.approx(q, abs=0.03)
    assert model.cdf(-1.0) == 0.0
    assert model.cdf(1e9) == 1.0


def test_conditional_quantile_beyond_everything_seen_is_none() -> None:
    model = DurationModel()
    for _ in range(10):
        model.observe(1.0, 2.0)
    assert model.conditional_quantile(1e6, 0.9) is None
    later = model.conditional_quantile(1.2, 0.5)
    assert later is not None and later >= 1.2


def test_bad_observations_are_ignored() -> None:
    model = DurationModel()
    model.observe(2.0, 1.0)
    model.observe(0.0, float("inf"))
    assert model.observed == 0 and not model.ready
    assert model.quantile(0.5) == 0.0
    assert "learning" in repr(model)


def bulk_polls(
    model: DurationModel, draw: random.Random, n: int, low: float, high: float
) -> list[int]:
    """Polls per run under the bulk policy, for ``n`` runs uniform in ``[low, high]``."""
    polls = []
    for _ in range(n):
        d = draw.uniform(low, high)
        count, lo, age = 0, 0.0, model.conditional_quantile(0.0, 0.95) or high
        while True:
            count += 1
            if age >= d:
                break
            lo = age
            age = max(model.conditional_quantile(age, 0.95) or age * 1.25, age + 0.25)
        model.observe(lo, age)
        polls.append(count)
    return polls


def test_a_slowdown_moves_the_quantiles_within_a_few_runs() -> None:
    draw = random.Random(3)
    model = DurationModel()
    model.restore((0.0, draw.uniform(3.0, 10.0)) for _ in range(4))
    bulk_polls(model, draw, 200, 3.0, 10.0)
    assert model.quantile(0.95) < 11.0 and model.changes == 0
    after = bulk_polls(model, draw, 100, 9.0, 30.0)
    assert model.changes == 1
    assert model.quantile(0.95) == pytest.approx(29.0, abs=2.0)
    assert model.observed <= 100  # the 200 runs before the change are forgotten
    assert sum(after[30:]) / len(after[30:]) < 1.15


def test_a_speedup_is_seen_by_fine_polls() -> None:
    draw = random.Random(5)
    model = DurationModel()
    for _ in range(200):
        d = draw.uniform(3.0, 10.0)
        model.observe(d - 0.1, d + 0.1)
    for _ in range(10):
        d = draw.uniform(1.0, 10.0 / 3.0)
        model.observe(max(0.0, d - 0.1), d + 0.1)
    assert model.changes == 1
    assert model.quantile(0.95) < 4.0


def test_a_steady_provider_raises_no_false_alarm() -> None:
    draw = random.Random(11)
    model = DurationModel()
    model.restore((0.0, draw.uniform(3.0, 10.0)) for _ in range(4))
    bulk_polls(model, draw, 3000, 3.0, 10.0)
    assert model.changes == 0


def test_observations_round_trip_through_restore() -> None:
    model = DurationModel()
    for i in range(50):
        model.observe(i / 10, i / 10 + 1.0)
    saved = model.observations(limit=20)
    assert len(saved) == 20 and saved[-1] == (4.9, 5.9)
    again = DurationModel()
    again.restore([*saved, (3.0, 1.0), (0.0, float("nan"))])
    assert again.observed == 20 and again.ready
    assert again.quantile(0.5) == pytest.approx(model.observations()[-10][1], abs=1.0)


def test_the_mean_is_the_estimates_mean() -> None:
    model = DurationModel()
    for i in range(200):
        d = 3.0 + 7.0 * (i * 37 % 200 + 0.5) / 200  # 3-10 s, evenly, in no order
        model.observe(d - 0.01, d)
    assert model.mean() == pytest.approx(6.5, abs=0.15)
    assert DurationModel().mean() == 0.0


def test_the_smoothed_estimate_fills_the_gaps_between_lumps_but_not_beyond() -> None:
    # Few runs, each seen done within 10 ms: the estimate is five lumps, 0.5 s apart.
    model = DurationModel()
    for d in (3.0, 3.5, 4.0, 4.5, 5.0) * 2:
        model.observe(d - 0.01, d)
    # Between two lumps the raw estimate has (almost) nothing; the smoothed one does.
    raw_gap = model.cdf(3.4) - model.cdf(3.1)
    smooth_gap = model.cdf(3.4, smooth=True) - model.cdf(3.1, smooth=True)
    assert raw_gap < 0.02 < 0.1 < smooth_gap
    # Its quantiles move on evenly: a rule splitting it in even parts skips no gap.
    steps = [model.quantile(q / 10, smooth=True) for q in range(1, 10)]
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert max(gaps) < 0.35
    # No run ended before 3 s or after 5 s: the smoothed estimate says so too.
    assert model.cdf(2.7, smooth=True) == 0.0
    assert model.cdf(5.3, smooth=True) == pytest.approx(1.0)


def test_the_smoothed_estimate_does_not_sag_at_the_ends_of_the_runs_seen() -> None:
    # Runs evenly over 8-10 s: smoothing (over about 0.4 s here) must not thin out
    # the first and last tenth (a rule splitting it in even parts would poll them late).
    model = DurationModel()
    for i in range(200):
        d = 8.0 + 2.0 * (i * 37 % 200 + 0.5) / 200
        model.observe(d - 0.01, d)
    assert model.cdf(8.2, smooth=True) == pytest.approx(0.1, abs=0.04)
    assert 1.0 - model.cdf(9.8, smooth=True) == pytest.approx(0.1, abs=0.04)


def test_runs_still_going_move_the_model_before_they_finish() -> None:
    # 100 runs of 3-4 s finished; 20 more are still going at 6 s (a slowdown, say).
    going: list[float] = []
    model = DurationModel()
    model.in_flight = lambda: going
    alone = DurationModel()
    for i in range(100):
        d = 3.0 + (i * 37 % 100 + 0.5) / 100
        for m in (model, alone):
            m.observe(d - 0.01, d)
    assert model.quantile(0.9) == pytest.approx(alone.quantile(0.9))  # none going: the same
    going[:] = [6.0] * 20
    for _ in range(10):  # enough new runs for a refit: 20 of 130 are longer than 6 s
        model.observe(3.49, 3.5)
    # Their mass lies past the runs seen done (the grid spans those: at its end).
    assert alone.quantile(0.9) < 4.0 < 4.5 < model.quantile(0.9)
    assert model.cdf(4.0) == pytest.approx(110 / 130, abs=0.04)
    # What is saved (and the change detector) holds only finished runs.
    assert len(model.observations()) == 110


def test_no_mass_where_the_observations_rule_out_any_end() -> None:
    # Runs of 8-10 s: a poll at 8 s found two still going (they ended by 8.5 s), and
    # three were found done at their first poll, at 8.5 s: "(0, 8.5]". Every run
    # covering an age below 8 s also covers 8-8.5 s (Turnbull's first innermost
    # interval), so the estimate has nothing there; EM alone (from an even start,
    # or a warm one mixed with an even share) leaves a trace.
    model = DurationModel()
    seen = [(8.0, 8.5)] * 2 + [(0.0, 8.5)] * 3
    seen += [(8.5 + 0.25 * i, 8.75 + 0.25 * i) for i in range(6)] * 3
    for lo, hi in seen:
        model.observe(lo, hi)
    assert model.cdf(7.9) == 0.0
    for lo, hi in [(8.5, 8.75), (9.0, 9.25), (9.5, 9.75)]:
        model.observe(lo, hi)  # a refit from the last one (``WARM_MIX``)
    assert model.cdf(7.9) == 0.0
    assert 8.0 <= model.quantile(0.01, smooth=True) < 8.5
