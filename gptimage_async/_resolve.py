"""From a finished poll to a run's end: the ``Result`` or typed error, resolved once.

What a poll's answer means (its verdict: the run's state, retry, wait as
told, fail) is ``_classify.read_poll``'s, the one reader every request goes
through; when to poll again is ``_planner.py``'s. This module ends runs:

* ``outcome_of`` turns a finished run's snapshot into its ``Result`` or its
  ``RunFailedError``;
* ``timed_out`` is the error of a run not done by its deadline;
* ``settle`` resolves the run exactly once and then calls the session back
  (which drops it from the registry and signals idleness).
"""

from __future__ import annotations

from collections.abc import Callable

from ._endpoint import absolute_url
from ._exceptions import GPTImageError, RunFailedError, RunTimeoutError
from ._models import Result, RunStatus
from ._providers import RunSnapshot
from ._run import Run

__all__ = ["outcome_of", "settle", "timed_out"]


def outcome_of(
    run: Run, snapshot: RunSnapshot, *, elapsed: float, root: str | None = None
) -> Result | RunFailedError:
    """The ``Result`` of a run seen succeeded, or the error of one seen failed or canceled.

    ``elapsed`` is seconds from the create to now. ``root``: the API root of
    the run's lane; image URLs that come relative (``/files/a.png``, which
    PROVIDERS.md does not rule out) are made absolute against it, so a result
    means the same copied, pickled, shown in a notebook or returned by a web
    app, whichever lane of a pool made it.
    """
    run_id = run.run_id or snapshot.id
    if snapshot.status is RunStatus.SUCCEEDED:
        return Result(
            run_id=run_id,
            provider=run.provider,
            urls=[absolute_url(url, root) for url in snapshot.urls],
            request=run.request,
            elapsed=elapsed,
        )
    if snapshot.status is RunStatus.CANCELED:
        message = snapshot.error_message or "the run was canceled on the provider's side"
    else:
        message = snapshot.error_message or "the provider reports that the run failed"
    return RunFailedError(message, run_id=run_id, code=snapshot.error_code)


def timed_out(run: Run, status_word: str | None) -> RunTimeoutError:
    """The error of a run not done by the session's ``run_timeout``.

    ``status_word`` is the provider's own word for the status last seen, if any.
    """
    seen = "" if status_word is None else f", last seen with status {status_word!r}"
    message = (
        f"run {run.run_id} was not done by the session's run_timeout "
        f"(polled {run._polls} times{seen}); it may still finish: attach() it to keep waiting"
    )
    return RunTimeoutError(message, run_id=run.run_id)


def settle(
    run: Run,
    outcome: Result | GPTImageError,
    on_resolved: Callable[[Run], None],
    *,
    status: RunStatus | None = None,
) -> bool:
    """Resolve ``run`` with ``outcome`` unless it already is; True if this call resolved it.

    ``status`` is the final status of a failed run (default: ``FAILED`` for a
    ``RunFailedError``, else ``ERRORED``). ``on_resolved`` (the session's:
    registry update, idle signal) runs only for the call that resolved it.
    """
    if isinstance(outcome, Result):
        resolved = run._resolve(outcome)
    else:
        if status is None:
            failed = isinstance(outcome, RunFailedError)
            status = RunStatus.FAILED if failed else RunStatus.ERRORED
        resolved = run._fail(outcome, status)
    if resolved:
        on_resolved(run)
    return resolved
