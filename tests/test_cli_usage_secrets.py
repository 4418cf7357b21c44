"""argparse's usage errors never echo a value that looks like an API key.

argparse repeats what it refused: a key typed in the wrong place (a misspelt
``--api-key``, a key given to ``--provider``) would land in a terminal log or
a CI transcript. Each case here runs the command line in this process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gptimage_async._cli._args import NOT_SHOWN

from .test_cli import run_main

KEYS = ["sk-live-0123456789abcdef", "aio_0123456789abcdef", "rb_live_abcdefghijklmnop1234"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    "args",
    [
        ("batch", "P", "--out", "O", "--api-kee", "{key}"),  # an unknown option, its value after
        ("batch", "P", "--out", "O", "--api-kee={key}"),  # and joined to it
        ("batch", "P", "--out", "O", "--provider", "{key}"),  # an invalid choice
        ("generate", "a lamp", "--quality", "{key}"),
        ("generate", "a lamp", "--n", "{key}"),  # a value its type refuses
        ("generate", "a lamp", "{key}"),  # an extra positional
        ("{key}",),  # the command itself
    ],
)
def test_a_key_in_a_usage_error_is_not_shown(
    tmp_path: Path, key: str, args: tuple[str, ...]
) -> None:
    (tmp_path / "P").write_text("a lamp\n")
    argv = [str(tmp_path / "P") if a == "P" else a.format(key=key) for a in args]
    done = run_main(*argv, key=None)
    assert done.code == 2
    assert "error:" in done.stderr and NOT_SHOWN in done.stderr
    assert key not in done.stderr + done.stdout


def test_other_words_of_a_usage_error_are_kept() -> None:
    done = run_main(
        "generate", "a lamp", "--resend-uncertain-creatse", "--quality", "hgih", key=None
    )
    assert done.code == 2
    assert "--resend-uncertain-creatse" in done.stderr or "hgih" in done.stderr
    assert NOT_SHOWN not in done.stderr
