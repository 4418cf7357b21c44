"""CONTRIBUTING.md's "Where each step lives" names every module of the package.

A contributor looks a step up there: a module missing from the table (or
named twice, one row stale) sends them to read the package file by file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gptimage_async"
HEADING = "## Where each step lives"


def table_rows(text: str) -> list[str]:
    """The rows of the table under ``HEADING`` (not its header or rule)."""
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return rows[1:]  # the first is the header: "| step of a run | module |"


def named_in(row: str, module: Path) -> bool:
    """Whether ``row`` names ``module`` (a path inside the package).

    A top-level module by its file name (``_views.py``, not as the tail of
    ``_pool/_views.py``); a module of a subpackage by its path, or by its file
    name in a row that names the subpackage (``_budget/`` ... ``queue.py``); a
    subpackage's ``__init__.py`` by the subpackage.
    """
    rel = module.relative_to(PACKAGE)
    name = re.escape(rel.name)
    if len(rel.parts) == 1:
        return re.search(rf"(?<![\w/]){name}", row) is not None
    if re.search(rf"(?<![\w/]){re.escape(rel.as_posix())}", row):
        return True
    folder = "/".join(rel.parts[:-1]) + "/"
    if rel.name == "__init__.py":
        return folder in row
    return folder in row and re.search(rf"(?<![\w]){name}", row) is not None


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


ROWS = table_rows((ROOT / "CONTRIBUTING.md").read_text())


@pytest.mark.parametrize("module", modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_every_module_is_in_the_table(module: Path) -> None:
    assert any(named_in(row, module) for row in ROWS), (
        f"{module.relative_to(PACKAGE)} is not in CONTRIBUTING.md's table "
        f"({HEADING!r}): add it to the row of its step, or a row of its own"
    )


def test_no_step_is_described_twice() -> None:
    cells = [[cell.strip() for cell in row.strip().strip("|").split(" | ")] for row in ROWS]
    steps = [step for step, *_ in cells]
    assert len(steps) == len(set(steps))
    # A stale copy of a row: another row that begins with the same module.
    firsts = [re.findall(r"`([^`]+)`", where)[:1] for _, where, *_ in cells]
    doubled = sorted({first[0] for first in firsts if first and firsts.count(first) > 1})
    assert not doubled, f"two rows begin with the same module: {doubled}"


def test_the_rule_tells_a_module_from_a_namesake() -> None:
    assert named_in("| x | `_budget/` (`queue.py`) |", PACKAGE / "_budget" / "queue.py")
    assert not named_in("| x | `_pool/_stats.py` |", PACKAGE / "_stats.py")
    assert not named_in("| x | `_stats.py` |", PACKAGE / "simulator" / "_stats.py")
    assert named_in("| x | `_providers/` |", PACKAGE / "_providers" / "__init__.py")
