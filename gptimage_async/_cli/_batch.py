"""``gptimage-async batch``: a prompt file to images, resumably; and its ``--dry-run``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
from collections import Counter
from pathlib import Path

from .._batch import Batch, BatchReport, BatchStop
from .._batch_plan import missing_lane_notice
from .._exceptions import DiskSpaceError, GPTImageError
from .._gallery import GALLERY_NAME
from .._journal import JournalError
from .._models import ASPECT_RATIOS, QUALITIES
from .._pool import Pool
from .._progress import Display, format_duration, make_display
from .._prompts import BatchPrompt, PromptFileError, read_prompts
from .._providers import get_provider
from .._session import Session
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Failure, UsageError, check_writable
from ._sessions import check_endpoint_options, job_cap, load_pool, make_session, open_session
from ._signals import quit_at_once, stop_on_signals
from ._spend import JobSpend, at_most_lines, fit_under_cap, session_spend_lines

__all__ = ["batch"]

#: What a request leaves unset means this at the provider.
_DEFAULT_QUALITY = "medium"
_DEFAULT_ASPECT_RATIO = "1:1"


async def batch(args: argparse.Namespace) -> int:
    """Run ``batch``; return the exit code."""
    if args.dry_run:
        return _dry_run(args)
    async with open_session(args) as session:
        prompts = _read(args, session)
        check_writable(args.out)
        live = {"auto": None, "live": True, "log": False}[args.progress]
        display = make_display(sys.stderr, live=live)
        job = Batch(
            session,
            prompts,
            args.out,
            concurrency=args.concurrency,
            download=not args.no_download,
            resubmit_unknown=args.resubmit_unknown,
            # The in-process simulator gets a new port each time: its old runs are gone.
            attach_elsewhere=args.provider == "simulator",
            on_event=display.event,
            expected_image_bytes=round(args.expected_image_mb * 1e6),
            gallery=not args.no_gallery,
        )
        notice = job.endpoint_notice()
        # The in-process simulator's port is new each run: that change is no news.
        if notice is not None and args.provider != "simulator":
            print(f"note: {notice}", file=sys.stderr, flush=True)
        if _nothing_fits(args, job, session):
            return EXIT_FAILED  # as a batch stopped on the cap: its prompts stay pending

        def stop() -> None:
            job.stop()  # first: a terminal gone (SIGHUP) cannot be written to
            with contextlib.suppress(OSError):
                display.note(
                    "interrupt: stopping; waiting for the creates in flight to be answered "
                    "(Ctrl-C again to quit at once)"
                )

        def quit_now() -> None:
            with contextlib.suppress(OSError):
                display.close(job.progress)
            on_wire = job.on_wire
            quit_at_once(
                f"\ninterrupted at once: {on_wire} create(s) were on the wire; their prompts "
                f"are recorded with an unknown fate (see: gptimage-async unknown {_q(args.out)}). "
                "Rerun the same command to resume the rest."
                if on_wire
                else "\ninterrupted at once; rerun the same command to resume"
            )

        with stop_on_signals(stop, quit_now) as interrupted:
            async with session:
                report = await _run_with_display(job, display, args.out)
    # A terminal that hung up (SIGHUP) takes no summary: the manifest has it all.
    with contextlib.suppress(OSError):
        job_spend = getattr(args, "job_spend", None)
        _summary(report, requests=session.stats.requests, out=args.out, job=job_spend)
        for line in session_spend_lines(session, job_spend):
            print(line)
        for lane, runs in sorted(job.missing_lanes.items()):
            print(missing_lane_notice(lane, runs))
        if report.gallery is not None:
            print(f"gallery: {args.out / GALLERY_NAME}")
        elif not args.no_gallery:  # the warning above says why; never claim a page not there
            print(
                f"gallery: not written; rebuild it with: gptimage-async gallery {_q(args.out)}",
                file=sys.stderr,
            )
        elif (args.out / GALLERY_NAME).exists():  # a page left as it was: never taken as current
            print(
                f"gallery: not rewritten (--no-gallery); {args.out / GALLERY_NAME} is from an "
                f"earlier run (rebuild it with: gptimage-async gallery {_q(args.out)})"
            )
        if interrupted:
            # From the manifest's rows, as the rerun will see them (not a live count).
            pending = [e for e in report.entries if e.status == "pending"]
            running = sum(1 for e in pending if e.run_id is not None)
            # The in-process simulator ends with this process, and its runs with it.
            kept = (
                "lost with this simulator: the rerun finds them gone, records them failed "
                "and a run after it sends them again"
                if args.provider == "simulator"
                else "paid for: the rerun attaches them"
            )
            print(
                f"interrupted: {report.counts['succeeded']} done, {running} run(s) left in flight "
                f"({kept}), {len(pending) - running} prompt(s) not "
                "sent; rerun the same command to resume",
                file=sys.stderr,
            )
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED


def _read(args: argparse.Namespace, session: Session) -> list[BatchPrompt]:
    try:
        return read_prompts(
            args.prompts,
            aspect_ratio=args.aspect_ratio,
            quality=args.quality,
            session=session,
            format=args.format,
        )
    except PromptFileError as exc:
        raise UsageError(str(exc)) from None


async def _run_with_display(job: Batch, display: Display, out: Path) -> BatchReport:
    async def ticker() -> None:
        # A terminal that hung up ends the ticking, not the batch.
        with contextlib.suppress(OSError):
            while True:
                display.tick(job.progress)
                await asyncio.sleep(display.interval)

    ticking = asyncio.create_task(ticker())
    try:
        report = await job.run()
    except (JournalError, DiskSpaceError) as exc:
        # Raised before anything is sent.
        raise UsageError(exc.message) from None
    except (TimeoutError, GPTImageError):
        raise  # not a write: a TimeoutError (RunTimeoutError too) is an OSError
    except OSError as exc:
        raise Failure(f"cannot write to {out}: {exc.strerror or exc}") from None
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
        # Always: a live display left open would keep the cursor hidden.
        with contextlib.suppress(OSError):
            display.close(job.progress)
    return report


def _dry_run(args: argparse.Namespace) -> int:
    """Validate the prompt file and say what a batch would send now; send nothing.

    Prompts done in ``--out`` (its journal) are not counted, nor those a real
    run would attach or leave unknown: the count and cost are what it would pay.
    """
    check_endpoint_options(args)  # what a real run refuses, a dry run refuses too
    pool: Pool | None = None
    cap: float | None = None  # this run's: what earlier runs left of the job's (job_cap)
    if args.pool is not None:
        # A pool's lanes are named by their keys' fingerprints: its keys must be set.
        pool = load_pool(args.pool)
        name = pool.lanes[0].provider
        cap = job_cap(args, pool)
        session = make_session(None, lanes=pool.lanes, routing=pool.routing, spend_cap=cap)
        by_lane = True
    else:
        name = "runbase" if args.provider == "simulator" else args.provider
        key = "" if args.provider == "simulator" else os.environ.get(_env_var(name), "").strip()
        # The session is never opened: it only validates, so it needs no key; with
        # the key, earlier runs are matched to it as a real run would.
        session = make_session(name, api_key=key or "dry-run", base_url=args.base_url)
        by_lane = bool(key)
    prompts = _read(args, session)
    job = Batch(
        session,
        prompts,
        args.out,
        resubmit_unknown=args.resubmit_unknown,
        attach_elsewhere=args.provider == "simulator",
    )
    try:
        plan = job.plan(by_lane=by_lane)
    except (OSError, JournalError) as exc:
        raise UsageError(f"cannot read the journal in {args.out}: {exc}") from None
    notice = job.endpoint_notice()  # the same note the real run prints
    if notice is not None and args.provider != "simulator":
        print(f"note: {notice}", file=sys.stderr, flush=True)
    todo = [item.prompt for item in plan.submit]
    # The real run's arithmetic: creates past what the job's cap leaves are refused.
    fit = None if pool is None else fit_under_cap(pool, cap, (p.request.quality for p in todo))
    past_cap = 0 if fit is None else len(todo) - fit
    todo = todo[: len(todo) - past_cap]
    qualities = Counter(p.request.quality or _DEFAULT_QUALITY for p in todo)
    ratios = Counter(p.request.aspect_ratio or _DEFAULT_ASPECT_RATIO for p in todo)
    provider = get_provider(name)
    where = "the simulator" if args.provider == "simulator" else name
    if pool is not None:
        where = f"a pool of {len(pool.lanes)} lane(s), routing {pool.routing}"
    print(
        f"dry run: {len(todo)} of {len(prompts)} prompts would be sent to {where}; nothing was sent"
    )
    settled = Counter(s.kind for s in plan.settled)
    others = [
        f"{plan.skipped} already done in {args.out}" if plan.skipped else "",
        f"{len(plan.attach)} earlier runs would be followed again" if plan.attach else "",
        f"{settled['unknown']} of unknown fate (not sent; see 'unknown')"
        if settled["unknown"]
        else "",
        f"{past_cap} past the spend cap ({cap:g} left for this run)" if past_cap else "",
    ]
    others += [missing_lane_notice(lane, n) for lane, n in sorted(plan.missing_lanes.items())]
    if any(others):
        print("not sent: " + ", ".join(o for o in others if o))
    if todo:
        print(f"by quality: {_counts(qualities, sorted(QUALITIES))}")
        print(f"by aspect ratio: {_counts(ratios, sorted(ASPECT_RATIOS))}")
    prices = provider.credits_per_image
    if pool is not None:
        for line in at_most_lines(pool, qualities):
            print(line)
    elif prices is None or args.provider == "simulator":
        print(f"expected cost: {where} publishes no price per image")
    else:
        total = sum(prices[q] * n for q, n in qualities.items())
        each = ", ".join(f"{prices[q]} per {q} image" for q in sorted(prices))
        print(f"expected cost: {total} credits ({each})")  # published: credits (price_unit)
    return EXIT_OK


def _nothing_fits(args: argparse.Namespace, job: Batch, session: Session) -> bool:
    """Whether the run would send nothing, every create past the spend cap: then it says so.

    Refused before the session opens (no request), when no earlier run is left
    to follow and not even the first prompt to send fits under what the job's
    cap leaves (``job_cap``, ``fit_under_cap``): the words a stopped batch
    would print, with this run's spend (none) against the job's cap.
    """
    cap = session.pool.spend_cap
    if cap is None:
        return False
    try:
        plan = job.plan()
    except (OSError, JournalError):
        return False  # run() reports a journal it cannot read
    qualities = [item.prompt.request.quality for item in plan.submit]
    if plan.attach or not qualities or fit_under_cap(session.pool, cap, qualities):
        return False
    job_spend: JobSpend | None = getattr(args, "job_spend", None)
    total = len(plan.submit) + len(plan.settled)
    print(f"{total} prompts: {plan.skipped} already done, {len(plan.submit)} pending (none sent)")
    if job_spend is not None:
        print(
            f"spend: 0 in this run (cap {job_spend.cap:g} for the job: {job_spend.earlier:g} "
            f"spent by earlier runs into {args.out}, {cap:g} left for this run)"
        )
        why = f"the job's spend cap of {job_spend.cap:g} leaves {cap:g} for this run"
    else:
        why = f"the spend cap is {cap:g}"
    print(
        f"stopped before sending: nothing would be sent: {why}, and the first prompt to send "
        f"would pass it; raise spend_cap in {args.pool} to send the {len(plan.submit)} left"
    )
    return True


def _env_var(provider: str) -> str:
    return get_provider(provider).env_var


def _counts(counter: Counter[str], order: list[str]) -> str:
    return ", ".join(f"{key} {counter[key]}" for key in order if counter[key])


def _q(path: Path) -> str:
    """``path`` as one shell word, for a command the user may paste."""
    return shlex.quote(str(path))


def _summary(report: BatchReport, *, requests: int, out: Path, job: JobSpend | None = None) -> None:
    counts = report.counts
    p = report.progress
    total = len(report.entries)
    parts = [f"{counts['succeeded']} succeeded"]
    if report.skipped:
        parts[0] += f" ({report.skipped} already done)"
    parts += [f"{counts[s]} {s}" for s in ("failed", "unknown", "pending") if counts[s]]
    print(f"{total} prompts: {', '.join(parts)} in {format_duration(p.elapsed)}")
    if report.submitted or report.attached:
        print(
            f"this run: {report.submitted} creates sent"
            + (f" ({report.refused} refused: no run made)" if report.refused else "")
            + f", {report.attached} earlier runs "
            f"re-attached, {requests} requests in all, {p.rate_limited} rate-limited"
        )
    print(f"manifest: {report.manifest}")
    if report.stop_reason:
        print(f"stopped early: {report.stop_reason}")
        if job is not None and job.earlier and report.stop_cause is BatchStop.SPEND_CAP:
            # The cap the refusal names is this run's: what earlier runs left of the job's.
            left = max(0.0, job.cap - job.earlier)
            print(
                f"  (this run's cap, {left:g}, is what earlier runs into {out} left of the "
                f"job's cap of {job.cap:g}: they spent {job.earlier:g})"
            )
    if counts["failed"]:
        print("failed prompts are tried again when you rerun the same command")
    if counts["unknown"]:
        print(
            f"{counts['unknown']} prompt(s) have a create of unknown fate: a run may exist and "
            f"be paid for. List them with 'gptimage-async unknown {_q(out)}', find their runs "
            "on the provider's dashboard and settle each ('gptimage-async settle "
            f"{_q(out)} LINE RUN_ID', or --not-created); or rerun with --resubmit-unknown to "
            "send them again (at the risk of paying twice)."
        )
