"""The client people write by hand, following Runbase's own docs.

Create the run; on a 429 sleep ``2 ** attempt`` seconds and try again. Then
poll every second until the run is done. Run many prompts either with a plain
``asyncio.gather`` over all of them or under an ``asyncio.Semaphore``.

Two kindnesses make this the *better* hand-written client, so the comparison
is conservative: the first poll comes after the first one-second sleep (not
straight after the create, which would always find the run pending), and a
poll answered 429 is simply tried again on the next tick instead of failing
the run.

Every delay is in provider seconds times ``time_scale``: against a simulator
compressing time 20-fold the one-second poll is 50 ms and the ``2 ** attempt``
backoff is ``0.05 * 2 ** attempt`` s, the same schedule a user would see
against the real service with real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp

__all__ = [
    "MAX_CREATE_ATTEMPTS",
    "POLL_EVERY",
    "BaselineClient",
    "BaselineOutcome",
    "BaselineRun",
    "RateLimitedError",
]

#: What the docs' loop does: retry a rate-limited create this many times, sleeping 2**attempt s.
MAX_CREATE_ATTEMPTS = 6
#: Provider seconds between two polls of one run.
POLL_EVERY = 1.0
MODEL = "openai/gpt-image-1.5"


class RateLimitedError(Exception):
    """The create was still answered 429 after ``MAX_CREATE_ATTEMPTS`` attempts."""


@dataclass(slots=True)
class BaselineRun:
    """One prompt's fate: its run id, when the caller held the result, and what it cost."""

    prompt: str
    run_id: str | None = None
    urls: list[str] | None = None
    error: BaseException | None = None
    done_at: float | None = None
    polls: int = 0


@dataclass(slots=True)
class BaselineOutcome:
    """Everything the baseline sent for one batch, counted on the client side."""

    runs: list[BaselineRun] = field(default_factory=list)
    requests: int = 0
    rate_limited: int = 0
    polls: int = 0


class BaselineClient:
    """Runbase's docs loop over one ``aiohttp.ClientSession``.

    >>> async with BaselineClient(base_url, "sk-...", time_scale=0.05) as client:  # doctest: +SKIP
    ...     outcome = await client.gather(prompts)
    """

    def __init__(self, base_url: str, api_key: str, *, time_scale: float = 1.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._scale = time_scale
        self._http: aiohttp.ClientSession | None = None
        self.outcome = BaselineOutcome()

    async def __aenter__(self) -> BaselineClient:
        # aiohttp's defaults, as a hand-written client would leave them (100 connections).
        self._http = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._http is not None
        await self._http.close()

    async def create(self, prompt: str) -> str:
        """POST the run; on 429 sleep ``2 ** attempt`` (scaled) seconds and try again."""
        assert self._http is not None
        body = {"model": MODEL, "input": {"prompt": prompt}}
        for attempt in range(MAX_CREATE_ATTEMPTS):
            self.outcome.requests += 1
            async with self._http.post(f"{self._base}/runs", json=body) as response:
                if response.status == 429:
                    self.outcome.rate_limited += 1
                    await asyncio.sleep(2**attempt * self._scale)
                    continue
                response.raise_for_status()
                run = await response.json()
                return str(run["id"])
        raise RateLimitedError(f"still rate limited after {MAX_CREATE_ATTEMPTS} attempts")

    async def wait(self, run: BaselineRun) -> list[str]:
        """Poll every second (scaled) until the run is done."""
        assert self._http is not None
        while True:
            await asyncio.sleep(POLL_EVERY * self._scale)
            self.outcome.requests += 1
            self.outcome.polls += 1
            run.polls += 1
            async with self._http.get(f"{self._base}/runs/{run.run_id}") as response:
                if response.status == 429:
                    self.outcome.rate_limited += 1
                    continue
                response.raise_for_status()
                state = await response.json()
            if state["status"] == "succeeded":
                return list(state["output"]["urls"])
            if state["status"] == "failed":
                raise RuntimeError(f"run {run.run_id} failed: {state.get('error')}")

    async def generate(self, prompt: str) -> BaselineRun:
        """Create one run and wait for it; the outcome records when the result arrived."""
        run = BaselineRun(prompt)
        self.outcome.runs.append(run)
        try:
            run.run_id = await self.create(prompt)
            run.urls = await self.wait(run)
            run.done_at = time.monotonic()
        except (aiohttp.ClientError, RateLimitedError, RuntimeError) as exc:
            run.error = exc
        return run

    async def gather(self, prompts: Iterable[str]) -> BaselineOutcome:
        """Every prompt at once: ``asyncio.gather(*(generate(p) for p in prompts))``."""
        await asyncio.gather(*(self.generate(p) for p in prompts))
        return self.outcome

    async def bounded(self, prompts: Iterable[str], concurrency: int) -> BaselineOutcome:
        """Every prompt, at most ``concurrency`` at a time, under an ``asyncio.Semaphore``."""
        slots = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> BaselineRun:
            async with slots:
                return await self.generate(prompt)

        await asyncio.gather(*(one(p) for p in prompts))
        return self.outcome
