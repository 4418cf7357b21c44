"""A bulk job's tail: the runs its last creates overtook (left out of the duration model)."""

from __future__ import annotations

import math

__all__ = ["TailCohort"]


class TailCohort:
    """The runs a bulk job's last creates overtook: created in [``since``, ``until``].

    Their polls were held back on purpose (the last creates go ahead of
    polls), so they saw durations only coarsely, and the model's EM would
    smear those wide intervals over its grid. Chosen by creation time, never
    by outcome, so leaving them out does not bias the sample. Times are loop
    seconds.
    """

    __slots__ = ("since", "until")

    def __init__(self) -> None:
        self.since = math.inf
        self.until = math.inf

    def began(self, now: float, *, longest: float) -> None:
        """The job's last creates go ahead of polls from ``now``.

        Runs still going now had their polls held too: from one ``longest``
        run (seconds) back.
        """
        # A tail that ended a moment ago (between two of a stream's last
        # creates) goes on; one long over gives way to a new cohort.
        if self.since == math.inf or self.until < now - longest:
            self.since = now - longest
        self.until = math.inf

    def ended(self, now: float) -> None:
        """The last create marked so was sent at ``now``."""
        self.until = now

    def __contains__(self, created_at: object) -> bool:
        return isinstance(created_at, float | int) and self.since <= created_at <= self.until

    def __repr__(self) -> str:
        return f"<TailCohort [{self.since}, {self.until}]>"
