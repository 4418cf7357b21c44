"""The public surface: sorted, complete, documented."""

from __future__ import annotations

import inspect
import pickle
import typing

import pytest

import gptimage_async as gi


def test_all_is_sorted_and_complete() -> None:
    assert gi.__all__ == sorted(gi.__all__)
    public = {name for name in dir(gi) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(gi, name))}
    assert public - modules <= set(gi.__all__) | {"annotations"}
    for name in gi.__all__:
        assert hasattr(gi, name), name


def test_every_public_name_is_documented() -> None:
    for name in gi.__all__:
        obj = getattr(gi, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_every_error_is_a_gptimage_error() -> None:
    errors = [getattr(gi, n) for n in gi.__all__ if n.endswith("Error")]
    assert len(errors) >= 17
    for cls in errors:
        assert issubclass(cls, gi.GPTImageError)
    assert issubclass(gi.InvalidRequestError, ValueError)
    assert issubclass(gi.RunTimeoutError, TimeoutError)
    assert issubclass(gi.QuotaExceededError, gi.RateLimitError)


def test_literal_types_in_public_signatures_are_exported() -> None:
    hints = typing.get_type_hints(gi.Session.__init__)
    assert hints["on_exit"] == gi.OnExit
    assert hints["provider"] == gi.ProviderName | str
    assert typing.get_args(gi.OnExit) == ("wait", "cancel")


def test_no_private_name_is_exported() -> None:
    for name in gi.__all__:
        obj = getattr(gi, name)
        assert not getattr(obj, "__name__", name).startswith("_") or name == "__version__"
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            # Errors users catch are the documented ones, not transport internals.
            assert obj.__module__.startswith("gptimage_async"), name
            assert obj.__name__ == name, name


def test_run_is_a_handle_not_the_schedulers_record() -> None:
    public = {name for name in dir(gi.Run) if not name.startswith("_")}
    assert not public & {"errors", "next_poll", "last_pending_age", "resolved_at"}
    assert isinstance(inspect.getattr_static(gi.Run, "polls"), property)
    assert inspect.getattr_static(gi.Run, "polls").fset is None  # read-only


async def test_limiter_and_scheduler_are_read_only_views() -> None:
    from gptimage_async.testing import simulated_session

    async with simulated_session() as (_sim, session):
        view = session.limiter
        assert isinstance(view, gi.LimiterView) and view.rate > 0 and view.per > 0
        assert view.interval > 0 and view.waiting == 0
        with pytest.raises(AttributeError):
            view.rate = 1.0  # type: ignore[misc]
        assert isinstance(session.scheduler, gi.SchedulerView)
        assert len(session.scheduler) == session.scheduler.in_flight == 0
    with pytest.raises(gi.SessionClosedError):
        _ = gi.Session("runbase", api_key="sk-x").limiter


def test_the_sync_session_has_the_async_verbs_as_plain_calls() -> None:
    for verb in ("generate", "generate_many", "submit", "attach", "prepare"):
        assert callable(getattr(gi.Session, verb)), verb  # the async session's names
        assert not inspect.iscoroutinefunction(getattr(gi.SyncSession, verb)), verb
        assert inspect.getdoc(getattr(gi.SyncSession, verb)), verb
    for verb in ("download", "read", "close", "__enter__", "__exit__"):
        assert callable(getattr(gi.SyncSession, verb)), verb
    assert not inspect.iscoroutinefunction(gi.SyncRun.result)
    # A Result saves and reads itself in async code, and shows itself in notebooks.
    assert inspect.iscoroutinefunction(gi.Result.save)
    assert inspect.iscoroutinefunction(gi.Result.read)
    assert callable(gi.Result._repr_html_)


def test_every_error_class_lives_in_the_exceptions_module() -> None:
    import gptimage_async._exceptions as exceptions

    errors = [getattr(gi, n) for n in gi.__all__ if n.endswith("Error")]
    source = inspect.getsource(exceptions)
    for cls in errors:
        # Defined in _exceptions.py, but shown under the public path.
        # (inspect.getsourcefile follows __module__, so read the module's own text.)
        assert getattr(exceptions, cls.__name__) is cls, cls
        assert f"\nclass {cls.__name__}(" in source, cls
        assert cls.__module__ == "gptimage_async", cls
        assert pickle.loads(pickle.dumps(cls)) is cls  # found again by its public path
        # The tree drawn in the module's docstring names every class.
        assert f" {cls.__name__}" in (exceptions.__doc__ or ""), cls
    # Their old homes still export them, so old imports keep working.
    from gptimage_async._download import DownloadError
    from gptimage_async._journal import JournalError
    from gptimage_async._prompts import PromptFileError

    assert (DownloadError, JournalError, PromptFileError) == (
        gi.DownloadError,
        gi.JournalError,
        gi.PromptFileError,
    )
