"""The synchronous API: a ``Session`` on an event loop of its own, in a background thread.

Plain code (a script, a notebook cell, a Flask or Django view) calls
``SyncSession`` methods; each call runs the async verb on the session's loop
and blocks the calling thread until it ends, re-raising the same typed error.
Many threads may call one ``SyncSession`` at once: the loop serialises
nothing but the session's own bookkeeping, and the rate limiter and poller
see every thread's runs, as they would one process's tasks.

A notebook cell runs inside an event loop that is already running, where
``asyncio.run`` fails; the background loop does not care which loop (if any)
the caller runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Coroutine, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

from ._bulk import check_concurrency, check_many
from ._exceptions import GPTImageError, InvalidRequestError, SessionClosedError
from ._images import read_images, save_images
from ._loop_thread import Call, LoopThread
from ._models import AspectRatio, ImageRequest, Quality, Result, RunStatus
from ._pool import Lane
from ._providers import ProviderName
from ._registry import RunRegistry
from ._run import Run
from ._session import Session
from ._stats import SessionStats
from ._sync_close import Closer
from ._sync_job import Job
from ._views import LaneStatus

__all__ = ["SyncRun", "SyncSession"]

logger = logging.getLogger("gptimage_async")

T = TypeVar("T")


class SyncRun:
    """A ``Run`` for synchronous code: ``result()`` blocks until the run is resolved.

    Returned by ``SyncSession.submit`` and ``SyncSession.attach``. Safe to
    read and wait on from any thread.
    """

    __slots__ = ("_owner", "_run")

    def __init__(self, owner: SyncSession, run: Run) -> None:
        self._owner = owner
        self._run = run

    @property
    def id(self) -> str | None:
        """The provider's run id."""
        return self._run.id

    @property
    def status(self) -> RunStatus:
        """The run's last known status."""
        return self._run.status

    @property
    def polls(self) -> int:
        """Status requests sent for this run so far."""
        return self._run.polls

    @property
    def error(self) -> BaseException | None:
        """The error the run was resolved with (``None`` while in flight or on success)."""
        return self._run.error

    @property
    def outcome(self) -> Result | None:
        """The result if the run succeeded, else ``None``."""
        return self._run.outcome

    @property
    def lane(self) -> str | None:
        """The lane the run lives on, ``"provider:fingerprint"`` (``Run.lane``)."""
        return self._run.lane

    @property
    def request(self) -> ImageRequest | None:
        """What was asked for (``None`` for a run attached by id alone)."""
        return self._run.request

    def done(self) -> bool:
        """True once the run is resolved (result or error)."""
        return self._run.done()

    def result(self, timeout: float | None = None) -> Result:
        """Block until the run's ``Result``; raise its typed error if it failed.

        ``timeout`` (seconds, default ``None``: as long as it takes) bounds
        this wait only: ``TimeoutError`` is raised and the run carries on.
        A Ctrl-C stops the wait, not the run.
        """
        if self._owner.closed and self._run.done():  # resolved: no need of the closed loop
            if self._run.error is not None:
                raise self._run.error
            outcome = self._run.outcome
            assert outcome is not None
            return outcome
        try:
            return self._owner._call(self._run.result(timeout))
        except TimeoutError:
            # Run.result's own message speaks of awaiting: say it the sync way.
            raise TimeoutError(
                f"run {self._run.id or '(not created yet)'} did not resolve within {timeout} s "
                "(this wait only: the run carries on; call result() again to keep waiting)"
            ) from None

    def __repr__(self) -> str:
        return f"<SyncRun {self._run.id} {self._run.provider} {self._run.status.value}>"


