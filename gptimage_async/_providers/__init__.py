"""Provider adapters, and the one registry of provider names.

Adding a provider is one adapter module here (a ``Provider`` subclass, see
``_base``) and one registration line in ``ADAPTERS`` below, plus its name in
``ProviderName`` (a ``Literal`` for type checkers; a test keeps the two equal).
Every other place that lists providers (``Session``, the CLI, ``testing``)
reads them from here.
"""

from __future__ import annotations

from typing import Literal

from .._exceptions import ConfigurationError
from .._secrets import shown
from ._base import Provider, RunSnapshot
from .apiinone import ApiInOne
from .runbase import Runbase

__all__ = ["ADAPTERS", "Provider", "ProviderName", "RunSnapshot", "get_provider", "provider_names"]

#: The names ``Session(provider=...)`` accepts.
ProviderName = Literal["runbase", "apiinone"]

#: Adapter class by provider name: the registry.
ADAPTERS: dict[str, type[Provider]] = {
    Runbase.name: Runbase,
    ApiInOne.name: ApiInOne,
}


def provider_names() -> tuple[str, ...]:
    """The registered provider names, in registration order."""
    return tuple(ADAPTERS)


def get_provider(name: str) -> Provider:
    """A new adapter for ``name`` (one of ``provider_names()``).

    Raises ``ConfigurationError`` for a name not registered.
    """
    try:
        return ADAPTERS[name]()
    except (KeyError, TypeError):
        known = ", ".join(sorted(ADAPTERS))
        raise ConfigurationError(
            f"unknown provider {shown(name)}; expected one of {known}"
        ) from None
