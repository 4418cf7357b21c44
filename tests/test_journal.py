"""The batch journal: replay, torn tails, damage, the one-writer lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptimage_async import ImageRequest, Journal, JournalError, ManifestEntry


def entry(key: str, status: str = "succeeded", run_id: str | None = "run_1") -> ManifestEntry:
    return ManifestEntry(
        line=3,
        key=key,
        input=ImageRequest("a lamp"),
        status=status,  # type: ignore[arg-type]
        run_id=run_id,
        files=("00003-a-lamp-1.png",),
    )


def test_replay_gives_the_last_step_of_every_key(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.start(provider="runbase", base_url="http://127.0.0.1:1/runbase/api/v1")
        journal.intent("a-1", line=1)
        journal.intent("b-1", line=2)
        journal.created("b-1", "run_b", line=2, provider="runbase")
        journal.intent("c-1", line=3)
        journal.created("c-1", "run_c", line=3, provider="runbase")
        journal.finished(entry("c-1", run_id="run_c"), on_rerun="skip")

    with Journal(path) as again:
        a, b, c = again.get("a-1"), again.get("b-1"), again.get("c-1")
        assert a is not None and a.state == "intent" and a.run_id is None
        assert b is not None and b.state == "created" and b.run_id == "run_b"
        assert b.provider == "runbase"
        assert c is not None and c.state == "finished" and c.on_rerun == "skip"
        assert c.entry is not None and c.entry.files == ("00003-a-lamp-1.png",)
        assert c.provider == "runbase"
        assert again.get("nope") is None
        assert len(again) == 3


def test_every_record_is_a_whole_json_line_on_disk_at_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.intent("a-1", line=1)
        # Read by another handle while the journal is open: the record is already there.
        lines = path.read_bytes().splitlines()
        assert [json.loads(line)["record"] for line in lines] == ["intent"]
        journal.created("a-1", "run_a", line=1, provider="runbase")
        assert path.read_bytes().endswith(b"\n")
        assert len(path.read_bytes().splitlines()) == 2


def test_a_torn_last_line_is_cut_off_and_appending_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.intent("a-1", line=1)
    whole = path.read_bytes()
    # A process killed in the middle of writing its created record.
    path.write_bytes(whole + b'{"record":"created","key":"a-1","run_')
    with Journal(path) as journal:
        known = journal.get("a-1")
        assert known is not None and known.state == "intent"
        assert path.read_bytes() == whole
        journal.created("a-1", "run_a", line=1, provider="runbase")
    with Journal(path) as journal:
        known = journal.get("a-1")
        assert known is not None and known.run_id == "run_a"


def test_a_damaged_line_in_the_middle_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"record":"intent","key":"a-1","line":1,"at":1.0}\nGARBAGE\n')
    with pytest.raises(JournalError, match=r"journal\.jsonl:2: damaged"):
        Journal(path)


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path), pytest.raises(JournalError, match="in use by another process"):
        Journal(path)
    # Released on close.
    with Journal(path) as journal:
        assert not journal.closed


def test_a_closed_journal_refuses_writes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.close()
    journal.close()
    assert journal.closed
    assert "closed" in repr(journal)
    with pytest.raises(JournalError, match="closed"):
        journal.intent("a-1", line=1)


def test_intent_after_finished_reopens_the_key(tmp_path: Path) -> None:
    # A failed prompt is submitted again by a rerun: its new intent wins.
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.intent("a-1", line=1)
        journal.finished(entry("a-1", status="failed", run_id=None), on_rerun="submit")
        journal.intent("a-1", line=1)
    with Journal(path) as journal:
        known = journal.get("a-1")
        assert known is not None and known.state == "intent" and known.entry is None
