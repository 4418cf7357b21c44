"""The session's bulk verbs: ``generate_many``, ``as_completed`` and the tail they mark.

``BulkVerbs`` is a base of ``Session``: the verbs that run many creates over
the one bulk engine (``_bulk``: the windowed feed, the marking of a job's last
creates, the clean stop). The window and tail sizes are computed in ``_bulk``
from the first lane's limiter and duration model and the router's rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, overload

from ._bulk import (
    FEEDERS,
    Countdown,
    TailRule,
    check_concurrency,
    check_many,
    default_window,
    in_input_order,
    stream,
    tail_size,
)
from ._exceptions import GPTImageError
from ._models import ImageRequest, Result, RunStatus
from ._run import Run

if TYPE_CHECKING:
    from ._lane import LaneRuntime
    from ._lifecycle import Lifecycle
    from ._providers import Provider
    from ._router import Router

__all__ = ["BulkVerbs"]


class BulkVerbs:
    """``Session``'s verbs for many requests at once (see ``Session``)."""

    # Set by Session._setup.
    _lanes: list[LaneRuntime]
    _router: Router
    _life: Lifecycle
    _tasks: set[asyncio.Task[Any]]
    _clock: Callable[[], float]
    _provider: Provider

    if TYPE_CHECKING:

        def prepare(self, request: ImageRequest | str) -> ImageRequest: ...

    @overload
    async def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: Literal[False] = False,
        concurrency: int | None = None,
    ) -> list[Result]: ...

    @overload
    async def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: Literal[True],
        concurrency: int | None = None,
    ) -> list[Result | GPTImageError]: ...

    async def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: bool = False,
        concurrency: int | None = None,
    ) -> list[Result] | list[Result | GPTImageError]:
        """Generate many images; results come back in input order.

        Every request is validated before anything is sent. With
        ``return_exceptions=False`` the first failure is raised and creates
        not yet sent are dropped (runs already created stay tracked); with
        ``True`` each item is its ``Result`` or its error. ``concurrency``
        caps how many runs are in flight at once (default ``None``: the rate
        limiter paces creates, within the window ``as_completed`` describes).
        """
        check_many(requests)
        prepared: list[ImageRequest | GPTImageError] = []
        for item in requests:
            try:
                prepared.append(self.prepare(item))
            except GPTImageError as exc:
                if not return_exceptions:
                    raise
                prepared.append(exc)
        self._life.check_open()
        todo = [(i, e) for i, e in enumerate(prepared) if not isinstance(e, GPTImageError)]
        runs = self._stream(self.tail_rule().countdown(todo), concurrency=concurrency)
        return await in_input_order(
            runs, prepared, return_exceptions=return_exceptions, keep=self._life
        )

    def as_completed(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        concurrency: int | None = None,
    ) -> AsyncGenerator[Run, None]:
        """Submit ``requests`` and yield each run as it finishes, in finishing order.

        Each yielded run is resolved: ``await run`` returns its result or
        raises its error at once. A request that fails validation or whose
        create fails is yielded as a run with ``id`` ``None`` carrying that
        error; ``run.index`` is the request's position in ``requests``.
        Requests are read lazily, so a generator of millions is fine (an
        iterable without ``len()`` is read up to ``tail_size()`` requests, at
        most 1,024, ahead of the creates, to see the job's end coming: its
        last creates go ahead of polls, see ``submit(ahead_of_polls=...)``).

        Creates keep at most a window of runs ahead of the consumer:
        ``concurrency`` if given, else twice what the key's budget keeps in
        flight (at least ``FEEDERS``, 32). A consumer that stops pulling (a
        ``break``) therefore stops the creates too, even if the generator is
        not closed; runs already created stay tracked by the session. Close
        the generator to cancel the creates at once, with ``aclosing``:

        >>> from contextlib import aclosing                  # doctest: +SKIP
        >>> async with aclosing(session.as_completed(prompts)) as runs:
        ...     async for run in runs:
        ...         print(run.index, run.error or run.outcome.urls)
        ...         if run.error:
        ...             break
        """
        check_many(requests)
        # The stream itself, not a generator wrapping it: a generator dropped
        # unclosed is then finalized once, not twice concurrently.
        source = self.tail_rule().countdown(enumerate(requests), sized=requests)
        return self._stream(source, concurrency=concurrency)

    def tail_size(self) -> int:
        """How many of a bulk job's last creates go ahead of polls (``int``, >= 1).

        Twice the believed rate (requests per second) times the time a run
        may take: the learned 99th-percentile duration, or the limiter's
        window (seconds) before enough runs have finished to know it
        (``_bulk.tail_size``). 1 before the session is open.
        """
        lane = self._lanes[0]
        model = lane.scheduler.model if lane.scheduler is not None else None
        return tail_size(lane.limiter, model, self._router.rate())

    def tail_rule(self) -> TailRule:
        """The rule that marks a bulk job's last creates (see ``_bulk.TailRule``).

        Its tail is ``tail_size()`` less the creates already waiting for a
        rate-limit slot (the first marked create promotes them too). A bulk
        job run outside the session (``Batch``, the CLI) marks its creates by
        it and passes the mark as ``submit(ahead_of_polls=...)``.
        """
        return TailRule(self.tail_size, self._creates_waiting)

    def _creates_waiting(self) -> int:
        # Every lane's: in a pool a job's creates wait on whichever lane they were bound to.
        return sum(lane.creator.waiting for lane in self._lanes if lane.creator is not None)

    def _stream(
        self, source: Countdown[tuple[int, ImageRequest | str]], *, concurrency: int | None
    ) -> AsyncGenerator[Run, None]:
        self._life.check_open()
        check_concurrency(concurrency)

        def full(ahead: int) -> bool:
            if concurrency is not None:
                return ahead >= concurrency
            return ahead >= FEEDERS and ahead >= self.window_size()

        return stream(
            source,
            self._create_or_failed,
            full=full,
            feeders=min(FEEDERS, concurrency or FEEDERS),
            tasks=self._tasks,
            keep=self._life,
        )

    def window_size(self) -> int:
        """How many runs a bulk job without ``concurrency`` starts ahead of its consumer.

        ``int``, >= 1: ``_bulk.default_window`` from the first lane's limiter
        and duration model and the router's rate. Internal to the package
        (``SyncSession.generate_many`` uses it), not public API.
        """
        lane = self._lanes[0]
        model = lane.scheduler.model if lane.scheduler is not None else None
        return default_window(lane.limiter, model, self._router.rate())

    async def _create_or_failed(
        self, item: ImageRequest | str, index: int, last: bool, on_send: Callable[[], None]
    ) -> Run:
        try:
            req = self.prepare(item)
            return await self._router.create(req, index=index, on_send=on_send, ahead_of_polls=last)
        except GPTImageError as exc:
            now = self._clock()
            request = item if isinstance(item, ImageRequest) else None
            run = Run(None, self._provider.name, request, created_at=now, deadline=now, index=index)
            run._fail(exc, RunStatus.ERRORED)
            return run
