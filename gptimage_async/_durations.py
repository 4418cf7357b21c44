"""Learning how long runs take, from what polls can see.

A poll only tells whether a run was done at that moment, so a finished run's
duration is known to lie in ``(lo, hi]``: ``lo`` the age of its last "not
done" poll (0 if none), ``hi`` the age of the poll that found it done. Taking
``hi`` as the duration would bias the estimate upward and, since polls are
placed from the estimate, drift later and later. ``DurationModel`` instead
keeps the nonparametric maximum-likelihood estimate for interval-censored
data (Turnbull's EM) on a grid, which stays consistent when poll times depend
on earlier answers.

It forgets, so a provider that changes speed mid-batch is followed: only the
last ``WINDOW`` runs count, and a change detector (two one-sided CUSUMs, one
per tail) drops everything before an abrupt change. Planned polls sit at the
95% quantile, so a run seen still going past it (or done before the 5%
quantile) is a 1-in-20 event; a few of them in a row mean the runs are not
drawn from the model any more, and the model restarts from the runs since the
excursion began.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
from collections.abc import Callable, Iterable

__all__ = ["DurationModel"]

#: Grid resolution of the estimated distribution.
BINS = 64
#: Observations kept: recent ones only, so the model follows a provider that drifts slowly.
WINDOW = 384
#: Finished runs needed before the model is trusted over cold-start probing.
MIN_OBSERVATIONS = 4
#: EM iterations for a fit from scratch, and for one warm-started from the last fit.
ITERATIONS = 30
WARM_ITERATIONS = 6
#: Share of uniform mass blended into a warm start.
WARM_MIX = 0.1
#: The grid spans the longest duration seen times this, rounded up to a power of
#: SPAN_STEP: the grid (and so the warm start) survives most new observations.
SPAN_HEADROOM = 1.1
SPAN_STEP = 1.25
#: The smoothed estimate's kernel: at most this many bins each side.
SMOOTH_BINS = 12
#: ... and smooths only between the first and last bin holding this much mass.
SUPPORT_MASS = 0.002
#: Change detection. Each tail holds ``TAIL`` of the runs under the model; after
#: a change, a share ``CHANGED`` of them would land there. Each observation adds
#: its log-likelihood ratio to a CUSUM; past ``THRESHOLD`` (four hits in a row,
#: or four in five) the model restarts. A false alarm needs about four 1-in-20
#: events among five runs: once in tens of thousands of runs.
TAIL = 0.05
CHANGED = 0.8
THRESHOLD = 10.5
_HIT = math.log(CHANGED / TAIL)
_MISS = math.log((1.0 - CHANGED) / (1.0 - TAIL))
#: The detector watches only a model fitted on at least this many runs.
DETECT_AFTER = 16


def _lowest(counts: collections.Counter[tuple[int, int]]) -> int:
    """The bin below which the maximum-likelihood estimate has no mass.

    ``counts`` holds each observation's bins ``(first, last)``. Below the largest
    ``first`` not past the smallest ``last`` (the start of Turnbull's first
    innermost interval), every observation covering a bin also covers that
    interval, so mass there moves inside without lowering the likelihood.
    """
    shortest = min(last for _, last in counts)
    return max(first for first, _ in counts if first <= shortest)


class DurationModel:
    """Estimated distribution of run durations (seconds from create to done).

    >>> m = DurationModel()
    >>> for lo, hi in [(0, 3), (2, 4), (3, 5), (1, 3), (0, 4)]:
    ...     m.observe(lo, hi)
    >>> 2.0 < m.quantile(0.5) < 4.0
    True
    """

    __slots__ = (
        "_cdf",
        "_dirty",
        "_down",
        "_down_since",
        "_mean",
        "_obs",
        "_p",
        "_scdf",
        "_sp",
        "_span",
        "_up",
        "_up_since",
        "changes",
        "in_flight",
        "longest",
        "observed",
    )

    def __init__(self) -> None:
        self._obs: collections.deque[tuple[float, float]] = collections.deque(maxlen=WINDOW)
        self._span = 0.0
        self._p: list[float] = []
        self._cdf: list[float] = []  # cumulative mass at each bin's upper edge
        self._mean = 0.0
        self._sp: list[float] = []  # the estimate smoothed (see ``quantile``), and its cdf
        self._scdf: list[float] = []
        self._dirty = 0
        # The two CUSUMs (runs slower than the model, faster than it), and how
        # many observations ago each one's current excursion began.
        self._up = self._down = 0.0
        self._up_since = self._down_since = 0
        #: Finished runs the current model is fitted on (since the last change).
        self.observed = 0
        #: Abrupt changes of speed detected (each one restarted the model).
        self.changes = 0
        #: Where to read the runs still in flight (``None``: nowhere): the ages
        #: (seconds) at which each was last seen still going. They are right-
        #: censored observations ("longer than this"): a fit counts them, so runs
        #: slower than the model move it before they finish, and the finished
        #: runs (the quicker ones, when speed drifts) do not bias it short.
        self.in_flight: Callable[[], Iterable[float]] | None = None
        #: The longest age at which a run was seen done: during cold start, a
        #: first poll there will most likely find a new run done.
        self.longest = 0.0

    @property
    def ready(self) -> bool:
        """True once enough runs have finished to place polls from the estimate."""
        return self.observed >= MIN_OBSERVATIONS

    def observe(self, lo: float, hi: float) -> None:
        """A run finished after ``lo`` and no later than ``hi`` seconds of age."""
        lo = max(0.0, lo)
        if not math.isfinite(hi) or hi <= lo:
            return
        changed = self._detect(lo, hi) if self.observed >= DETECT_AFTER else 0
        self._obs.append((lo, hi))
        self.observed += 1
        self.longest = max(self.longest, hi)
        self._dirty += 1
        if changed:
            self._restart(changed)

    def _detect(self, lo: float, hi: float) -> int:
        """Feed the CUSUMs; the number of runs since a change, or 0 if none is seen."""
        slow = lo >= self.quantile(1.0 - TAIL)
        fast = hi <= self.quantile(TAIL)
        if self._up == 0.0:
            self._up_since = 0
        if self._down == 0.0:
            self._down_since = 0
        self._up = max(0.0, self._up + (_HIT if slow else _MISS))
        self._down = max(0.0, self._down + (_HIT if fast else _MISS))
        self._up_since += 1
        self._down_since += 1
        if self._up >= THRESHOLD:
            return self._up_since
        if self._down >= THRESHOLD:
            return self._down_since
        return 0

    def _restart(self, keep: int) -> None:
        """Forget every run before the last ``keep`` ones: the provider changed speed."""
        recent = list(self._obs)[-keep:]
        self._obs.clear()
        self._obs.extend(recent)
        self.observed = len(recent)
        self.longest = max(hi for _, hi in recent)
        self._up = self._down = 0.0
        self._p = []
        self._cdf = []
        self._dirty = len(recent)
        self.changes += 1

    def observations(self, limit: int = WINDOW) -> list[tuple[float, float]]:
        """The last ``limit`` observations as ``(lo, hi)`` seconds, oldest first (to save)."""
        obs = self._obs
        return list(itertools.islice(obs, max(0, len(obs) - limit), None))

    def restore(self, observations: Iterable[tuple[float, float]]) -> None:
        """Start from saved ``(lo, hi)`` observations, as if those runs had just finished.

        Invalid pairs are skipped; the change detector still watches what
        follows, so a provider that changed speed since is caught as usual.
        """
        for lo, hi in observations:
            lo = max(0.0, float(lo))
            hi = float(hi)
            if math.isfinite(hi) and hi > lo:
                self._obs.append((lo, hi))
                self.observed += 1
                self.longest = max(self.longest, hi)
                self._dirty += 1

    def cdf(self, age: float, *, smooth: bool = False) -> float:
        """Estimated probability that a run is done by ``age`` (seconds).

        ``smooth``: of the smoothed estimate (see ``quantile``).
        """
        self._refresh()
        p, cdf = (self._sp, self._scdf) if smooth else (self._p, self._cdf)
        if age <= 0.0 or not cdf:
            return 0.0
        if age >= self._span:
            return 1.0
        width = self._span / BINS
        i = min(int(age / width), BINS - 1)
        below = cdf[i - 1] if i else 0.0
        return below + p[i] * (age - i * width) / width

    def mean(self) -> float:
        """The estimated mean duration, seconds (0 before any observation)."""
        self._refresh()
        return self._mean

    def quantile(self, q: float, *, smooth: bool = False) -> float:
        """The age (seconds) by which a share ``q`` of runs is done (0 before any observation).

        ``smooth``: of the estimate smoothed over the width of a typical
        observation. The maximum-likelihood estimate puts its mass in lumps
        (on the few ages where observations' intervals overlap most), which
        the polls' coarseness, not the runs, put there: a rule that splits
        the distribution into even parts (``_planner.share_age``) reads the
        smoothed one, or it would skip the gaps between lumps.
        """
        self._refresh()
        p, cdf = (self._sp, self._scdf) if smooth else (self._p, self._cdf)
        if not cdf:
            return 0.0
        q = min(max(q, 0.0), 1.0)
        i = bisect.bisect_left(cdf, q)
        if i >= BINS:
            return self._span
        below = cdf[i - 1] if i else 0.0
        width = self._span / BINS
        mass = p[i]
        frac = (q - below) / mass if mass > 0 else 0.0
        return (i + min(max(frac, 0.0), 1.0)) * width

    def conditional_quantile(self, after: float, q: float) -> float | None:
        """The age by which a share ``q`` of runs still going at ``after`` is done.

        ``None`` when the model puts (almost) no mass beyond ``after``: the run
        is already longer than anything seen.
        """
        base = self.cdf(after)
        remaining = 1.0 - base
        if remaining < 1e-6:
            return None
        return max(after, self.quantile(base + q * remaining))

    def _refresh(self) -> None:
        if not self._dirty:
            return
        # Refit rarely once the model has plenty of data: it is cheap, not free.
        if self._cdf and self._dirty < max(1, len(self._obs) // 12):
            return
        self._dirty = 0
        self._fit()

    def _fit(self) -> None:
        obs = self._obs
        longest = max(hi for _, hi in obs) * SPAN_HEADROOM
        span = SPAN_STEP ** math.ceil(math.log(longest, SPAN_STEP))
        width = span / BINS
        if self._p and span == self._span:
            # EM updates multiply: a bin at zero stays there, and an observation
            # covering only such bins would be ignored. Keep every bin alive.
            p = [(1.0 - WARM_MIX) * x + WARM_MIX / BINS for x in self._p]
            iterations = WARM_ITERATIONS
        else:
            p, iterations = [1.0 / BINS] * BINS, ITERATIONS
        self._span = span
        # Each observation covers a run of whole bins [first, last], its ends
        # rounded to the nearest bin edge. Taking every bin the interval touches
        # would let "done by a" and "not done at a" share the bin holding a, and
        # the EM would pile all mass into that one bin.
        # Runs polled alike cover the same bins: fit each distinct range once,
        # weighted by its count (in bulk, a few dozen ranges stand for hundreds).
        counts: collections.Counter[tuple[int, int]] = collections.Counter()
        for lo, hi in obs:
            first = min(round(lo / width), BINS - 1)
            last = min(round(hi / width) - 1, BINS - 1)
            if last < first:
                first = last = min(int((lo + hi) / 2 / width), BINS - 1)
            counts[first, last] += 1
        # A run still going at age a ended in [a, inf): past the grid, in its last bin.
        censored = [a for a in self.in_flight()] if self.in_flight is not None else []
        for age in censored:
            if 0.0 < age < math.inf:
                counts[min(round(age / width), BINS - 1), BINS - 1] += 1
        ranges = [(first, last + 1, count) for (first, last), count in counts.items()]
        n = sum(counts.values())
        # EM only shrinks mass where no run can have ended slowly (from an even
        # start, or a warm one's even share): below ``_lowest`` it starts at zero,
        # or the polls' smoothed split visits it (fake clock, steady arrivals at
        # 3/8 of the budget: 9.3% -> 8.7% late). Not at the top: after a slowdown
        # that trace is what sends planned polls past the runs seen so far before
        # the change detector restarts the model (polls per run 1.01 -> 1.05).
        low = _lowest(counts)
        p = [x if j >= low else 0.0 for j, x in enumerate(p)]
        for _ in range(iterations):
            prefix = [0.0, *itertools.accumulate(p)]
            weight = [0.0] * (BINS + 1)
            for first, end, count in ranges:
                mass = prefix[end] - prefix[first]
                if mass <= 0.0:
                    continue
                share = count / mass
                weight[first] += share
                weight[end] -= share
            running = 0.0
            new = [0.0] * BINS
            for j in range(BINS):
                running += weight[j]
                new[j] = p[j] * running / n
            total = sum(new)
            if total <= 0.0:
                new = [1.0 / BINS] * BINS
                total = 1.0
            p = [x / total for x in new]
        self._p = p
        self._cdf = list(itertools.accumulate(p))
        self._cdf[-1] = 1.0
        self._mean = width * sum((i + 0.5) * x for i, x in enumerate(p))
        # A triangular kernel as wide as half the median observation's interval, or
        # as Silverman's rule of thumb has it for n runs (0.9 min(sd, IQR / 1.34)
        # n^-1/5: the IQR keeps two bands of runs apart; a triangle of half-width
        # a has an sd of a / sqrt 6), the wider.
        spans = sorted(hi - lo for lo, hi in obs)
        variance = width * width * sum((i + 0.5) ** 2 * x for i, x in enumerate(p))
        sd = math.sqrt(max(0.0, variance - self._mean**2))
        cdf = self._cdf
        iqr = (bisect.bisect_left(cdf, 0.75) - bisect.bisect_left(cdf, 0.25)) * width
        rule = math.sqrt(6.0) * 0.9 * min(sd, iqr / 1.34) * n**-0.2
        half = min(SMOOTH_BINS, max(1, round(max(spans[len(spans) // 2] / 2, rule) / width)))
        kernel = [half + 1 - abs(k) for k in range(-half, half + 1)]
        # Only within the estimate's own support (the bins holding SUPPORT_MASS
        # or more; the warm start's uniform mix leaves a trace in every bin):
        # smoothing fills the gaps between lumps, never the ages where no run
        # ends. What the kernel puts past an end is reflected back inside, so
        # the density does not sag there.
        support = [j for j, x in enumerate(p) if x >= SUPPORT_MASS] or [0, BINS - 1]
        first, last = support[0], support[-1]
        smooth = [0.0] * BINS
        for j in range(first, last + 1):
            x = p[j]
            if x:
                for k, w in enumerate(kernel, j - half):
                    if k < first:
                        k = min(last, 2 * first - 1 - k)
                    elif k > last:
                        k = max(first, 2 * last + 1 - k)
                    smooth[k] += x * w
        total = sum(smooth)
        self._sp = [x / total for x in smooth]
        self._scdf = list(itertools.accumulate(self._sp))
        self._scdf[-1] = 1.0

    def __repr__(self) -> str:
        if not self.ready:
            return f"<DurationModel learning ({self.observed} observed)>"
        return (
            f"<DurationModel p5={self.quantile(0.05):.3g}s p50={self.quantile(0.5):.3g}s "
            f"p95={self.quantile(0.95):.3g}s ({self.observed} observed, "
            f"{self.changes} changes)>"
        )
