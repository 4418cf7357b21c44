"""Exists only to be type-checked (``mypy --strict tests/typing``): the bulk API's types."""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

import gptimage_async as gi


async def usage(session: gi.Session, result: gi.Result) -> None:
    prompts = gi.read_prompts("prompts.csv", aspect_ratio="3:2", quality="high", session=session)
    assert_type(prompts, list[gi.BatchPrompt])
    assert_type(prompts[0].line, int)

    def on_event(event: gi.BatchEvent) -> None:
        assert_type(event.progress.eta, float | None)
        assert_type(event.entry, gi.ManifestEntry | None)

    batch = gi.Batch(session, prompts, "out/", concurrency=8, on_event=on_event)
    batch.stop()
    assert_type(batch.progress, gi.BatchProgress)
    report = await batch.run()
    assert_type(report, gi.BatchReport)
    assert_type(report.counts, dict[str, int])
    assert_type(report.ok, bool)
    assert_type(report.entries[0].files, tuple[str, ...])
    gi.Batch(session, ["a lamp", gi.ImageRequest("a chair")], Path("out"))

    assert_type(await gi.download(result, "out/"), list[Path])
    assert_type(await gi.download(["https://x.test/a.png"], Path("out"), stem="a"), list[Path])
    assert_type(gi.read_manifest("out/manifest.jsonl"), list[gi.ManifestEntry])

    with gi.Journal("out/journal.jsonl") as journal:
        journal.intent("key-1", line=1)
        journal.created("key-1", "run_abc", line=1, provider="runbase")
        known = journal.get("key-1")
        assert_type(known, gi.JournalEntry | None)
