"""Provider adapters. Adding a provider: one module here and one line in ``PROVIDERS``."""

from __future__ import annotations

from .._exceptions import ConfigurationError
from ._base import Provider, RunSnapshot
from .apiinone import ApiInOne
from .runbase import Runbase

__all__ = ["PROVIDERS", "Provider", "RunSnapshot", "get_provider"]

PROVIDERS: dict[str, type[Provider]] = {
    Runbase.name: Runbase,
    ApiInOne.name: ApiInOne,
}


def get_provider(name: str) -> Provider:
    """The adapter for ``name`` (``"runbase"`` or ``"apiinone"``)."""
    try:
        return PROVIDERS[name]()
    except (KeyError, TypeError):
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigurationError(f"unknown provider {name!r}; expected one of {known}") from None
