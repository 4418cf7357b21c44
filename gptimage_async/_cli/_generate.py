"""``gptimage-async generate``: N runs of one prompt, printed (and saved) as each ends.

Standard output holds the image URLs only (one a line, for scripts); notes,
failures and the spend at the end (per lane and in all, as ``batch`` prints
it: ``_spend``) go to standard error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from .._batch import DEFAULT_CREATE_WINDOW, check_free_space
from .._batch_run import out_of_space
from .._bulk import Sender
from .._create import RESEND_HINT
from .._download import download, slugify
from .._exceptions import DiskSpaceError, GPTImageError, InvalidRequestError, SessionClosedError
from .._models import ImageRequest, Result
from .._run import Run
from .._session import Session
from .._transport import Transport
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, check_writable
from ._sessions import open_session
from ._signals import quit_at_once, stop_on_signals
from ._spend import session_spend_lines

__all__ = ["SIMULATOR_URLS_NOTE", "generate"]

#: Said when ``--provider simulator`` prints URLs that end with the command.
SIMULATOR_URLS_NOTE = (
    "note: these URLs are served by the simulator this command started, and stop "
    "working when it ends; pass --out DIR to save the images"
)


async def generate(args: argparse.Namespace) -> int:
    """Run ``generate``; return the exit code."""
    async with open_session(args) as session:
        try:
            request = session.prepare(
                args.prompt,
                aspect_ratio=args.aspect_ratio,
                quality=args.quality,
                image_urls=args.image_url,
            )
        except InvalidRequestError as exc:
            raise UsageError(exc.message) from None
        if args.out is not None:
            check_writable(args.out)  # before paying for a run that could not be saved
            try:  # as batch does: runs that could not be saved are not worth buying
                check_free_space(args.out, args.n, round(args.expected_image_mb * 1e6))
            except DiskSpaceError as exc:
                raise UsageError(exc.message) from None
        elif args.provider == "simulator":
            print(SIMULATOR_URLS_NOTE, file=sys.stderr, flush=True)
        generation = Generation(session, request, args.out)
        with stop_on_signals(generation.stop, generation.quit_now) as interrupted:
            async with session:
                failures = await generation.run(args.n)
    # What the runs cost, per lane and in all; on stderr: stdout is the URLs only.
    for line in session_spend_lines(session, getattr(args, "job_spend", None)):
        print(line, file=sys.stderr, flush=True)
    if generation.disk_full:
        print(
            f"stopped: the disk is full; {generation.not_sent} not sent",
            file=sys.stderr,
            flush=True,
        )
    if interrupted:
        print(generation.created_report(), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK if failures == 0 else EXIT_FAILED


class Generation:
    """``generate --n N``: N runs through the bulk engine, each printed as it ends.

    ``stop()`` sends no more creates (the engine's clean stop); runs already
    created are paid for: a stop leaves them to the provider and reports their
    ids, and creates on the wire are let be answered to get theirs.
    """

    def __init__(self, session: Session, request: ImageRequest, out: Path | None) -> None:
        self._session = session
        self._request = request
        self._out = out
        self._sender = Sender(session.submit)
        self._following: set[anyio.CancelScope] = set()
        #: A signal stopped it: runs are no longer followed. A full disk only stops
        #: the creates: a run created meanwhile (paid for) is still followed and printed.
        self._interrupted = False
        self.created: list[Run] = []
        self.failures = 0
        #: Set when a full disk stopped the creates; ``not_sent`` counts those dropped.
        self.disk_full = False
        self.not_sent = 0

    def stop(self) -> None:
        """No more creates; stop following the runs (they stay the provider's)."""
        self._interrupted = True
        self._sender.stop()
        for scope in list(self._following):
            scope.cancel()

    def quit_now(self) -> None:
        """A second signal: report what exists and exit at once."""
        quit_at_once(self.created_report())

    async def run(self, n: int) -> int:
        """Create ``n`` runs (the last ones marked by the session's tail rule); failures.

        At most ``DEFAULT_CREATE_WINDOW`` creates wait for the rate limiter at
        once, as in a batch: a stop (a signal, a full disk) then drops few, and
        the tail's mark only promotes the creates of its own window.
        """
        feed = self._session.tail_rule().countdown(range(n))
        gate = anyio.Semaphore(DEFAULT_CREATE_WINDOW)
        taken = 0
        async with anyio.create_task_group() as tg:
            while True:
                await gate.acquire()
                if self._sender.stopping:
                    break
                try:
                    _, last = feed.take()
                except StopIteration:
                    break
                taken += 1
                tg.start_soon(self._one, last, gate)
        self.not_sent += n - taken
        return self.failures

    async def _one(self, last: bool, gate: anyio.Semaphore) -> None:
        try:
            run = await self._sender.send(self._request, last=last)
        except GPTImageError as exc:
            self._failed(exc)
            return
        finally:
            gate.release()
        if run is None:
            self.not_sent += 1
            return  # stopped before it was sent: nothing was created
        self.created.append(run)
        with anyio.CancelScope() as following:
            self._following.add(following)
            if self._interrupted:
                following.cancel()
            try:
                result = await run
            except GPTImageError as exc:
                self._failed(exc)
                return
            finally:
                self._following.discard(following)
            for url in result.urls:
                print(url, flush=True)
            if self._out is not None:
                saved = await _save(
                    result,
                    self._out,
                    self._request.prompt,
                    self._session.base_url,
                    self._session.transport,
                )
                if saved is not None and out_of_space(saved):
                    # A full disk: buy no more images that could not be saved either.
                    self.disk_full = True
                    self._sender.stop()
                self.failures += saved is not None

    def _failed(self, exc: GPTImageError) -> None:
        self.failures += 1
        # The session's advice on uncertain creates is a library option: not the command's.
        text = str(exc).replace(", " + RESEND_HINT, " before running the command again.")
        print(f"failed: {type(exc).__name__}: {text}", file=sys.stderr)

    def created_report(self) -> str:
        """``interrupted``, and the runs created (paid for) with what is known of each."""
        lines = [f"  {run.id}  {_state_at_stop(run)}" for run in self.created]
        paid = (
            f"; runs already created (paid for; they may still finish at {self._session.provider}):"
            if lines
            else "; no run was created"
        )
        if self._sender.on_wire:
            paid += (
                f" ({self._sender.on_wire} create(s) were on the wire: their runs may exist too)"
            )
        return "\n".join([f"interrupted{paid}", *lines])


def _state_at_stop(run: Run) -> str:
    """What is known of a run at the stop: its provider's verdict, or that it was still going.

    A run the closing session let go ends locally with ``SessionClosedError``
    ("errored"), which says nothing of its fate at the provider.
    """
    if not run.done() or isinstance(run.error, SessionClosedError):
        return "in flight at the stop"
    return run.status.value


async def _save(
    result: Result, out: Path, prompt: str, base_url: str, transport: Transport
) -> GPTImageError | None:
    """Save ``result``'s images into ``out`` through the session's transport (its proxy,
    user agent); the error, if they could not be."""
    try:
        paths = await download(
            result,
            out,
            stem=f"{slugify(prompt)}-{result.run_id}",
            base_url=base_url,
            transport=transport,
        )
    except GPTImageError as exc:
        print(f"failed to save {result.run_id}: {exc}", file=sys.stderr)
        return exc
    for path in paths:
        print(f"saved {path}", file=sys.stderr)
    return None
