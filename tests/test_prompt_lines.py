"""Prompt files end lines where editors do: at \\n, \\r\\n or \\r, never at Unicode separators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gptimage_async as gi

#: Characters ``str.splitlines`` breaks at that are text inside a line for an editor.
NOT_LINE_ENDS = ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"]


def test_a_txt_with_a_form_feed_and_a_line_separator_is_three_prompts(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a lamp\x0con a table\nan owl\u2028at night\na chair\n", encoding="utf-8")
    prompts = gi.read_prompts(path)
    assert [(p.line, p.request.prompt) for p in prompts] == [
        (1, "a lamp\x0con a table"),
        (2, "an owl\u2028at night"),
        (3, "a chair"),
    ]


@pytest.mark.parametrize("sep", NOT_LINE_ENDS)
def test_no_unicode_separator_splits_a_txt_line(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "p.txt"
    path.write_text(f"one{sep}two\n# a comment{sep}still the comment\nthree\n", encoding="utf-8")
    prompts = gi.read_prompts(path)
    assert [(p.line, p.request.prompt) for p in prompts] == [(1, f"one{sep}two"), (3, "three")]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_each_real_line_end_counts_once(tmp_path: Path, end: str) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(end.join(["a lamp", "", "a chair\u2028x", "an owl", ""]).encode())
    assert [p.line for p in gi.read_prompts(path)] == [1, 3, 4]


@pytest.mark.parametrize("sep", NOT_LINE_ENDS)
def test_jsonl_written_with_ensure_ascii_false_is_read(tmp_path: Path, sep: str) -> None:
    rows = [{"prompt": f"an owl{sep}at night"}, f"a lamp{sep}", {"prompt": "a chair"}]
    path = tmp_path / "p.jsonl"
    path.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    prompts = gi.read_prompts(path)
    assert [p.line for p in prompts] == [1, 2, 3]
    assert prompts[0].request.prompt == f"an owl{sep}at night"
    assert prompts[2].request.prompt == "a chair"


def test_a_jsonl_error_names_the_editors_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('"a\u2028b"\n"c\x85d"\r\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(gi.PromptFileError, match=r"p\.jsonl:3: not valid JSON"):
        gi.read_prompts(path)


@pytest.mark.parametrize("sep", NOT_LINE_ENDS)
def test_csv_cells_keep_unicode_separators(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"prompt,quality\nan owl{sep}at night,high\na chair,\n", encoding="utf-8")
    prompts = gi.read_prompts(path)
    assert [(p.line, p.request.prompt) for p in prompts] == [
        (2, f"an owl{sep}at night"),
        (3, "a chair"),
    ]


def test_invalid_utf8_after_a_separator_names_the_editors_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes("a\u2028b\ra\x0cc\r\n".encode() + b"x \xff\n")
    with pytest.raises(gi.PromptFileError, match=r"p\.txt:3: not valid UTF-8"):
        gi.read_prompts(path)
