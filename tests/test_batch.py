"""The library side of bulk generation: prompt files, the batch runner, resuming.

Everything runs against the simulator over 127.0.0.1 in compressed time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

import gptimage_async as gi
from gptimage_async._batch import prompt_key
from gptimage_async.simulator import Faults, Simulator, SimulatorConfig
from gptimage_async.testing import scaled_rate_limit, simulated_session

FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=7)
#: The simulator above has no rate limit; without a belief the session would pace at Runbase's 2/s.
GENEROUS = gi.RateLimit(1000, 1.0)


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- prompt files --------------------------------------------------------------------


def test_txt_skips_blanks_and_comments_and_keeps_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "# header\n\n  a lamp  \na chair\n\n# done\n")
    prompts = gi.read_prompts(path, quality="high")
    assert [(p.line, p.request.prompt, p.request.quality) for p in prompts] == [
        (3, "a lamp", "high"),
        (4, "a chair", "high"),
    ]


def test_jsonl_rows_override_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl",
        '"a lamp"\n'
        '{"prompt": "a chair", "aspect_ratio": "3:2", "quality": "medium"}\n'
        "\n"
        '{"prompt": "a cat", "image_urls": ["https://x.test/a.png", "https://x.test/b.png"]}\n'
        '{"prompt": "a dog", "image_urls": "https://x.test/c.png https://x.test/d.png"}\n',
    )
    prompts = gi.read_prompts(path, aspect_ratio="2:3", quality="high")
    assert [p.line for p in prompts] == [1, 2, 4, 5]
    lamp, chair, cat, dog = (p.request for p in prompts)
    assert (lamp.aspect_ratio, lamp.quality) == ("2:3", "high")
    assert (chair.aspect_ratio, chair.quality) == ("3:2", "medium")
    assert cat.image_urls == ("https://x.test/a.png", "https://x.test/b.png")
    assert dog.image_urls == ("https://x.test/c.png", "https://x.test/d.png")


def test_csv_with_quoted_multiline_cells_counts_lines_right(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv",
        "Prompt,quality,image_urls\n"
        '"a lamp, on a table",high,\n'
        '"a poem\nabout a chair",,["https://x.test/a.png"]\n'
        "a cat,,https://x.test/b.png https://x.test/c.png\n"
        ",,\n"
        "a dog\n",
    )
    prompts = gi.read_prompts(path)
    assert [p.line for p in prompts] == [2, 3, 5, 7]
    lamp, poem, cat, dog = (p.request for p in prompts)
    assert (lamp.prompt, lamp.quality) == ("a lamp, on a table", "high")
    assert poem.prompt == "a poem\nabout a chair"
    assert poem.image_urls == ("https://x.test/a.png",)
    assert cat.image_urls == ("https://x.test/b.png", "https://x.test/c.png")
    assert dog.quality is None


@pytest.mark.parametrize(
    ("name", "content", "where", "message"),
    [
        ("p.txt", "a lamp\na chair\n" + "x" * 40_000 + "\n", "p.txt:3", "prompt is 40000"),
        ("p.jsonl", '"a lamp"\n{"prompt": "a chair",\n', "p.jsonl:2", "not valid JSON"),
        ("p.jsonl", '{"prompt": "a", "qualty": "high"}\n', "p.jsonl:1", "unknown field `qualty`"),
        ("p.jsonl", '{"quality": "high"}\n', "p.jsonl:1", "missing required field `prompt`"),
        ("p.jsonl", '{"prompt": "a", "quality": "ultra"}\n', "p.jsonl:1", "quality must be"),
        ("p.jsonl", "[1, 2]\n", "p.jsonl:1", "bad row"),
        ("p.csv", "prompt,quality\na,high\nb,medium\nc,hi\n", "p.csv:4", "not 'hi'"),
        ("p.csv", "prompt,size\na,big\n", "p.csv:1", "unknown column 'size'"),
        ("p.csv", "quality\nhigh\n", "p.csv:1", "no 'prompt' column"),
        ("p.csv", 'prompt\na\n"b,c\n', "p.csv:3", "bad CSV"),
        ("p.csv", "prompt,quality\na,high,extra\n", "p.csv:2", "3 fields"),
        ("p.csv", "prompt,quality\n,high\n", "p.csv:2", "prompt cell is empty"),
        ("p.jsonl", '{"prompt": "a", "image_urls": "ftp://x"}\n', "p.jsonl:1", "http(s)"),
        ("p.txt", "\n# only comments\n", "p.txt", "no prompts"),
        ("p.json", '["a"]', "p.json", "unsupported prompt file type '.json'"),
    ],
)
def test_bad_files_name_the_line(
    tmp_path: Path, name: str, content: str, where: str, message: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(gi.PromptFileError) as caught:
        gi.read_prompts(path)
    assert str(caught.value).startswith(str(tmp_path / where) + ":")
    assert message in str(caught.value)


def test_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"a lamp\na chair\na \xff\xfe cat\n")
    with pytest.raises(gi.PromptFileError, match=r"p\.txt:3: not valid UTF-8") as caught:
        gi.read_prompts(path)
    assert caught.value.line == 3


def test_a_missing_file_is_a_prompt_file_error(tmp_path: Path) -> None:
    with pytest.raises(gi.PromptFileError, match="cannot read it"):
        gi.read_prompts(tmp_path / "nope.txt")


async def test_the_session_adds_its_provider_limits(tmp_path: Path) -> None:
    # API in One wants 3 characters at least; Runbase does not care.
    path = write(tmp_path / "p.txt", "a lamp\nab\n")
    async with simulated_session("apiinone", config=FAST, rate_limit=GENEROUS) as (_, session):
        with pytest.raises(gi.PromptFileError, match=r"p\.txt:2: "):
            gi.read_prompts(path, session=session)
    async with simulated_session("runbase", config=FAST, rate_limit=GENEROUS) as (_, session):
        assert len(gi.read_prompts(path, session=session)) == 2


def test_prompt_keys() -> None:
    lamp = gi.ImageRequest("a lamp")
    assert prompt_key(lamp) == prompt_key(gi.ImageRequest("a lamp", aspect_ratio="1:1"))
    assert prompt_key(lamp) != prompt_key(gi.ImageRequest("a lamp", quality="high"))
    assert prompt_key(lamp) != prompt_key(lamp, 2)
    assert prompt_key(lamp).endswith("-1")


# -- running ---------------------------------------------------------------------------


def prompts(n: int, prefix: str = "prompt") -> list[gi.BatchPrompt]:
    return [gi.BatchPrompt(i + 1, gi.ImageRequest(f"{prefix} number {i + 1}")) for i in range(n)]


async def test_a_batch_saves_everything_and_writes_the_manifest(tmp_path: Path) -> None:
    events: list[gi.BatchEvent] = []
    async with simulated_session(config=FAST, rate_limit=GENEROUS) as (sim, session):
        batch = gi.Batch(session, prompts(40), tmp_path, on_event=events.append)
        report = await batch.run()
    assert report.ok and report.counts == {
        "succeeded": 40,
        "failed": 0,
        "unknown": 0,
        "pending": 0,
    }
    assert sim.stats.creates == 40 and sim.stats.duplicates == 0
    assert report.submitted == 40 and report.attached == 0 and report.skipped == 0
    manifest = gi.read_manifest(tmp_path / "manifest.jsonl")
    assert [e.line for e in manifest] == list(range(1, 41))
    for e in manifest:
        assert e.status == "succeeded" and e.run_id and e.urls and e.error is None
        [name] = e.files
        assert name.startswith(f"{e.line:05d}-prompt-number-{e.line}-")
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert len({e.run_id for e in manifest}) == 40
    kinds = [e.kind for e in events]
    assert kinds.count("created") == 40 and kinds.count("finished") == 40
    final = report.progress
    assert (final.succeeded, final.in_flight, final.waiting, final.finished) == (40, 0, 0, 40)
    assert final.rate is not None and final.eta == 0.0
    # Each prompt's events come in order: created, then finished.
    for key in {e.key for e in manifest}:
        mine = [ev.kind for ev in events if ev.entry is not None and ev.entry.key == key]
        assert mine == ["created", "finished"]


async def test_identical_prompts_are_separate_prompts(tmp_path: Path) -> None:
    same = [gi.ImageRequest("the same lamp")] * 3
    async with simulated_session(config=FAST, rate_limit=GENEROUS) as (sim, session):
        report = await gi.Batch(session, same, tmp_path).run()
    assert report.ok
    assert len({e.key for e in report.entries}) == 3
    assert len({f for e in report.entries for f in e.files}) == 3
    assert sim.stats.runs_per_prompt["the same lamp"] == 3


async def test_rerunning_a_finished_batch_sends_nothing(tmp_path: Path) -> None:
    async with simulated_session(config=FAST, rate_limit=GENEROUS) as (sim, session):
        await gi.Batch(session, prompts(10), tmp_path).run()
        requests = sim.stats.requests
        again = await gi.Batch(session, prompts(10), tmp_path).run()
        assert sim.stats.requests == requests
    assert again.ok and again.skipped == 10 and again.submitted == 0


def session_for(sim: Simulator, **options: Any) -> gi.Session:
    options.setdefault("rate_limit", scaled_rate_limit(sim.config) or GENEROUS)
    return gi.Session("runbase", api_key="sk-test", base_url=sim.base_url("runbase"), **options)


async def test_stop_then_resume_never_creates_twice(tmp_path: Path) -> None:
    async with Simulator(FAST.replace(time_scale=0.03)) as sim:
        # First process: stopped after 10 prompts finished, with runs in flight.
        # Creates are paced (50/s: 60 take over a second) so the stop comes
        # part-way whatever the machine's load, not after everything was sent.
        async with session_for(sim, on_exit="cancel", rate_limit=gi.RateLimit(50, 1.0)) as session:
            batch: gi.Batch

            def on_event(event: gi.BatchEvent) -> None:
                if event.kind == "finished" and event.progress.finished >= 10:
                    batch.stop()

            batch = gi.Batch(session, prompts(60), tmp_path, on_event=on_event)
            first = await batch.run()
        assert first.stopped and first.stop_reason is None
        assert first.stop_cause is gi.BatchStop.INTERRUPTED
        in_flight = [e for e in first.entries if e.status == "pending" and e.run_id]
        assert in_flight, "the stop should have caught runs in flight"
        assert first.counts["succeeded"] >= 10
        assert sim.stats.creates == first.submitted < 60
        manifest = gi.read_manifest(tmp_path / "manifest.jsonl")
        assert [e.status for e in manifest] == [e.status for e in first.entries]

        # Second process: attaches what was in flight, creates only the rest.
        async with session_for(sim) as session:
            second = await gi.Batch(session, prompts(60), tmp_path).run()
    assert second.ok
    assert second.attached == len(in_flight)
    assert second.skipped == first.counts["succeeded"]
    assert second.submitted == 60 - first.submitted
    assert sim.stats.duplicates == 0
    assert sim.stats.creates == 60
    by_key = {e.key: e.run_id for e in second.entries}
    assert all(by_key[e.key] == e.run_id for e in in_flight)


async def test_a_create_of_unknown_fate_is_reported_not_resent(tmp_path: Path) -> None:
    # Every create succeeds on the server and then answers a bare 500: fate unknown.
    config = FAST.replace(faults=Faults(create_500_after_effect=1.0))
    async with Simulator(config) as sim:
        async with session_for(sim) as session:
            first = await gi.Batch(session, prompts(3), tmp_path).run()
        assert first.counts == {"succeeded": 0, "failed": 0, "unknown": 3, "pending": 0}
        assert all(e.error_type == "UncertainCreateError" for e in first.entries)
        assert sim.stats.creates == 3

        sim.set_faults(Faults())
        async with session_for(sim) as session:
            second = await gi.Batch(session, prompts(3), tmp_path).run()
        assert second.counts["unknown"] == 3
        assert sim.stats.create_requests == 3, "a rerun must not resend them on its own"

        async with session_for(sim) as session:
            third = await gi.Batch(session, prompts(3), tmp_path, resubmit_unknown=True).run()
    assert third.ok
    # The risk the user accepted: those three were paid for twice.
    assert sim.stats.duplicates == 3


async def test_a_process_killed_between_intent_and_answer_leaves_unknown(tmp_path: Path) -> None:
    # What kill -9 leaves: an intent with nothing after it.
    keys = [prompt_key(p.request) for p in prompts(2)]
    with gi.Journal(tmp_path / "journal.jsonl") as journal:
        journal.intent(keys[0], line=1)
    async with Simulator(FAST) as sim, session_for(sim) as session:
        report = await gi.Batch(session, prompts(2), tmp_path).run()
    unknown, done = report.entries
    assert unknown.status == "unknown" and "may or may not exist" in (unknown.error or "")
    assert done.status == "succeeded"
    assert sim.stats.creates == 1


async def test_failed_runs_are_submitted_again_by_a_rerun(tmp_path: Path) -> None:
    async with Simulator(FAST.replace(failure_rate=0.5, seed=3)) as sim:
        async with session_for(sim) as session:
            first = await gi.Batch(session, prompts(20), tmp_path).run()
        failed = [e for e in first.entries if e.status == "failed"]
        assert failed and not first.ok
        assert all(e.error_type == "RunFailedError" and e.run_id for e in failed)

        sim.config = sim.config.replace(failure_rate=0.0)
        async with session_for(sim) as session:
            second = await gi.Batch(session, prompts(20), tmp_path).run()
    assert second.ok
    assert second.submitted == len(failed)
    # Failed runs are refunded; only the failed prompts were created a second time.
    assert sim.stats.creates == 20 + len(failed)
    assert sim.stats.duplicates == len(failed)


async def test_an_auth_error_stops_the_batch_at_once(tmp_path: Path) -> None:
    config = FAST.replace(api_keys={"sk-the-right-one"})
    async with Simulator(config) as sim, session_for(sim) as session:
        report = await gi.Batch(session, prompts(50), tmp_path).run()
    assert report.stopped and report.stop_reason and "401" in report.stop_reason
    assert report.stop_cause is gi.BatchStop.KEY_REFUSED
    counts = report.counts
    assert counts["failed"] <= 4, "only the creates already in the window may fail"
    assert counts["pending"] >= 46
    assert sim.stats.create_requests == counts["failed"]


async def test_a_created_run_from_the_journal_is_attached_not_created(tmp_path: Path) -> None:
    async with Simulator(FAST) as sim, session_for(sim) as session:
        run = await session.submit("prompt number 1")
        key = prompt_key(gi.ImageRequest("prompt number 1"))
        with gi.Journal(tmp_path / "journal.jsonl") as journal:
            journal.intent(key, line=1)
            assert run.id is not None
            journal.created(key, run.id, line=1, provider="runbase")
        report = await gi.Batch(session, prompts(1), tmp_path).run()
    [entry] = report.entries
    assert entry.status == "succeeded" and entry.run_id == run.id
    assert report.attached == 1 and report.submitted == 0
    assert sim.stats.creates == 1


async def test_deleted_images_are_fetched_again_without_a_create(tmp_path: Path) -> None:
    async with Simulator(FAST) as sim, session_for(sim) as session:
        first = await gi.Batch(session, prompts(3), tmp_path).run()
        (tmp_path / first.entries[1].files[0]).unlink()
        second = await gi.Batch(session, prompts(3), tmp_path).run()
    assert second.ok and second.skipped == 2 and second.attached == 1
    assert (tmp_path / first.entries[1].files[0]).is_file()
    assert sim.stats.creates == 3


async def test_without_download_only_urls_are_recorded(tmp_path: Path) -> None:
    async with Simulator(FAST) as sim, session_for(sim) as session:
        report = await gi.Batch(session, prompts(3), tmp_path, download=False).run()
    assert report.ok
    assert all(e.urls and not e.files for e in report.entries)
    assert sim.stats.file_requests == 0
    assert names(tmp_path) == ["index.html", "journal.jsonl", "manifest.jsonl"]


async def test_concurrency_caps_runs_in_flight(tmp_path: Path) -> None:
    seen: list[int] = []
    async with Simulator(FAST) as sim, session_for(sim) as session:

        def on_event(event: gi.BatchEvent) -> None:
            seen.append(event.progress.in_flight + event.progress.submitting)

        report = await gi.Batch(
            session, prompts(30), tmp_path, concurrency=3, on_event=on_event
        ).run()
    assert report.ok
    assert max(seen) == 3


async def test_a_failing_event_callback_does_not_sink_the_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(event: gi.BatchEvent) -> None:
        raise RuntimeError("display bug")

    async with Simulator(FAST) as sim, session_for(sim) as session:
        report = await gi.Batch(session, prompts(3), tmp_path, on_event=explode).run()
    assert report.ok
    assert "on_event callback failed" in caplog.text


async def test_a_batch_runs_once_and_validates_its_arguments(tmp_path: Path) -> None:
    async with Simulator(FAST) as sim, session_for(sim) as session:
        with pytest.raises(gi.ConfigurationError, match="concurrency"):
            gi.Batch(session, prompts(1), tmp_path, concurrency=0)
        with pytest.raises(gi.ConfigurationError, match="create_window"):
            gi.Batch(session, prompts(1), tmp_path, create_window=0)
        with pytest.raises(gi.InvalidRequestError):
            gi.Batch(session, [""], tmp_path)
        batch = gi.Batch(session, ["a lamp"], tmp_path)
        await batch.run()
        with pytest.raises(gi.SessionClosedError, match="runs once"):
            await batch.run()


async def test_a_second_batch_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    async with Simulator(FAST) as sim, session_for(sim) as session:
        with (
            gi.Journal(tmp_path / "journal.jsonl"),
            pytest.raises(gi.JournalError, match="in use"),
        ):
            await gi.Batch(session, prompts(2), tmp_path).run()
    assert sim.stats.requests == 0


def test_journal_lines_are_plain_json(tmp_path: Path) -> None:
    with gi.Journal(tmp_path / "journal.jsonl") as journal:
        journal.intent("k-1", line=4)
    [line] = (tmp_path / "journal.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["record"] == "intent" and record["line"] == 4
    assert msgspec.json.decode(line.encode())["key"] == "k-1"


async def test_a_broken_journal_stops_the_batch_with_a_plain_error(tmp_path: Path) -> None:
    batch: gi.Batch

    def break_journal(event: gi.BatchEvent) -> None:
        if event.kind == "created":
            batch._journal.close()  # type: ignore[union-attr]  # as a full disk would

    async with Simulator(FAST) as sim, session_for(sim, on_exit="cancel") as session:
        batch = gi.Batch(session, prompts(20), tmp_path, on_event=break_journal)
        with pytest.raises(gi.JournalError, match="closed"):
            await batch.run()
