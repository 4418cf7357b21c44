"""Generate one image per line of a prompt file, as fast as the provider's rate limit allows.

    RUNBASE_API_KEY=sk-... python examples/bulk_script.py prompts.txt > results.jsonl
    python examples/bulk_script.py --simulate prompts.txt   # the built-in simulator, no key

Blank lines and lines starting with ``#`` are skipped, as in ``examples/prompts.txt``.

Each finished run is written as one JSON line, in finishing order, as soon as
it finishes: ``{"index": 3, "prompt": ..., "run_id": ..., "urls": [...]}`` or
``{"index": 4, ..., "error": "RunFailedError", "detail": ...}``. A summary goes
to stderr. One ``Session`` does everything: its limiter paces creates and
polls together, so there is no concurrency knob to tune for the rate limit
(``--concurrency`` only caps how many runs are in flight at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import IO, Any, Literal

import msgspec

import gptimage_async as gi
from gptimage_async.simulator import SimulatorConfig
from gptimage_async.testing import simulated_session


class Summary(msgspec.Struct):
    succeeded: int = 0
    failed: int = 0
    elapsed: float = 0.0


def read_prompts(lines: Iterable[str]) -> Iterator[str]:
    """Lines stripped, skipping blank ones and ``#`` comments (as ``gptimage-async batch`` does).

    Lazy, so a file of millions is fine.
    """
    for line in lines:
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            yield prompt


async def generate_all(
    session: gi.Session,
    prompts: Iterable[str],
    out: IO[str],
    *,
    quality: Literal["medium", "high"] | None = None,
    concurrency: int | None = None,
) -> Summary:
    """Generate every prompt and write one JSON line per run to ``out`` as it finishes."""
    summary = Summary()
    started = time.monotonic()

    def request(prompt: str) -> gi.ImageRequest | str:
        try:
            return gi.ImageRequest(prompt, quality=quality)
        except gi.InvalidRequestError:
            return prompt  # the session reports it as a failed run, in its place

    requests = (request(prompt) for prompt in prompts)
    async for run in session.as_completed(requests, concurrency=concurrency):
        line: dict[str, Any] = {
            "index": run.index,
            "prompt": run.request.prompt if run.request else None,  # None: invalid
            "run_id": run.id,
        }
        if run.outcome is not None:
            summary.succeeded += 1
            line["urls"] = run.outcome.urls
        else:
            summary.failed += 1
            line["error"] = type(run.error).__name__
            line["detail"] = str(run.error)
        out.write(msgspec.json.encode(line).decode() + "\n")
        out.flush()
    summary.elapsed = time.monotonic() - started
    return summary


@contextlib.asynccontextmanager
async def open_session(args: argparse.Namespace) -> AsyncIterator[gi.Session]:
    if args.simulate:
        # 50x faster than real time, with the real Runbase rate limit (scaled).
        config = SimulatorConfig(time_scale=0.02)
        async with simulated_session(args.provider, config=config) as (_, session):
            yield session
    else:
        async with gi.Session(args.provider, base_url=args.base_url) as session:
            yield session


async def amain(args: argparse.Namespace, prompts: Iterable[str], out: IO[str]) -> Summary:
    async with open_session(args) as session:
        summary = await generate_all(
            session, prompts, out, quality=args.quality, concurrency=args.concurrency
        )
        stats = session.stats
    print(
        f"{summary.succeeded} succeeded, {summary.failed} failed in {summary.elapsed:.1f} s; "
        f"{stats.requests} requests ({stats.polls} polls), {stats.rate_limited} rate limited",
        file=sys.stderr,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("prompts", type=argparse.FileType("r"), nargs="?", default=sys.stdin)
    parser.add_argument("--provider", default="runbase", choices=["runbase", "apiinone"])
    parser.add_argument("--base-url", default=None, help="API root (default: the provider's)")
    parser.add_argument("--quality", choices=["medium", "high"], default=None)
    parser.add_argument("--concurrency", type=int, default=None, help="most runs in flight")
    parser.add_argument("--simulate", action="store_true", help="use the built-in simulator")
    args = parser.parse_args(argv)
    with args.prompts:
        summary = asyncio.run(amain(args, read_prompts(args.prompts), sys.stdout))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
