"""The public surface: sorted, complete, documented."""

from __future__ import annotations

import inspect

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
