"""A fleet confirms its belief once per window, on the fleet's refusals, above a floor.

Pure ``AdaptiveRate`` state moved by hand on its own clock: the rules each
process of a fleet applies before it writes the belief back to Redis.
"""

from __future__ import annotations

import gptimage_async as gi
from gptimage_async._budget.belief import (
    FLEET_MIN_MARGIN,
    FLEET_SLOW_START_SPAN,
    MIN_MARGIN,
    NUDGE,
    SAFETY_MARGIN,
    AdaptiveRate,
    BeliefState,
)
from gptimage_async._budget.evidence import Evidence

WINDOW = 1.0
BELIEF = gi.RateLimit(requests=20, per=WINDOW, ceiling=True)


def saturate(belief: AdaptiveRate, start: float, end: float) -> None:
    """Send at the belief's pace from ``start`` to ``end``, every send having waited."""
    t = start
    while t < end:
        belief.record_send(t, saturated=True)
        t += belief.interval


def member(min_margin: float = MIN_MARGIN) -> AdaptiveRate:
    belief = AdaptiveRate(BELIEF, ceiling=None, min_margin=min_margin)
    belief.restore(20.0, 20.0, confirmed=False, now=-100.0)  # past slow start
    return belief


def test_a_margin_adopted_from_the_fleet_starts_a_new_window() -> None:
    # Two processes, each a window old. One confirms and writes the narrower
    # margin back; the other adopts it and must judge a whole window of it
    # before confirming again (not halve it once more a moment later).
    a, b = member(), member()
    saturate(a, 0.0, 1.05)
    saturate(b, 0.02, 0.9)
    assert a.margin == SAFETY_MARGIN / 2
    b.adopt(a.state(), now=1.06)
    saturate(b, 1.06, 1.5)
    assert b.margin == SAFETY_MARGIN / 2
    saturate(b, 1.5, 2.2)
    assert b.margin == SAFETY_MARGIN / 4  # after a whole window of it


def test_a_429_elsewhere_in_the_fleet_spoils_the_window() -> None:
    # Another process's 429 reached the fleet's belief (its time, no change of
    # pace): this process's window held it, so it confirms nothing.
    a, b = member(), member()
    saturate(a, 0.0, 0.5)
    saturate(b, 0.0, 0.5)
    a.record_429(0.45, 0.5)  # one at the limit: jitter
    refused_elsewhere = BeliefState(b.rate, b.margin, 20.0, b.state().last_cut, 0.5)
    b.adopt(refused_elsewhere, now=0.55)
    saturate(b, 0.55, 1.05)
    assert b.margin == SAFETY_MARGIN, b
    assert b.increases == 0


def test_a_fleet_never_narrows_its_margin_past_its_floor() -> None:
    fleet, alone = member(FLEET_MIN_MARGIN), member()
    saturate(fleet, 0.0, 6.0)
    saturate(alone, 0.0, 6.0)
    assert alone.margin == MIN_MARGIN
    assert fleet.margin == FLEET_MIN_MARGIN
    # A narrower margin written by a process of an older version is widened.
    narrow = BeliefState(20.0, MIN_MARGIN, 20.0, -1e9, -1e9)
    fleet.adopt(narrow, now=6.0)
    assert fleet.margin == FLEET_MIN_MARGIN
    assert fleet.interval >= 1.0 / (20.0 * (1.0 - FLEET_MIN_MARGIN)) - 1e-12


def test_a_refusal_not_judged_yet_stops_probing_at_once() -> None:
    # A 429 came back (here, or pushed from another process) and is being
    # settled: the window it fell in must not double the rate meanwhile.
    belief = AdaptiveRate(gi.RateLimit(requests=20, per=WINDOW), slow_start_span=1.0)
    saturate(belief, 0.0, 0.3)
    belief.note_refusal()
    saturate(belief, 0.3, 1.05)
    assert belief.rate == 20.0
    assert belief.increases == 0


def test_a_fleet_slow_starts_on_whole_windows() -> None:
    start = gi.RateLimit(requests=20, per=WINDOW)
    fleet = AdaptiveRate(start, slow_start_span=FLEET_SLOW_START_SPAN)
    alone = AdaptiveRate(start)
    saturate(fleet, 0.0, 0.99)
    saturate(alone, 0.0, 0.99)
    assert alone.rate >= 40.0  # doubled on half a window
    assert fleet.rate == 20.0
    saturate(fleet, 0.99, 1.2)
    assert fleet.rate == 40.0


def test_a_cut_counts_the_window_before_the_refused_slot() -> None:
    # The fleet's log holds slots; the refused request went out 3 ms after its
    # slot. The server let 20 through in the window before it: the limit is 20/s
    # a window, not the 21 grants found before the send time.
    belief = AdaptiveRate(gi.RateLimit(requests=40, per=WINDOW), min_margin=FLEET_MIN_MARGIN)
    slots = [0.5 + i / 40.0 for i in range(40)]  # 40/s from 0.5 s on
    refused_slot = slots[20]
    evidence = Evidence(sends=slots, refusals=[refused_slot + 0.003], since=-1e9)
    sent_at = refused_slot + 0.003
    belief.record_429(sent_at, sent_at + 0.05, evidence=evidence)
    assert belief.cuts == 1
    assert belief.rate == 20.0 / WINDOW, belief


def test_a_fleet_429_at_the_limit_counts_the_send_at_the_windows_edge() -> None:
    # Paced at the limit, the send 20 back from the refused one sits at the
    # window's edge; in the fleet's log it shows 5 ms before it (its process
    # sent it late relative to the refused one's). The server refused because
    # its window held 20: a jitter 429 at 20, not a limit of 19.
    belief = member(FLEET_MIN_MARGIN)
    step = WINDOW / 20
    refused = 10.0
    sends = [refused - WINDOW - 0.005 + i * step for i in range(20)] + [refused]
    for _ in range(2):  # two 429s at the limit within JITTER_MEMORY windows: a nudge
        evidence = Evidence(sends=sends, refusals=[refused], since=-1e9)
        belief.record_429(refused, refused + 0.05, evidence=evidence)
        refused += 1.5 * WINDOW
        sends = [t + 1.5 * WINDOW for t in sends]
    assert belief.cuts == 1
    assert belief.rate == 20.0 * (1 - NUDGE), belief
    assert belief.state().refused == 20.0


def test_a_processes_own_429_counts_its_own_sends_exactly() -> None:
    # One process's log is its own send times: no edge slack, the send 5 ms
    # before the window's start is out of it (19 counted, so the nudge is from 19).
    belief = member()
    step = WINDOW / 20
    for start in (10.0, 11.5):
        for i in range(20):
            belief.record_send(start - WINDOW - 0.005 + i * step, saturated=True)
        belief.record_send(start, saturated=True)
        belief.record_429(start, start + 0.05)
    assert belief.cuts == 1
    assert belief.rate == 19.0 * (1 - NUDGE), belief
