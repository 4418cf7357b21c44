"""What the gallery tests share: the browser, a manifest entry, the command line in-process."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

import gptimage_async as gi
from gptimage_async._manifest import ManifestEntry
from gptimage_async.simulator import Simulator
from gptimage_async.testing import TEST_KEYS

from ._chromium import Browser, BrowserUnavailable
from .test_cli import run_main

__all__ = ["apiinone_session", "browser", "cli", "entry"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        with Browser() as chromium:
            yield chromium
    except BrowserUnavailable as exc:
        pytest.skip(f"headless Chromium cannot start here: {exc}")


def apiinone_session(sim: Simulator) -> gi.Session:
    """An unpaced session on ``sim``'s API in One: its published prices put costs on the page."""
    return gi.Session(
        "apiinone",
        api_key=TEST_KEYS["apiinone"],
        base_url=sim.base_url("apiinone"),
        rate_limit=gi.RateLimit(1000, 1.0),
    )


def entry(line: int, status: str, prompt: str = "a lamp", **fields: object) -> ManifestEntry:
    return ManifestEntry(
        line=line,
        key=f"k{line}",
        input=gi.ImageRequest(prompt),
        status=status,  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line run in this process (``run_main``), with no API key set.

    These commands are about files and words, not processes or signals, so a
    process start-up (0.4 s of CPU each) buys nothing; ``test_cli`` runs the
    console script as a real process.
    """
    done = run_main(*args, key=None)
    return subprocess.CompletedProcess(list(args), done.code, done.stdout, done.stderr)
