"""Reading a batch's prompt file: ``.txt``, ``.jsonl`` or ``.csv``, with line-numbered errors.

- ``.txt``: one prompt a line. Blank lines and lines starting with ``#`` are
  skipped; surrounding whitespace is dropped.
- ``.jsonl``: one JSON value a line, either a string (the prompt) or an
  object with ``prompt`` and optionally ``aspect_ratio``, ``quality``,
  ``image_urls``. Any other key is an error (a typo must not pass silently).
- ``.csv``: a header row naming the columns (``prompt`` required;
  ``aspect_ratio``, ``quality``, ``image_urls`` optional); an empty cell
  leaves the option to the default. Header names are case-blind, and so is
  ``quality`` (``HIGH`` is ``high``); a column with an empty name (a trailing
  comma, as spreadsheets write) is allowed while its cells are empty.
- ``-``: standard input, read as ``.txt`` unless ``format`` says otherwise.

``image_urls`` is a JSON list, or (as text) URLs separated by spaces. Options
a row leaves unset take the defaults given to :func:`read_prompts`.

Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` only, as editors count them: a form
feed, U+2028 or U+0085 is a character of its line, and line numbers (in file
names, the manifest, errors) match the editor's.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec

from ._exceptions import InvalidRequestError, PromptFileError
from ._models import AspectRatio, ImageRequest, Quality

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["FORMATS", "BatchPrompt", "PromptFileError", "read_prompts"]

#: Prompt file suffixes and the format each one is read as.
FORMATS: dict[str, str] = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
COLUMNS = ("prompt", "aspect_ratio", "quality", "image_urls")
#: The path that means standard input.
STDIN = "-"


class BatchPrompt(msgspec.Struct, frozen=True):
    """One prompt of a batch: the line it came from and the request it makes."""

    line: int
    request: ImageRequest


class _Row(msgspec.Struct, forbid_unknown_fields=True):
    prompt: str
    aspect_ratio: str | None = None
    quality: str | None = None
    image_urls: list[str] | str | None = None


#: Where a line ends, as editors count lines. Not ``str.splitlines``: it also splits on
#: U+2028, U+2029, U+0085, form feeds and \x1c-\x1e, which are text inside a line (and
#: inside a JSON string written with ``ensure_ascii=False``).
_LINE_END = re.compile(r"\r\n|\r|\n")
_row_decoder = msgspec.json.Decoder(_Row | str)
_urls_decoder = msgspec.json.Decoder(list[str])


def read_prompts(
    path: str | os.PathLike[str],
    *,
    aspect_ratio: AspectRatio | None = None,
    quality: Quality | None = None,
    image_urls: Iterable[str] = (),
    session: Session | None = None,
    format: Literal["txt", "jsonl", "csv"] | None = None,
) -> list[BatchPrompt]:
    """Read every prompt of a ``.txt``, ``.jsonl`` or ``.csv`` file, validated.

    ``aspect_ratio``, ``quality`` and ``image_urls`` are the defaults for rows
    that do not set their own. With ``session``, each request is also checked
    against that provider's own limits (``Session.prepare``); nothing is sent.
    ``path`` ``"-"`` reads standard input; ``format`` (``"txt"``, ``"jsonl"``,
    ``"csv"``) overrides the one the suffix names (default: by suffix, and
    ``"txt"`` for standard input). Raises ``PromptFileError`` naming the file
    and line of the first problem.

    >>> prompts = read_prompts("prompts.csv", quality="high")   # doctest: +SKIP
    >>> prompts[0]                                               # doctest: +SKIP
    BatchPrompt(line=2, request=ImageRequest(prompt='a lamp', ...))
    """
    where = os.fspath(path)
    stdin = where == STDIN
    if format is not None and format not in ("txt", "jsonl", "csv"):
        raise PromptFileError(f"unknown format {format!r}: use txt, jsonl or csv", path=where)
    fmt = format or ("txt" if stdin else FORMATS.get(Path(where).suffix.lower()))
    if fmt is None:
        raise PromptFileError(
            f"unsupported prompt file type {Path(where).suffix or '(none)'!r}: "
            "use .txt (one prompt a line), .jsonl or .csv",
            path=where,
        )
    try:
        data = sys.stdin.buffer.read() if stdin else Path(where).read_bytes()
    except OSError as exc:
        raise PromptFileError(f"cannot read it: {exc.strerror or exc}", path=where) from None
    if stdin:
        where = "<stdin>"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = len(_lines(data[: exc.start].decode("utf-8", "replace")))
        raise PromptFileError("not valid UTF-8 text", path=where, line=line) from None
    rows = {"txt": _txt_rows, "jsonl": _jsonl_rows, "csv": _csv_rows}[fmt]
    defaults = (aspect_ratio, quality, tuple(image_urls))
    check: Callable[[ImageRequest], object] | None = session.prepare if session else None
    prompts: list[BatchPrompt] = []
    try:
        for line, row in rows(text):
            try:
                prompts.append(BatchPrompt(line, _request(row, defaults, check)))
            except InvalidRequestError as exc:
                raise PromptFileError(exc.message, path=where, line=line) from None
    except _RowError as exc:
        raise PromptFileError(exc.message, path=where, line=exc.line) from None
    if not prompts:
        raise PromptFileError("no prompts in the file", path=where)
    return prompts


class _RowError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _lines(text: str) -> list[str]:
    """``text`` cut at ``\\n``, ``\\r\\n`` and ``\\r`` only, as editors count lines."""
    return _LINE_END.split(text)


def _txt_rows(text: str) -> Iterator[tuple[int, _Row]]:
    for number, raw in enumerate(_lines(text), 1):
        prompt = raw.strip()
        if prompt and not prompt.startswith("#"):
            yield number, _Row(prompt)


def _jsonl_rows(text: str) -> Iterator[tuple[int, _Row]]:
    for number, raw in enumerate(_lines(text), 1):
        if not raw.strip():
            continue
        try:
            value = _row_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise _RowError(f"bad row: {exc}", number) from None
        except msgspec.DecodeError as exc:
            raise _RowError(f"not valid JSON: {exc}", number) from None
        yield number, _Row(value) if isinstance(value, str) else value


def _csv_rows(text: str) -> Iterator[tuple[int, _Row]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in cells]
                _check_header(header, line)
                continue
            if len(cells) > len(header):
                raise _RowError(f"{len(cells)} fields where the header has {len(header)}", line)
            values = dict(zip(header, (c.strip() or None for c in cells), strict=False))
            if values.pop("", None) is not None:
                raise _RowError("a value in a column whose header is empty", line)
            prompt = values.get("prompt")
            if prompt is None:
                raise _RowError("the prompt cell is empty", line)
            yield (
                line,
                _Row(
                    prompt,
                    values.get("aspect_ratio"),
                    values.get("quality"),
                    values.get("image_urls"),
                ),
            )
    except csv.Error as exc:
        raise _RowError(f"bad CSV: {exc}", reader.line_num) from None


def _check_header(header: list[str], line: int) -> None:
    # An empty name (a trailing comma) is no column: its cells must stay empty.
    unknown = [name for name in header if name and name not in COLUMNS]
    if unknown:
        raise _RowError(
            f"unknown column {unknown[0]!r}: the columns are {', '.join(COLUMNS)}", line
        )
    if "prompt" not in header:
        raise _RowError("the header row has no 'prompt' column", line)
    named = [name for name in header if name]
    if len(set(named)) != len(named):
        raise _RowError("a column is named twice in the header row", line)


def _request(
    row: _Row,
    defaults: tuple[AspectRatio | None, Quality | None, tuple[str, ...]],
    check: Callable[[ImageRequest], object] | None,
) -> ImageRequest:
    aspect_ratio, quality, image_urls = defaults
    urls = _parse_urls(row.image_urls) if row.image_urls is not None else image_urls
    request = ImageRequest(
        row.prompt.strip(),
        aspect_ratio=cast(Any, row.aspect_ratio) if row.aspect_ratio else aspect_ratio,
        # Case-blind, as the headers are: a spreadsheet's HIGH is high.
        quality=cast(Any, row.quality.strip().lower()) if row.quality else quality,
        image_urls=tuple(urls),
    )
    if check is not None:
        check(request)
    return request


def _parse_urls(value: list[str] | str) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(value)
    text = value.strip()
    if text.startswith("["):
        try:
            return tuple(_urls_decoder.decode(text))
        except msgspec.DecodeError as exc:
            raise InvalidRequestError(
                f"image_urls is not a JSON list of strings: {exc}", field="image_urls"
            ) from None
    return tuple(text.split())
