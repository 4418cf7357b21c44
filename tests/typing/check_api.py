"""Exists only to be type-checked (``mypy --strict tests/typing``): the public API's types.

Nothing here runs; a signature change that breaks users breaks this file.
"""

from __future__ import annotations

from typing import assert_type

import gptimage_async as gi


async def usage(prompts: list[str]) -> None:
    async with gi.Session("runbase", rate_limit=gi.RateLimit(20, 10.0)) as session:
        run = await session.submit("a lamp", aspect_ratio="3:2", quality="high")
        assert_type(run, gi.Run)
        assert_type(run.id, str | None)
        assert_type(run.status, gi.RunStatus)
        result = await run
        assert_type(result, gi.Result)
        assert_type(result.urls, list[str])
        assert_type(await run.result(timeout=5), gi.Result)
        assert_type(await session.generate("a lamp"), gi.Result)
        assert_type(await session.generate_many(prompts), list[gi.Result])
        mixed = await session.generate_many(prompts, return_exceptions=True)
        assert_type(mixed, list[gi.Result | gi.GPTImageError])
        async for done in session.as_completed([gi.ImageRequest("a chair", aspect_ratio="2:3")]):
            assert_type(done, gi.Run)
        assert_type(session.attach("run_abc"), gi.Run)
        assert_type(session.runs.counts(), dict[str, int])


def errors(exc: gi.APIStatusError) -> None:
    assert_type(exc.status_code, int)
    assert_type(exc.code, str | None)
    assert_type(exc.retry_after, float | None)
    assert_type(exc.run_id, str | None)
