"""Every Python block of README.md runs as written (see ``tests/readme_harness.py``)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sybil import Document, Example

from tests.readme_harness import (
    CONFIG_LANGUAGES,
    CONTINUES,
    README,
    SHOWN_LANGUAGES,
    SKIP,
    defined_names,
    fenced_blocks,
    fences,
    free_names,
    lead_in,
    parse_readme,
    readme_environment,
    scratch_directory,
    start_simulate,
)
from tests.test_cli import run_main

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


def test_every_block_runs_when_pasted_alone() -> None:
    # The blocks run in one namespace here, so a block that forgot `import asyncio` would
    # pass on an earlier block's import: check each block's own names instead. A block
    # marked `<!-- continues: ... -->` may use what the blocks run before it bound.
    available: set[str] = set()
    skip_reason = ""
    for example in EXAMPLES:
        if isinstance(example.parsed, tuple):
            skip_reason = DOCUMENT.text[example.start : example.end]
            continue
        source = str(example.parsed)
        lines = lead_in(DOCUMENT, example).strip().splitlines() or [""]
        continues = CONTINUES.search(lines[-1])
        missing = free_names(source) - (available if continues else set())
        missing = {name for name in missing if not re.search(rf"\b{name}\b", skip_reason)}
        assert not missing, (
            f"README line {example.line}: the block uses {sorted(missing)} without importing "
            f"or defining them: add them, or mark it `<!-- continues: ... -->` if it builds "
            f"on the block above"
        )
        if not skip_reason:  # a skipped block does not run: "the block above" is the last one run
            available = (available if continues else set()) | defined_names(source)
        skip_reason = ""


@pytest.mark.parametrize(
    "source",
    [
        "asyncio.run(main())\nasync def main() -> None: ...\n",
        "import os\n\ndef f() -> str:\n    return gi.__name__ + os.sep\n",
        "class A:\n    x = [gi for _ in range(2)]\n",
    ],
)
def test_a_name_used_and_never_bound_is_found(source: str) -> None:
    assert free_names(source) in ({"asyncio"}, {"gi"})


def test_names_bound_anywhere_in_the_block_are_not_free() -> None:
    source = (
        "import asyncio\n\nasync def main(x: int) -> int:\n"
        "    y = x\n    return y\n\nasyncio.run(main(1))\n"
    )
    assert free_names(source) == set()


CONFIG_BLOCKS = [
    (body, line)
    for language, body, line in fenced_blocks(README.read_text())
    if language in CONFIG_LANGUAGES
]


def test_the_readme_has_a_pool_file_to_check() -> None:
    assert any("[lanes." in body for body, _ in CONFIG_BLOCKS)


@pytest.mark.parametrize(
    ("body", "line"), CONFIG_BLOCKS, ids=[f"line-{n}" for _, n in CONFIG_BLOCKS]
)
def test_every_config_block_is_accepted_as_written(body: str, line: int, tmp_path: Path) -> None:
    # What a reader saves as pool.toml: a dry run of a batch over it (nothing is sent)
    # must accept it, with a key in every variable it names.
    pool = tmp_path / "pool.toml"
    pool.write_text(body)
    lanes = tomllib.loads(body).get("lanes", {})
    env = {
        "RUNBASE_API_KEY": "rb_readme_key_0123456789abcdef",
        "APIINONE_API_KEY": "aio_readme_key_0123456789abcdef",
    }
    for n, lane in enumerate(lanes.values()):
        if "key_env" in lane:
            env[lane["key_env"]] = f"rb_readme_key_{n}_0123456789abcdef"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lamp\na chair\n")
    out = tmp_path / "out"
    done = run_main(
        "batch", str(prompts), "--out", str(out), "--pool", str(pool), "--dry-run", env=env
    )
    assert done.code == 0, f"README line {line}: {done.stderr}"
    assert "nothing was sent" in done.stdout


def test_a_text_block_is_not_a_config_file_in_disguise() -> None:
    # A pool file shown as ```text would escape the check above.
    for language, body, line in fenced_blocks(README.read_text()):
        if language == "text":
            try:
                tomllib.loads(body)
            except tomllib.TOMLDecodeError:
                continue
            pytest.fail(f"README line {line}: a TOML file shown as text: call it toml")
