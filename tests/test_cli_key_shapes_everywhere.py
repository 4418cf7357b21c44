"""A value of a key's shape is never echoed by any usage error, whatever option refused it.

argparse repeats what it refused: a stray argument (``unrecognized arguments``),
an invalid choice (``--provider``), an invalid value of a typed option
(``--n``, ``--rate-limit``). Each goes through ``usage_message``, which hides a
word by ``key_shaped``, the rule a pool file's ``key_env`` is shown by too.
Ordinary values still show, so the user sees what was wrong.
"""

from __future__ import annotations

import pytest

from gptimage_async._secrets import NOT_SHOWN, conventional_env_name, key_shaped

from .test_cli import run_main

#: Keys of no provider's prefix, in shapes found in the wild.
SHAPES = {
    "hex": "abcdef0123456789abcdef0123456789",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I3PGYi8RR4eQ",
    "slack": "xoxb-1234-5678-abcdefghijklmnop",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "digits": "1234567890123456789012345",
}
#: Where the value is typed: a stray argument, or the value of an option that refuses it.
PLACES = {
    "stray": ["{value}"],
    "provider": ["--provider", "{value}"],
    "n": ["--n", "{value}"],
    "rate-limit": ["--rate-limit", "{value}"],
}
#: Values that are no key: each must be shown in the error, as typed.
ORDINARY = ["fox", "20", "3.5", "out/prompts.txt", "/tmp/prompts.txt", "http://127.0.0.1:8080/v1"]


def _words(place: str, value: str) -> list[str]:
    return [word.format(value=value) for word in PLACES[place]]


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("value", SHAPES.values(), ids=SHAPES.keys())
def test_a_key_shaped_value_is_never_shown(place: str, value: str) -> None:
    done = run_main(
        "generate", "a fox", "--base-url", "http://127.0.0.1:9/v1", *_words(place, value)
    )
    assert done.code == 2
    assert value not in done.stderr + done.stdout
    assert NOT_SHOWN in done.stderr


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("value", ORDINARY)
def test_an_ordinary_value_is_shown(place: str, value: str) -> None:
    if value == "20" and place in ("n", "rate-limit"):
        # 20 runs is valid (and would be sent); a bare rate is refused without repeating it.
        value = "20.0" if place == "n" else "20/0"
    done = run_main("generate", "a fox", *_words(place, value))
    assert done.code == 2
    assert value in done.stderr
    assert NOT_SHOWN not in done.stderr


def test_a_stray_prompt_of_words_is_shown() -> None:
    done = run_main("generate", "a lamp", "a fox")
    assert done.code == 2
    assert "unrecognized arguments: a fox" in done.stderr


@pytest.mark.parametrize("value", SHAPES.values(), ids=SHAPES.keys())
def test_the_pool_file_and_the_command_line_share_the_rule(value: str) -> None:
    # One rule: what a usage error hides, a pool file's key_env does not repeat.
    assert key_shaped(value)
    assert not conventional_env_name(value)
