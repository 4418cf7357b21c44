"""Every Python block of README.md runs as written (see ``tests/readme_harness.py``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sybil import Document, Example

from tests.readme_harness import (
    README,
    SHOWN_LANGUAGES,
    SKIP,
    fences,
    parse_readme,
    readme_environment,
    scratch_directory,
    start_simulate,
)

# The blocks share one namespace and build on each other, in order: one worker runs them all.
pytestmark = pytest.mark.xdist_group("readme")

DOCUMENT = parse_readme()
EXAMPLES = list(DOCUMENT.examples())


class _Progress:
    """Which of the README's examples have run (they share one namespace, in order)."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.ran = 0


@pytest.fixture(scope="module")
def readme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Progress]:
    sim = start_simulate()
    cwd = os.getcwd()
    saved = dict(os.environ)
    try:
        os.environ.update(readme_environment(sim))
        os.chdir(scratch_directory(tmp_path_factory.mktemp("readme")))
        yield _Progress(DOCUMENT)
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
        sim.process.terminate()
        sim.process.wait(30)
        assert sim.process.stdout is not None
        sim.process.stdout.close()


def _id(example: Example) -> str:
    kind = "skip" if isinstance(example.parsed, tuple) else "block"
    return f"{kind}-line-{example.line}"


@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=[_id(e) for e in EXAMPLES])
def test_readme_block(readme: _Progress, index: int) -> None:
    # Run every earlier example first, once: a block may build on the ones above it,
    # and a skip marker only takes effect if it was seen before its block.
    examples = list(readme.document.examples())
    while readme.ran < index:
        with contextlib.suppress(Exception):  # a failure or a skip: reported by its own test
            examples[readme.ran].evaluate()
        readme.ran += 1
    readme.ran = index + 1
    examples[index].evaluate()


def test_the_readme_has_python_blocks_to_run() -> None:
    blocks = [e for e in EXAMPLES if not isinstance(e.parsed, tuple)]
    assert len(blocks) >= 8


def test_every_fence_is_run_or_plainly_not_python() -> None:
    text = README.read_text()
    for language in fences(text):
        assert language == "python" or language in SHOWN_LANGUAGES, (
            f"a ```{language} block would not be run: call it python, or one of "
            f"{sorted(SHOWN_LANGUAGES)} if it is not Python"
        )


def test_every_skip_says_why() -> None:
    for match in SKIP.finditer(README.read_text()):
        action, reason = match.group(1), match.group(2).strip()
        assert action == "next", f'use `skip: next "why"`, not {match.group(0)!r}'
        assert len(reason) > 4 and reason[0] == reason[-1] == '"', (
            f"a skipped block must say why: {match.group(0)!r}"
        )


def test_the_readme_code_is_formatted() -> None:
    # ruff formats the Python blocks of Markdown too; `ruff format --check .` covers them.
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--diff", str(README)],
        capture_output=True,
        text=True,
        cwd=Path(README).parent,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
