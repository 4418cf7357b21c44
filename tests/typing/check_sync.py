"""Exists only to be type-checked (``mypy --strict tests/typing``): the sync API's types.

Nothing here runs; a signature change that breaks users breaks this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

import gptimage_async as gi


def usage(prompts: list[str]) -> None:
    with gi.SyncSession("runbase", rate_limit=gi.RateLimit(20, 10.0)) as session:
        result = session.generate("a lamp", aspect_ratio="3:2", quality="high")
        assert_type(result, gi.Result)
        assert_type(session.download(result, "out/"), list[Path])
        assert_type(session.read(result), list[bytes])
        assert_type(session.generate_many(prompts), list[gi.Result])
        mixed = session.generate_many(prompts, return_exceptions=True)
        assert_type(mixed, list[gi.Result | gi.GPTImageError])
        run = session.submit("a chair")
        assert_type(run, gi.SyncRun)
        assert_type(run.id, str | None)
        assert_type(run.result(timeout=5), gi.Result)
        assert_type(session.attach("run_abc"), gi.SyncRun)


async def in_async_code(result: gi.Result) -> None:
    assert_type(await result.save("out/"), list[Path])
    assert_type(await result.read(), list[bytes])
