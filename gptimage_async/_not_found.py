"""When a 404 answering a poll means the run is really gone.

Pure rules on plain numbers, like the rest of ``_planner`` (which re-exports
them); the wait before polling such a run again is ``_planner.not_found_ceiling``.
"""

from __future__ import annotations

__all__ = [
    "MAX_NOT_FOUND",
    "NOT_FOUND_GRACE",
    "NOT_FOUND_POLLS",
    "not_found_grace",
    "not_found_is_final",
]

#: Consecutive 404s before a run is "not found" (an attached run, or one of
#: ours past ``NOT_FOUND_GRACE``).
MAX_NOT_FOUND = 3
#: Seconds after its create during which a 404 on a run *we* created means
#: "not visible yet", never "not found". Both sellers' read side may lag
#: their write side briefly (PROVIDERS.md, "Several keys, two sellers"; 3 s
#: was seen): 30 s is ten times that, and three times the longest typical
#: run (3-10 s), so a lagging read side has long caught up, while a run that
#: really is gone still fails within a small share of ``run_timeout``. A
#: time, not a count of polls: at a high rate limit three polls take 0.1 s.
NOT_FOUND_GRACE = 30.0
#: Within the grace, 404 retries back off up to the grace over this many
#: (or the rate window, if longer): a run that takes a while to appear costs
#: a handful of polls, whatever the rate limit, and is seen within seconds.
NOT_FOUND_POLLS = 8


def not_found_grace(*, attached: bool, created_ago: float | None) -> float:
    """Seconds after its create during which a 404 on a run means "not visible yet".

    A run we created may be invisible to the read side for a while
    (``NOT_FOUND_GRACE``); an ``attached`` one was created at an unknown
    time, or never (a made-up id): none, unless ``created_ago`` says how many
    seconds ago it was created (an earlier process's run, from its journal):
    then what is left of the grace.
    """
    if created_ago is not None:
        return max(0.0, NOT_FOUND_GRACE - created_ago)
    return 0.0 if attached else NOT_FOUND_GRACE


def not_found_is_final(*, age: float, grace: float, errors: int) -> bool:
    """Whether a 404 answering a poll sent at ``age`` seconds ends the run.

    ``grace`` is the run's grace in seconds (``NOT_FOUND_GRACE`` for a run we
    created, 0 for an attached one); ``errors`` counts the failed polls in a
    row before this one. Within the grace, never; after it, at the
    ``MAX_NOT_FOUND``-th failed poll in a row.
    """
    return age >= grace and errors + 1 >= MAX_NOT_FOUND
