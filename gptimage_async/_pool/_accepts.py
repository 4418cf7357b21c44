"""Which lanes of a pool accept a request: a create goes only to a lane that takes it.

The providers check different things before anything is sent (API in One
takes prompts of 3-5000 characters, Runbase says nothing of a length): a
pool with both takes a request as long as one lane does, and routes it only
to those (the others count as refused for it, as a lane it failed on). When
no lane accepts it, ``InvalidRequestError`` names each lane's rule, before
anything is sent. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from .._exceptions import InvalidRequestError
from .._models import ImageRequest
from .._providers import Provider, get_provider
from ._lanes import Lane

__all__ = ["check_request", "refusals"]


@cache
def _adapter(provider: str) -> Provider:
    # Adapters are stateless: one per provider serves every lane and request.
    return get_provider(provider)


def refusals(lanes: Sequence[Lane], request: ImageRequest) -> dict[int, InvalidRequestError]:
    """The lanes (by index in ``lanes``) whose provider refuses ``request``, with its error."""
    refused: dict[str, InvalidRequestError | None] = {}
    for lane in lanes:
        if lane.provider not in refused:
            try:
                _adapter(lane.provider).validate(request)
            except InvalidRequestError as exc:
                refused[lane.provider] = exc
            else:
                refused[lane.provider] = None
    return {
        i: error for i, lane in enumerate(lanes) if (error := refused[lane.provider]) is not None
    }


def check_request(lanes: Sequence[Lane], request: ImageRequest) -> None:
    """Raise ``InvalidRequestError`` unless some lane of ``lanes`` accepts ``request``.

    One provider among the lanes: its own error, as a single-key session
    raises it. Several: an error naming each lane and its provider's rule
    (``field`` the first refusal's).
    """
    refused = refusals(lanes, request)
    if len(refused) < len(lanes):
        return
    errors = list(refused.values())
    if len({lane.provider for lane in lanes}) == 1:
        raise errors[0]
    parts = "; ".join(f"{lanes[i].label}: {error}" for i, error in refused.items())
    raise InvalidRequestError(
        f"no lane of the pool accepts this request ({parts})", field=errors[0].field
    )