class SyncSession:
    """A ``Session`` for synchronous code: scripts, notebook cells, Flask or Django views.

    >>> with SyncSession("runbase") as session:                   # doctest: +SKIP
    ...     result = session.generate("a ceramic lamp", quality="high")
    ...     paths = session.download(result, "out/")

    Takes the same arguments as ``Session`` and raises the same
    ``ConfigurationError`` for bad ones. The session opens at once, on an
    event loop of its own in a daemon thread (one loop and one thread per
    ``SyncSession``); every method runs the async verb there and blocks the
    caller until it ends, raising the same typed errors. It works with no
    event loop (a script), inside a running one (a Jupyter cell, where
    ``asyncio.run`` fails), and from many threads at once (a sync web
    framework's workers): open one per process at start-up and share it, so
    its rate limiter and poller see all the traffic for the key. Its thread
    does not survive ``os.fork()``: a server that forks workers from a loaded
    app (gunicorn ``--preload``) opens one in each worker, after the fork.

    ``close()`` (or leaving the ``with`` block) closes it: it waits for runs
    in flight unless ``on_exit="cancel"`` (or the block raised), then stops
    the loop and its thread. A session never closed is closed when the
    interpreter exits, its runs in flight let go (``atexit``); one dropped
    unclosed (a notebook cell run again rebinds its name) is closed when it
    is garbage-collected, with a ``ResourceWarning``, so its thread, its
    connections and its rate limiter do not linger. A closed session cannot
    be reopened: methods raise ``SessionClosedError``, and so does ``with``.

    Ctrl-C while a call waits (a script, or a notebook's "interrupt") stops
    it as the command line does: no more creates are sent, creates on the
    wire are let be answered, and ``KeyboardInterrupt`` is re-raised with a
    note listing the ids of the runs already created (paid for; ``attach``
    them later). The session stays open. A second Ctrl-C quits at once: the
    creates still on the wire are not waited for (the note says how many;
    their fate is unknown), nor by the close of a ``with`` block it leaves.
    This holds inside a running event loop too (a script whose
    ``asyncio.run(main())`` makes the blocking call): while a call blocks the
    main thread, a Ctrl-C raises ``KeyboardInterrupt`` there, in place of
    asyncio's handler (which could only cancel a task that cannot run until
    the call ends); asyncio's handler is put back when the call returns.
    So too in a script a shell started in the background (``python x.py &``
    in a script: SIGINT ignored from the start, as POSIX asks), as the
    command line (the exact rule: ``_loop_thread.ctrl_c_interrupts``; a
    ``SIG_IGN`` the program sets after import stays, unless the process
    started ignoring SIGINT, which cannot be told apart). Every blocking
    call, opening the session and ``close()`` included, waits the same way
    (``_loop_thread.Call.wait``). Calls from other threads are not
    interrupted: Python delivers a Ctrl-C to the main thread only.

    Prefer the async ``Session`` when the calling code is itself async (an
    asyncio web app, FastAPI, aiohttp: blocking its loop stalls every request
    it serves), or to follow each of many concurrent runs as it ends
    (``as_completed``). ``generate_many`` here runs many at once as well.
    """

    def __init__(self, provider: ProviderName | str = "runbase", **options: Any) -> None:
        self._session = Session(provider, **options)
        self._cancel_on_exit = options.get("on_exit", "wait") == "cancel"
        self._thread = LoopThread(self._session.open(), name="gptimage-sync")
        #: All a close needs; it holds no reference back to this object.
        self._closer = Closer(self._session, self._thread)
        self._jobs = self._closer.jobs
        #: The KeyboardInterrupt of a second Ctrl-C: leaving ``with`` by it quits at once.
        self._quit: BaseException | None = None
        # The exit is the closer's own atexit hook (it says so in a WARNING).
        weakref.finalize(self, self._closer.collected).atexit = False

    # -- lifecycle -------------------------------------------------------------

    @property
    def provider(self) -> str:
        """The provider's name: ``"runbase"`` or ``"apiinone"``."""
        return self._session.provider

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self._session.base_url

    @property
    def stats(self) -> SessionStats:
        """The session's counters (requests, creates, polls, ...), read-only."""
        return self._session.stats

    @property
    def runs(self) -> RunRegistry:
        """The session's runs, read-only: in flight by id, counts, ``abandoned``, ``undelivered``.

        See ``Session.runs``; each read is a snapshot, safe from any thread.
        """
        return self._session.runs

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closer.closed

    @property
    def _closed(self) -> bool:
        return self._closer.closed

    def __enter__(self) -> Self:
        """Raises ``SessionClosedError`` on a closed session, as ``Session`` does."""
        if self._closed:
            raise SessionClosedError(
                "this SyncSession is closed; a closed session cannot be reused, "
                "create a new SyncSession"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Session.__aexit__'s rule: leaving through an exception always cancels.
        at_once = exc is not None and exc is self._quit
        self._quit = None
        self._close(cancel=exc_type is not None or self._cancel_on_exit, at_once=at_once)

    def close(self, *, cancel: bool | None = None) -> None:
        """Close the session: wait for runs in flight (or cancel them), then stop the loop.

        ``cancel``: ``None`` (default) follows the session's ``on_exit``, as
        leaving ``with`` does: ``"cancel"`` lets runs in flight go, ``"wait"``
        (the default) waits for them; ``True``/``False`` overrides it.
        Calls other threads are making are waited for too; when cancelling
        they stop at once (no more creates: those already on the wire are
        answered) and raise ``SessionClosedError``. Cancelled runs end with
        ``SessionClosedError`` carrying their run id. A Ctrl-C while waiting
        closes at once (creates on the wire are not waited for either).
        Closing twice is harmless; a closed session cannot be reopened.
        """
        self._close(cancel=self._cancel_on_exit if cancel is None else cancel)

    def _close(self, *, cancel: bool, at_once: bool = False) -> None:
        self._closer.close(cancel=cancel, at_once=at_once)

    # -- calls -----------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], job: Job | None = None) -> T:
        """Run ``coro`` on the session's loop and block until it ends."""
        if self._closed:
            coro.close()
            raise SessionClosedError("the SyncSession is closed; create a new one")
        call = self._thread.call(coro if job is None else self._run_job(job, coro))
        try:
            return call.wait()  # a Ctrl-C stops it (Call.wait)
        except KeyboardInterrupt as interrupt:
            self._interrupted(call, job, interrupt)
            raise
        except asyncio.CancelledError:  # only close() cancels a call not interrupted
            raise SessionClosedError(
                "the SyncSession was closed while this call waited; its runs were let go"
            ) from None

    def _interrupted(self, call: Call[Any], job: Job | None, interrupt: BaseException) -> None:
        if job is None:  # only a wait: the run carries on
            call.cancel()
            return
        self._thread.run_soon(job.stop)
        try:
            # Creates on the wire are answered within the request timeout.
            call.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: quit at once
            # Read before the cancel: the job's cancelled creates forget they were sent.
            interrupt.add_note(job.report(self.provider, cut=True))
            call.cancel()
            # Leaving a with block by it closes at once too.
            self._quit = interrupt
            return
        except BaseException:  # the job's own end; the Ctrl-C is what is raised
            pass
        interrupt.add_note(job.report(self.provider))

    def _job(self) -> Job:
        return Job(self._session)

    async def _run_job(self, job: Job, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:  # raced a close(): nothing may start now
            coro.close()
            raise SessionClosedError("the SyncSession is closed; create a new one")
        task = asyncio.current_task()
        assert task is not None
        self._jobs.add(task)
        try:
            return await coro
        finally:
            self._jobs.discard(task)
            job.ended()

    # -- verbs -----------------------------------------------------------------

    def prepare(
        self,
        request: ImageRequest | str,
        *,
        aspect_ratio: AspectRatio | None = None,
        quality: Quality | None = None,
        image_urls: Iterable[str] | None = None,
    ) -> ImageRequest:
        """Validate a request for this session's provider without sending anything.

        Raises ``InvalidRequestError``.
        """
        return self._session.prepare(
            request, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
        )

    def generate(
        self,
        request: ImageRequest | str,
        *,
        aspect_ratio: AspectRatio | None = None,
        quality: Quality | None = None,
        image_urls: Iterable[str] | None = None,
    ) -> Result:
        """Create a run and block until its ``Result``; raise its typed error if it fails.

        ``request`` is a prompt or an ``ImageRequest``; the options fill in
        what it left unset (``None``: the provider's default). Invalid input
        raises ``InvalidRequestError`` before anything is sent.
        """
        req = self.prepare(
            request, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
        )
        job = self._job()
        return self._call(job.generate(req), job)

    def submit(
        self,
        request: ImageRequest | str,
        *,
        aspect_ratio: AspectRatio | None = None,
        quality: Quality | None = None,
        image_urls: Iterable[str] | None = None,
    ) -> SyncRun:
        """Create a run and return its handle once the provider has accepted it.

        ``handle.result()`` then blocks until it is resolved. Raises what
        ``Session.submit`` raises (``InvalidRequestError`` before sending).
        """
        req = self.prepare(
            request, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
        )
        job = self._job()
        return SyncRun(self, self._call(job.submit(req), job))

    def attach(
        self,
        run_id: str,
        *,
        request: ImageRequest | None = None,
        created_at: float | None = None,
        lane: str | Lane | None = None,
    ) -> SyncRun:
        """Track a run created earlier (by id); nothing is created. See ``Session.attach``.

        ``lane`` names the lane that created it (``run.lane``, a ``Lane``, its
        label or fingerprint): required in a pool of several. Raises
        ``ConfigurationError`` for a lane not in the pool, before any request.
        """
        return SyncRun(self, self._call(self._attach(run_id, request, created_at, lane)))

    async def _attach(
        self,
        run_id: str,
        request: ImageRequest | None,
        created_at: float | None,
        lane: str | Lane | None,
    ) -> Run:
        return self._session.attach(run_id, request=request, created_at=created_at, lane=lane)

    @property
    def lanes(self) -> tuple[LaneStatus, ...]:
        """The session's lanes as they are now (``Session.lanes``)."""
        return self._session.lanes

    @overload
    def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: Literal[False] = False,
        concurrency: int | None = None,
    ) -> list[Result]: ...

    @overload
    def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: Literal[True],
        concurrency: int | None = None,
    ) -> list[Result | GPTImageError]: ...

    def generate_many(
        self,
        requests: Iterable[ImageRequest | str],
        *,
        return_exceptions: bool = False,
        concurrency: int | None = None,
    ) -> list[Result] | list[Result | GPTImageError]:
        """Generate many images at once; block until all are done; results in input order.

        Every request is validated before anything is sent. With
        ``return_exceptions=False`` the first failure is raised and creates
        not yet sent are dropped (runs already created stay tracked); with
        ``True`` each item is its ``Result`` or its error. ``concurrency``
        (``int`` >= 1) caps the runs in flight at once; default ``None``:
        twice what the key's budget keeps in flight (its rate times the
        longer of its window and the session's 95th-percentile run duration), at
        least 32, as ``Session.generate_many``. The rate limiter paces the
        creates either way. Ctrl-C stops it as described on ``SyncSession``.
        """
        check_many(requests)  # the async verbs' own checks
        check_concurrency(concurrency)
        prepared: list[ImageRequest | GPTImageError] = []
        for item in requests:
            try:
                prepared.append(self.prepare(item))
            except GPTImageError as exc:
                if not return_exceptions:
                    raise
                prepared.append(exc)
        job = self._job()
        many = self._many(job, prepared, return_exceptions, concurrency)
        return self._call(many, job)

    async def _many(
        self,
        job: Job,
        prepared: list[ImageRequest | GPTImageError],
        return_exceptions: bool,
        concurrency: int | None,
    ) -> list[Result | GPTImageError]:
        # Session.generate_many's own window rule, from the session's duration model.
        window = concurrency or self._session.window_size()
        return await job.generate_many(prepared, return_exceptions=return_exceptions, window=window)

    def download(
        self, result: Result, dest_dir: str | os.PathLike[str], *, stem: str | None = None
    ) -> list[Path]:
        """Save a result's images into ``dest_dir``; return their paths. See ``Result.save``.

        The images are fetched through this session (its loop, proxy, user
        agent and connections), whichever session resolved the result: an
        async ``Session``'s result given here from inside its own running
        loop is saved too (handed to that loop, blocked by this call, it
        would never be). Raises ``DownloadError``.
        """
        if not isinstance(result, Result):
            raise InvalidRequestError(f"download() takes a Result, not {type(result).__name__}")
        return self._call(save_images(result, dest_dir, stem=stem, via=self._session))

    def read(self, result: Result) -> list[bytes]:
        """Each of a result's images as bytes, in ``urls`` order. See ``Result.read``.

        Fetched through this session, as ``download``. Raises ``DownloadError``.
        """
        if not isinstance(result, Result):
            raise InvalidRequestError(f"read() takes a Result, not {type(result).__name__}")
        return self._call(read_images(result, via=self._session))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SyncSession {self.provider} {self.base_url} {state}>"
