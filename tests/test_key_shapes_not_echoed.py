"""A key of a shape no rule knows, typed where it does not belong, is never echoed.

The command line's usage errors hide the value of any option whose name says it
is a secret, and any word of a key's shape from 16 characters; a pool file's
``key_env`` is repeated only when written as variable names are.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gptimage_async._secrets import NOT_SHOWN, conventional_env_name, usage_message

from .test_cli import run_main

#: Keys of shapes no prefix rule knows, 16 to 40 characters.
KEYS = [
    "rb_live_CANARY123456789",
    "Zq8mK3pL9xW2vN7r",
    "tok-4f9Kq2Lm8Xz7Wv3Bn6",
    "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "live_sk_9912abcdxyz",
    "AKIA4EXAMPLE7KEY9Q2Z",
]
#: How a key reaches an option named for a secret.
FORMS = [
    ("--api-key", "{key}"),
    ("--api-key={key}",),
    ("--key", "{key}"),
    ("--token={key}",),
    ("--client-secret", "{key}"),
    ("--password", "{key}"),
]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("form", FORMS, ids=lambda form: form[0].partition("=")[0])
def test_a_secret_options_value_is_never_shown(key: str, form: tuple[str, ...]) -> None:
    words = [word.format(key=key) for word in form]
    done = run_main("generate", "a lamp", *words)
    assert done.code == 2
    assert "unrecognized arguments" in done.stderr
    assert key not in done.stderr + done.stdout
    assert NOT_SHOWN in done.stderr
    # The option's name stays, so the user sees what was refused.
    assert form[0].partition("=")[0] in done.stderr


@pytest.mark.parametrize("key", KEYS)
def test_a_stray_word_of_a_keys_shape_is_not_shown(key: str) -> None:
    stray = run_main("generate", "a lamp", key)
    command = run_main(key, "a lamp")
    for done in (stray, command):
        assert done.code == 2
        assert key not in done.stderr + done.stdout
        assert NOT_SHOWN in done.stderr


def test_a_secret_option_hides_the_next_word_whatever_it_looks_like() -> None:
    done = run_main("generate", "a lamp", "--api-key", "hunter2")
    assert done.code == 2
    assert "hunter2" not in done.stderr
    assert "--api-key" in done.stderr


@pytest.mark.parametrize(
    "word", ["extra.txt", "prompts-2026-12-07-v2", "out/spring", "chair", "0123456789abcdef0123"]
)
def test_ordinary_stray_words_are_still_shown(word: str) -> None:
    done = run_main("generate", "a lamp", word)
    assert done.code == 2
    assert f"unrecognized arguments: {word}" in done.stderr


def test_argparses_error_about_a_secret_option_hides_its_quoted_values() -> None:
    message = "argument --token: invalid value: 'hunter2-short'"
    assert "hunter2" not in usage_message(message)
    assert usage_message("argument --quality: invalid choice: 'xx'").endswith("'xx'")


@pytest.mark.parametrize("key", KEYS)
def test_a_pool_files_key_env_is_named_only_as_a_variable_name(key: str, tmp_path: Path) -> None:
    pool = tmp_path / "pool.toml"
    pool.write_text(f'[lanes.a]\nprovider = "runbase"\nkey_env = "{key}"\n')
    prompts = tmp_path / "p.txt"
    prompts.write_text("a lamp\n")
    done = run_main("batch", str(prompts), "--out", str(tmp_path / "out"), "--pool", str(pool))
    assert done.code == 2
    assert key not in done.stderr + done.stdout
    assert "key_env" in done.stderr


def test_a_conventional_variable_name_is_still_named(tmp_path: Path) -> None:
    pool = tmp_path / "pool.toml"
    pool.write_text('[lanes.a]\nprovider = "runbase"\nkey_env = "RUNBASE_API_KEY_2"\n')
    prompts = tmp_path / "p.txt"
    prompts.write_text("a lamp\n")
    done = run_main("batch", str(prompts), "--out", str(tmp_path / "out"), "--pool", str(pool))
    assert done.code == 2
    assert "the environment variable RUNBASE_API_KEY_2 is not set or empty" in done.stderr
    assert conventional_env_name("RUNBASE_API_KEY_2")
    assert not conventional_env_name("rb_live_CANARY123456789")
    assert not conventional_env_name("my_key")
