"""One OS process of a fleet sharing a key through Redis (run by the tests as a subprocess).

``python -m tests.redis.worker '<json>'`` prints one JSON line with what it saw.
Modes:

* ``batch``: open a session with ``redis=`` against the simulator and generate
  ``runs`` images; report results, errors and the limiter's belief. With
  ``"go": true`` it first prints ``ready`` and waits for a line on stdin.
* ``acquire``: no HTTP at all; take ``count`` slots of ``priority`` from a
  ``SharedLimiter`` (all at once, or one after another) and report the
  ``time.monotonic()`` of each grant (the loop clock: comparable across
  processes on Linux). ``pause_at`` / ``retry_after`` make it report a 429.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import gptimage_async as gi
from gptimage_async._budget import PRIORITY_CREATE, PRIORITY_POLL
from gptimage_async._budget.shared import SharedLimiter


async def batch(opts: dict[str, Any]) -> dict[str, Any]:
    await _wait_until(opts.get("start_at"))
    await _wait_for_go(opts)
    requests, per = opts["rate_limit"]
    belief = gi.RateLimit(requests=requests, per=per, ceiling=bool(opts.get("ceiling")))
    prompts = [f"{opts['name']}-{i}" for i in range(opts["runs"])]
    started = time.monotonic()
    async with gi.Session(
        "runbase",
        api_key=opts["key"],
        base_url=opts["base_url"],
        rate_limit=belief,
        redis=opts["redis"],
        run_timeout=opts.get("run_timeout", 120.0),
    ) as session:
        limiter = session.limiter
        rate_start = limiter.rate
        results = await session.generate_many(prompts, return_exceptions=True)
        fallback = limiter.redis_errors
        rate_end = limiter.rate
    return {
        "ok": sum(isinstance(r, gi.Result) for r in results),
        "errors": [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, gi.Result)],
        "run_ids": [r.run_id for r in results if isinstance(r, gi.Result)],
        "rate_start": rate_start,
        "rate_end": rate_end,
        "redis_errors": fallback,
        "requests": session.stats.requests,
        "started": started,
        "finished": time.monotonic(),
    }


async def acquire(opts: dict[str, Any]) -> dict[str, Any]:
    requests, per = opts["rate_limit"]
    belief = gi.RateLimit(requests=requests, per=per, ceiling=True)
    limiter = SharedLimiter(belief, provider="runbase", api_key=opts["key"], redis=opts["redis"])
    await limiter.start()
    priority = PRIORITY_POLL if opts.get("priority") == "poll" else PRIORITY_CREATE
    grants: list[float] = []
    queued: list[float] = []
    try:
        await _wait_until(opts.get("start_at"))
        if opts.get("pause_at") is not None:
            await _wait_until(opts["pause_at"])
            limiter.on_rate_limited(time.monotonic(), opts["retry_after"])
            await asyncio.sleep(0.05)  # let the report reach Redis before leaving
        else:
            queued.append(time.monotonic())

            async def one() -> None:
                grants.append(await limiter.acquire(priority))

            if opts.get("together", True):
                await asyncio.gather(*(one() for _ in range(opts["count"])))
            else:
                for _ in range(opts["count"]):
                    await one()
    finally:
        await limiter.aclose()
    return {"grants": grants, "queued": queued, "rate": limiter.rate}


async def _wait_until(when: float | None) -> None:
    if when is not None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))


async def _wait_for_go(opts: dict[str, Any]) -> None:
    """With ``"go": true``: say ``ready`` (imports done) and wait for a line on stdin.

    The test starts its fleet together as soon as every worker is ready, not
    after a fixed start-up allowance that a loaded machine may overrun.
    """
    if opts.get("go"):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    opts = json.loads(sys.argv[1])
    mode = {"batch": batch, "acquire": acquire}[opts["mode"]]
    out = asyncio.run(mode(opts))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
