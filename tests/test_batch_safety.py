"""A batch's promises about paid runs: withdrawn creates, reruns with other options, endpoints."""

from __future__ import annotations

from pathlib import Path

import gptimage_async as gi
from gptimage_async._journal import Journal


def test_a_withdrawn_intent_puts_the_key_back_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    failed = gi.ManifestEntry(
        line=2, key="b-1", input=gi.ImageRequest("b"), status="failed", error="refunded"
    )
    with Journal(path, fsync=False) as journal:
        journal.intent("a-1", line=1)
        journal.intent("a-1", line=1)  # a second attempt
        journal.withdrawn("a-1", line=1)
        journal.finished(failed, on_rerun="submit")
        journal.intent("b-1", line=2)
        journal.withdrawn("b-1", line=2)
        journal.intent("c-1", line=3)
        assert journal.get("a-1") is None
        b_now = journal.get("b-1")
        assert b_now is not None and b_now.state == "finished"
    with Journal(path, fsync=False) as replayed:
        assert replayed.get("a-1") is None
        b = replayed.get("b-1")
        assert b is not None and b.state == "finished" and b.on_rerun == "submit"
        c = replayed.get("c-1")
        assert c is not None and c.state == "intent"  # not withdrawn: unknown fate
