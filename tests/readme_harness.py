"""Runs the README's Python blocks as a reader would, against a real simulator.

Every ```` ```python ```` block of README.md is a Sybil example. They run in
order, in one namespace (a block may use what an earlier one defined), with
the working directory a scratch directory holding ``examples/prompts.txt``,
and with this environment:

- ``RUNBASE_API_KEY`` / ``APIINONE_API_KEY``: keys the simulator accepts;
- ``GPTIMAGE_BASE_URL``: the Runbase API root of a ``gptimage-async simulate``
  process started for the README (``APIINONE_BASE_URL_FOR_README`` for API
  in One's), so a block written for the real service points at the simulator
  with ``base_url=os.environ.get("GPTIMAGE_BASE_URL")``, as the README shows.

A block that defines ``test_*`` functions is a test file a reader would copy:
it is written to a fresh directory with no pytest configuration and run by
pytest there, so "works in a new project" is what is checked.

A block that cannot run says why, on the line before it::

    <!-- skip: next "open_database stands for the app's own resources" -->

(the reason is required). A reader pastes a block on its own, so each block
imports and defines every name it uses, unless it says, on the line before
it, that it builds on the block above (``<!-- continues: the app above -->``);
a skipped block may leave out only the names its reason gives. Only
``python`` blocks run; other fences (console, bash, json, csv, text) are
shown, not run, but each ``toml`` block is checked as a file a reader saves
(``test_every_config_block_is_accepted_as_written``).
"""

from __future__ import annotations

import builtins
import os
import re
import shutil
import subprocess
import symtable
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sybil import Document, Example, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from gptimage_async.testing import TEST_KEYS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Fences that may appear; anything else (``py``, ``python3``) would silently not run.
SHOWN_LANGUAGES = frozenset({"console", "bash", "json", "csv", "text", "toml"})
#: Fences of files a reader saves and hands to the command line: each is checked as written.
CONFIG_LANGUAGES = frozenset({"toml"})
FENCE = re.compile(r"^ *```(\S*)", re.M)
BLOCK = re.compile(r"^ *```(\S*)\n(.*?)^ *```", re.M | re.S)
SKIP = re.compile(r"<!--\s*skip:\s*(\w+)(.*?)-->", re.S)
TEST_FUNCTION = re.compile(r"^(async )?def test_", re.M)
HEADING = re.compile(r"^#{2,4} (.+)$", re.M)
CONTINUES = re.compile(r"<!--\s*continues:\s*(.*?)-->", re.S)
#: The simulator the README's blocks talk to: 3-10 s runs take 30-100 ms.
TIME_SCALE = "0.01"


def _evaluate(example: Example) -> None:
    __tracebackhide__ = True
    if TEST_FUNCTION.search(example.parsed):
        run_as_test_file(example.parsed, Path.cwd() / f"project-{example.line}")
    else:
        PythonEvaluator()(example)


def parse_readme(path: Path = README) -> Document:
    sybil = Sybil(parsers=[CodeBlockParser("python", _evaluate), SkipParser()])
    return sybil.parse(path)


def section_of(document: Document, example: Example) -> str:
    """The heading a block sits under."""
    headings = [m for m in HEADING.finditer(document.text) if m.start() < example.start]
    return headings[-1].group(1).strip() if headings else ""


def blocks_under(heading: str, path: Path = README) -> list[str]:
    """The sources of the Python blocks under ``heading`` (not skipped ones)."""
    document = parse_readme(path)
    return [
        str(example.parsed)
        for example in document.examples()
        if isinstance(example.parsed, str) and section_of(document, example) == heading
    ]


def run_as_test_file(source: str, project: Path) -> None:
    """Run ``source`` with pytest in a new directory, as a reader's first test file."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "test_from_readme.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_from_readme.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b\d+ passed\b", proc.stdout), proc.stdout


@dataclass
class Simulate:
    """A ``gptimage-async simulate`` process on a free port."""

    process: subprocess.Popen[str]
    runbase: str
    apiinone: str


def start_simulate(*extra: str) -> Simulate:
    script = Path(sys.executable).with_name("gptimage-async")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "gptimage_async"]
    options = ["--port", "0", "--time-scale", TIME_SCALE, "--rate-limit", "none", *extra]
    process = subprocess.Popen(
        [*cmd, "simulate", *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    urls: dict[str, str] = {}
    while len(urls) < 2:
        line = process.stdout.readline()
        assert line, "gptimage-async simulate exited before printing its URLs"
        match = re.search(r"http://\S+/(runbase|apiinone)/api/v1", line)
        if match:
            urls[match.group(1)] = match.group(0)
    return Simulate(process, urls["runbase"], urls["apiinone"])


def readme_environment(sim: Simulate) -> dict[str, str]:
    return {
        "RUNBASE_API_KEY": TEST_KEYS["runbase"],
        "APIINONE_API_KEY": TEST_KEYS["apiinone"],
        "GPTIMAGE_BASE_URL": sim.runbase,
        "APIINONE_BASE_URL_FOR_README": sim.apiinone,
    }


def scratch_directory(path: Path) -> Path:
    """A working directory that looks like a clone: ``examples/prompts.txt`` is there."""
    (path / "examples").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "prompts.txt", path / "examples" / "prompts.txt")
    return path


def fences(text: str) -> Iterator[str]:
    """The language of every fenced block (opening fences only)."""
    opening = True
    for match in FENCE.finditer(text):
        if opening:
            yield match.group(1)
        opening = not opening


def free_names(source: str) -> set[str]:
    """The global names ``source`` reads but neither imports, defines nor gets from builtins."""
    top = symtable.symtable(source, "<readme block>", "exec")
    read: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        for symbol in table.get_symbols():
            bound_here = symbol.is_assigned() or symbol.is_imported()
            if symbol.is_referenced() and (
                (table is top and not bound_here) or (table is not top and symbol.is_global())
            ):
                read.add(symbol.get_name())
        tables.extend(table.get_children())
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    return read - defined - set(dir(builtins))


def defined_names(source: str) -> set[str]:
    """The names a block binds at its top level (imports, assignments, defs, classes)."""
    top = symtable.symtable(source, "<readme block>", "exec")
    return {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}


def lead_in(document: Document, example: Example) -> str:
    """The Markdown between the previous block (or the top) and this example."""
    before = [e.end for e in document.examples() if e.end <= example.start]
    return document.text[max(before, default=0) : example.start]


def fenced_blocks(text: str) -> Iterator[tuple[str, str, int]]:
    """``(language, body, line)`` of every fenced block."""
    for match in BLOCK.finditer(text):
        yield match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1
