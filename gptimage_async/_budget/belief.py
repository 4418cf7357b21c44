"""The belief about a key's rate limit, and the rules that learn it: written once, here.

``AdaptiveRate`` is pure state driven by the caller's clock, so tests move
time by hand. A process-local limiter feeds it its own sends; a shared one
feeds it the fleet's (``Evidence``, read from Redis) and writes what it
learns back with a versioned compare-and-set (``BeliefState``). The rules:

* **A 429 measures the limit.** The requests sent in the window before it
  went through: the server refused the next one. Well above that count the
  rate drops to it at once; at the count (``JITTER_BAND``) the 429 is arrival
  jitter, and only a second one within ``JITTER_MEMORY`` windows nudges.
* **A 429 our pace cannot explain is a pause** (issue 20: a short overload
  storm). If the server let more of our requests through in one window
  lately, with none refused in it, than the window before this 429 held, and
  refuses ours one after another (one of the two before was refused too), it did not
  refuse us for our count: it is overloaded. The limiter pauses (Retry-After, backoff);
  the belief stays. (A refusal right after an answer is a limit, someone
  else's traffic included: the belief learns from it as ever.)
  Only when such refusals outlast ``STORM_WINDOWS`` windows (no window free of
  them is left to remember) do they measure a new, lower limit.
* **Probing.** After a window in which the budget was the bottleneck and no
  429 came back, the rate rises: doubling before any 429 (slow start), by
  ``INCREASE_FAST`` below the rate that last drew one, and by ``INCREASE_SLOW``
  past it once that failure is ``FORGET_REFUSED_AFTER`` windows old.
* **Confirmation.** Such a window at the rate itself halves the margin, down
  to ``MIN_MARGIN`` alone and ``FLEET_MIN_MARGIN`` in a fleet.
* **A fleet** judges a window only of the belief it holds (one adopted from
  the fleet starts a new one), with every process's 429s in it, the moment
  they come back (``note_refusal``), and slow-starts on whole windows
  (``FLEET_SLOW_START_SPAN``): it probes and confirms once per window, not
  once per process. Its log holds slots, so a 429 counts the window before
  the refused request's slot.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
from dataclasses import dataclass

from .._models import RateLimit
from .evidence import STORM_WINDOWS, Evidence, refused_before, went_through

__all__ = [
    "FLEET_MIN_MARGIN",
    "FLEET_SLOW_START_SPAN",
    "AdaptiveRate",
    "BeliefState",
]

#: Pace this far under the believed limit until it is confirmed, so arrival
#: jitter at the server does not push one window over (2% of a 10 s window is
#: 200 ms of slack).
SAFETY_MARGIN = 0.02
#: Once a saturated window at the believed limit passes without a 429, the
#: margin halves per such window down to MIN_MARGIN (50 ms of a 10 s window);
#: a 429 at the limit (jitter) doubles it again, up to MAX_MARGIN.
MIN_MARGIN = 0.005
MAX_MARGIN = 0.04
#: A fleet's floor: one process's. MIN_MARGIN is safe only with ``window_free``
#: on real send times, and the fleet's grant log holds them (each process
#: reports when its slots went out; ``lua/admit.lua`` keeps a window free).
FLEET_MIN_MARGIN = MIN_MARGIN
#: On a 429, never cut below this share of the current rate in one step,
#: unless at least TRUSTED_COUNT requests went out in the window before it.
DECREASE_MIN = 0.5
TRUSTED_COUNT = 5
#: A 429 whose window held at least this share of our rate came at the limit,
#: not above it; a second one within JITTER_MEMORY windows nudges the rate down.
JITTER_BAND = 0.95
JITTER_MEMORY = 4
NUDGE = 0.03
#: Multiplicative probe per saturated, 429-free window: before any 429 (slow
#: start: a limit 2x above the belief is found in one window), while below the
#: rate that drew one, and once past it.
INCREASE_START = 2.0
#: Share of a window over which slow start judges saturation.
SLOW_START_SPAN = 0.5
#: A fleet learns a 429 a settle and round trips late (10-20% of a window):
#: on half windows it doubled twice before its first 429 was judged.
FLEET_SLOW_START_SPAN = 1.0
INCREASE_FAST = 1.25
INCREASE_SLOW = 1.03
#: Windows without a 429 after which the rate that drew one is doubted. The
#: requests a server let through in the window before its 429 *are* its limit:
#: probing climbs back to that rate (no gap under it), and past it only after a
#: long quiet spell, so a job at the limit draws its 429s once, not every few windows.
FORGET_REFUSED_AFTER = 30
#: A 429 cuts only if the evidence covers this share of the window before it
#: (a shared log that began a moment ago, after a Redis restart, does not).
MIN_COVERED = 0.5
#: A send logged up to this share of an interval after a refused request's
#: send time is its own (Redis's clock and the loop's differ by a round trip).
OWN_SLOT_SHARE = 0.25
#: A fleet's 429 counts a send logged up to this share of an interval before the
#: window's start as in it. Each process logs its grant times, and its requests
#: reach the server after a delay of their own (a loop wake-up, a connection: up
#: to ~10 ms on a loaded host, measured in ``benchmarks.fleet``), so the server's
#: window that refused the request may have held that send. A refusal proves the
#: window held the limit: at the limit (paced evenly, the send ``limit`` back sits
#: at the window's edge) counting it out measured jitter as a limit one request
#: lower (19 of 20, 5% of the budget for ``FORGET_REFUSED_AFTER`` windows).
EDGE_SLACK = 0.5
#: The learned rate never drifts past these multiples of the starting belief.
MIN_RATE_FACTOR = 1 / 64
MAX_RATE_FACTOR = 64.0
#: Sends kept: enough windows back to remember what went through (STORM_WINDOWS).
_KEEP_WINDOWS = STORM_WINDOWS + 1 + MAX_MARGIN


@dataclass(frozen=True, slots=True)
class BeliefState:
    """The part of a belief a fleet shares (requests/s, and times on the caller's clock).

    ``refused`` is the lowest rate a 429 came back at (``None``: never);
    ``last_cut`` and ``last_429`` are ``-inf`` when they never happened.
    """

    rate: float
    margin: float
    refused: float | None
    last_cut: float
    last_429: float


class AdaptiveRate:
    """The limiter's current belief about the server's rate limit, in requests per second.

    >>> r = AdaptiveRate(RateLimit(requests=20, per=10.0))
    >>> round(r.rate, 2)
    2.0
    """

    __slots__ = (
        "_ceiling",
        "_last_429",
        "_last_cut",
        "_margin",
        "_min_margin",
        "_rate",
        "_refused",
        "_refused_rate",
        "_sent",
        "_slow_start_span",
        "_start",
        "_window",
        "_window_429",
        "_window_saturated",
        "_window_start",
        "cuts",
        "increases",
        "storms",
    )

    def __init__(
        self,
        belief: RateLimit,
        *,
        now: float = 0.0,
        ceiling: float | None = None,
        min_margin: float = MIN_MARGIN,
        slow_start_span: float = SLOW_START_SPAN,
    ) -> None:
        self._window = float(belief.per)
        self._start = belief.rate
        self._rate = belief.rate
        # The rate never probed past (requests/s): ``ceiling``, else the belief if it says so.
        self._ceiling = ceiling if ceiling is not None else belief.rate if belief.ceiling else None
        # The lowest rate (requests/s) a 429 came back at: probing stays at or below it.
        self._refused_rate: float | None = None
        self._margin = SAFETY_MARGIN
        # The narrowest margin confirmation reaches (``FLEET_MIN_MARGIN`` in a fleet).
        self._min_margin = min(min_margin, SAFETY_MARGIN)
        # Share of a window slow start judges (``FLEET_SLOW_START_SPAN`` in a fleet).
        self._slow_start_span = slow_start_span
        self._last_cut = -math.inf
        self._last_429 = -math.inf
        self._window_start = now
        self._window_saturated = False
        self._window_429 = False
        # Send times of the last few windows: their count at a 429 estimates
        # the limit, and they keep any window at the belief.
        self._sent: collections.deque[float] = collections.deque()
        # Send times of requests answered 429, as far back as the sends.
        self._refused: collections.deque[float] = collections.deque()
        self.cuts = 0
        self.increases = 0
        self.storms = 0

    @property
    def rate(self) -> float:
        """Requests per second the limiter currently allows (before the safety margin)."""
        return self._rate

    @property
    def interval(self) -> float:
        """Seconds between two requests at the current rate, safety margin included."""
        return 1.0 / (self._rate * (1.0 - self._margin))

    @property
    def window(self) -> float:
        """The length of the server's counting window the belief is about, in seconds."""
        return self._window

    @property
    def margin(self) -> float:
        """Share of the belief left unused against jitter (``SAFETY_MARGIN`` until confirmed)."""
        return self._margin

    @property
    def confirmed(self) -> bool:
        """True once a saturated window at the current rate passed without a 429."""
        return self._margin < SAFETY_MARGIN

    @property
    def last_429(self) -> float:
        """When (caller's clock, seconds) the last 429 came back (``-inf``: never)."""
        return self._last_429

    def _per_window(self) -> int:
        return max(1, int(self._rate * self._window + 1e-9))

    def window_free(self) -> float:
        """The earliest time a request keeps every window within the belief.

        Even pacing alone lets a slot granted late (an event loop that woke
        late) sit closer than a window to the one ``limit`` slots after it; a
        server counting a sliding window then sees ``limit + 1``. So the
        request ``limit`` sends back bounds the next one too, on the same
        grant times the server's window will see (plus the margin).
        """
        return self._nth_back_free(self._per_window())

    def spare_free(self, reserve: int) -> float:
        """Like ``window_free``, keeping ``reserve`` slots of every window free (fewer under 10)."""
        limit = self._per_window()
        return self._nth_back_free(limit - min(reserve, limit // 10))

    def _nth_back_free(self, limit: int) -> float:
        sent = self._sent
        if len(sent) < limit:
            return -math.inf
        return sent[-limit] + self._window * (1.0 + self._margin)

    def record_send(self, now: float, *, saturated: bool) -> bool:
        """Note a request going out; ``saturated`` if it had to wait for its slot.

        Returns True if a window ended with it (the belief may have moved).
        """
        sent = self._sent
        sent.append(now)
        horizon = now - self._window * _KEEP_WINDOWS
        while sent and sent[0] <= horizon:
            sent.popleft()
        while self._refused and self._refused[0] <= horizon:
            self._refused.popleft()
        if len(sent) > 100_000:  # a belief far above reality must not grow this forever
            sent.popleft()
        if saturated:
            self._window_saturated = True
        return self._maybe_increase(now)

    def note_refusal(self) -> None:
        """A 429 came back (here or in the fleet), judged later: this window probes nothing."""
        self._window_429 = True

    def record_429(self, sent_at: float, now: float, *, evidence: Evidence | None = None) -> None:
        """React to a 429 that came back at ``now`` for a request sent at ``sent_at``.

        ``evidence`` is the fleet's log (a shared limiter); ``None`` reads
        this belief's own sends. See the module docstring for the rules.
        """
        self._window_429 = True
        previous_429, self._last_429 = self._last_429, now
        # The fleet's log holds each process's grant times; its requests reach the
        # server after a delay of their own (ms on a loaded host): see EDGE_SLACK.
        slack = EDGE_SLACK * self.interval if evidence is not None else 0.0
        if evidence is None:
            self._refused.append(sent_at)
            evidence = Evidence(list(self._sent), sorted(self._refused))
        if sent_at < self._last_cut + self._window:
            # Within a window of the previous cut: the server's window still
            # holds the traffic that cut answered (and, where it counts
            # rejected requests, the rejections too). At most one cut per window.
            return
        covered = min(self._window, sent_at - evidence.since)
        if covered < MIN_COVERED * self._window:
            return  # too little known of the window before it: a pause, no cut
        sends = evidence.sends
        # The refused request is the last send at about ``sent_at`` (a fleet logs
        # its slot, a little earlier): counted, it cut to 21/20 of the limit.
        own = bisect.bisect_right(sends, sent_at + OWN_SLOT_SHARE * self.interval) - 1
        end = sends[own] if own >= 0 else sent_at
        lo = bisect.bisect_right(sends, end - self._window - slack)
        in_window = max(0, own - lo)
        went = went_through(sends, evidence.refusals, sent_at, self._window)
        if in_window + 1 < JITTER_BAND * went and refused_before(
            sends, evidence.refusals, sent_at, 0.5 * self.interval
        ):
            # The server let more of ours through in one window lately, and
            # refuses ours one after another: not our pace, a storm.
            self.storms += 1
            return
        rate = self._rate
        if in_window:
            estimate = in_window / self._window
            at_limit = estimate >= rate * JITTER_BAND
            if at_limit and now - previous_429 > JITTER_MEMORY * self._window:
                # One 429 at the limit: jitter, no cut; but no probing past it either.
                self._refused_rate = _lowest(self._refused_rate, rate)
                self._margin = min(MAX_MARGIN, max(SAFETY_MARGIN, self._margin * 2.0))
                return
            new = min(rate, estimate) * (1.0 - NUDGE if at_limit else 1.0)
            failing = min(rate, estimate)
        else:
            # Refused with nothing sent lately: another client shares the key.
            new = rate * DECREASE_MIN
            failing = rate
        self._refused_rate = _lowest(self._refused_rate, failing)
        # A count of a few requests is no measure of the server's limit (the key
        # may be shared): then cut by half at most. A real count is trusted.
        floor = rate * DECREASE_MIN if in_window < TRUSTED_COUNT else 0.0
        self._rate = max(new, floor, self._start * MIN_RATE_FACTOR)
        self._margin = SAFETY_MARGIN
        self._last_cut = now
        self._new_window(now)
        self.cuts += 1

    def _new_window(self, now: float) -> None:
        self._window_start = now
        self._window_saturated = False
        self._window_429 = False

    def _maybe_increase(self, now: float) -> bool:
        # Slow start looks every half window: a limit above the belief is
        # found a half window sooner, and overshooting it costs a 429 or two,
        # not budget (the server's window was full at the limit anyway).
        span = self._window * (1.0 if self._refused_rate is not None else self._slow_start_span)
        if now - self._window_start < span:
            return False
        if self._window_saturated and not self._window_429:
            self._increase(now)
        self._new_window(now)
        return True

    def _increase(self, now: float) -> None:
        rate, refused = self._rate, self._refused_rate
        if refused is not None and now - self._last_429 > FORGET_REFUSED_AFTER * self._window:
            # Limits get raised; a long quiet spell makes the old failure doubtful.
            refused = self._refused_rate = refused * INCREASE_SLOW
        if refused is None:
            rate *= INCREASE_START
        elif rate * INCREASE_FAST <= refused:
            rate *= INCREASE_FAST
        elif rate < refused:
            rate = refused
        if self._ceiling is not None:
            rate = min(rate, self._ceiling)
        rate = min(rate, self._start * MAX_RATE_FACTOR)
        if rate > self._rate:
            self._rate = rate
            self._margin = SAFETY_MARGIN  # a new rate is unconfirmed
            self.increases += 1
        else:
            # A saturated, 429-free window at this very rate: it holds.
            self._margin = max(self._min_margin, self._margin / 2.0)

    # -- sharing: a fleet's belief, and a later session's ----------------------------

    def state(self) -> BeliefState:
        """What a fleet shares of this belief (see ``adopt``)."""
        return BeliefState(
            self._rate, self._margin, self._refused_rate, self._last_cut, self._last_429
        )

    def adopt(self, state: BeliefState, now: float) -> None:
        """Take the fleet's belief ``state`` (times on the caller's clock), within our bounds.

        A changed rate or margin starts a new window (the fleet then confirms
        once per window, not once per process); a fleet's 429 since this
        window began spoils it, as one of ours would.
        """
        rate = self._bounded(state.rate)
        margin = min(MAX_MARGIN, max(self._min_margin, state.margin))
        if rate != self._rate or margin != self._margin:
            self._new_window(now)
        elif state.last_429 >= self._window_start:
            self._window_429 = True
        self._rate = rate
        self._margin = margin
        self._refused_rate = state.refused
        self._last_cut = state.last_cut
        self._last_429 = state.last_429

    def _bounded(self, rate: float) -> float:
        low, high = self._start * MIN_RATE_FACTOR, self._start * MAX_RATE_FACTOR
        if self._ceiling is not None:
            high = min(high, self._ceiling)
        return min(max(rate, low), high)

    def recent_sends(self, now: float, *, limit: int = 1000) -> list[float]:
        """Ages (seconds before ``now``) of the last ``limit`` sends still in a window.

        A session opened right after this one sees a server window that
        still holds them: they are how it knows.
        """
        horizon = now - self._window * (1.0 + MAX_MARGIN)
        sent = itertools.islice(self._sent, max(0, len(self._sent) - limit), None)
        return [now - t for t in sent if horizon < t <= now]

    def note_sends(self, ages: list[float], now: float) -> None:
        """Requests sent ``ages`` seconds before ``now`` (by an earlier session) still count."""
        horizon = self._window * (1.0 + MAX_MARGIN)
        earlier = sorted(now - age for age in ages if 0.0 <= age < horizon)
        self._sent.extendleft(reversed(earlier))

    def snapshot(self) -> tuple[float, float | None, bool]:
        """``(rate, refused, confirmed)``: what a later session may start from (requests/s)."""
        return self._rate, self._refused_rate, self.confirmed

    def restore(self, rate: float, refused: float | None, *, confirmed: bool, now: float) -> None:
        """Start from a belief learned earlier (``snapshot()``), within this belief's bounds.

        The rate that drew a 429 is as fresh as ``now``: no probing past it
        for ``FORGET_REFUSED_AFTER`` windows.
        """
        self._rate = self._bounded(rate)
        low = self._start * MIN_RATE_FACTOR
        self._refused_rate = None if refused is None else max(refused, low)
        if self._refused_rate is not None:
            self._last_429 = now
        self._margin = self._min_margin if confirmed else SAFETY_MARGIN

    def __repr__(self) -> str:
        refused = "unknown" if self._refused_rate is None else f"{self._refused_rate:.3g}/s"
        return (
            f"<AdaptiveRate {self._rate:.3g}/s (window {self._window:g}s, margin "
            f"{self._margin:.1%}, last 429 at {refused}, cuts={self.cuts}, "
            f"increases={self.increases}, storms={self.storms})>"
        )


def _lowest(current: float | None, rate: float) -> float:
    return rate if current is None else min(current, rate)
