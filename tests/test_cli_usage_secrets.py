"""Errors never echo a value that looks like an API key, wherever the key was typed.

argparse repeats what it refused, and the command line and the library name
the values they cannot use: a key typed in the wrong place (a misspelt
``--api-key``, a key given as a file, a directory or a choice) would land in a
terminal log, a CI transcript or a bug report. Each command-line case runs in
this process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async._secrets import NOT_SHOWN, redact

from .test_cli import run_main

#: Runbase's and API in One's forms, and a bare random token (a key of another form).
KEYS = ["sk-live-0123456789abcdef", "aio_0123456789abcdef", "Zq8Lm3Np7Vx2Kc9Rt4Wy6Hb1Jd5Fg0Sa"]
PREFIXED = KEYS[:2]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    "args",
    [
        ("batch", "P", "--out", "O", "--api-kee", "{key}"),  # an unknown option, its value after
        ("batch", "P", "--out", "O", "--api-kee={key}"),  # and joined to it
        ("batch", "P", "--out", "O", "-k{key}"),  # joined to a short option
        ("batch", "P", "--out", "O", "--{key}"),  # as an option's name
        ("batch", "P", "--out", "O", "--provider", "{key}"),  # an invalid choice
        ("batch", "P", "--out", "O", "--provider", "({key})"),
        ("batch", "P", "--out", "O", "--rate-limit", "20/{key}"),  # a value its type refuses
        ("generate", "a lamp", "--quality", "{key}"),
        ("generate", "a lamp", "--n", "{key}"),
        ("generate", "a lamp", "{key}"),  # an extra positional
        ("{key}",),  # the command itself
        # Refused after parsing, by the command itself:
        ("batch", "{key}", "--out", "O"),  # as the prompt file
        ("batch", "P", "--out", "O", "--pool", "{key}"),  # as the pool file
        ("unknown", "{key}"),  # as the batch directory
        ("gallery", "{key}"),
        ("generate", "a lamp", "--provider", "simulator", "--image-url", "ftp://{key}"),
    ],
)
def test_a_key_in_an_error_is_not_shown(tmp_path: Path, key: str, args: tuple[str, ...]) -> None:
    (tmp_path / "P").write_text("a lamp\n")
    argv = [str(tmp_path / "P") if a == "P" else a.format(key=key) for a in args]
    done = run_main(*argv)
    assert done.code == 2
    assert "error:" in done.stderr and NOT_SHOWN in done.stderr
    assert key not in done.stderr + done.stdout
    assert key.lower() not in (done.stderr + done.stdout).lower()


@pytest.mark.parametrize("key", PREFIXED)
def test_a_key_in_a_prompt_files_row_is_not_shown(key: str) -> None:
    for row in (f'{{"prompt": "x", "quality": "{key}"}}', f'{{"prompt": "x", "{key}": 1}}'):
        done = run_main("batch", "-", "--format", "jsonl", "--out", "o", "--dry-run", stdin=row)
        assert done.code == 2, done.stderr
        assert key.lower() not in done.stderr.lower() and NOT_SHOWN in done.stderr


def test_other_words_of_an_error_are_kept(tmp_path: Path) -> None:
    done = run_main(
        "generate", "a lamp", "--resend-uncertain-creatse", "--quality", "hgih", key=None
    )
    assert done.code == 2
    assert "--resend-uncertain-creatse" in done.stderr or "hgih" in done.stderr
    assert NOT_SHOWN not in done.stderr
    # Long file names and values without a key's mix of letters and digits stay readable.
    prompts = tmp_path / "p.txt"
    prompts.write_text("a lamp\n")
    name = "second_prompt_file_for_today.txt"
    done = run_main("batch", str(prompts), name, "--out", str(tmp_path / "o"), key=None)
    assert done.code == 2 and name in done.stderr and NOT_SHOWN not in done.stderr
    done = run_main("gallery", str(tmp_path / "no_such_directory_of_images"), key=None)
    assert "no_such_directory_of_images" in done.stderr


@pytest.mark.parametrize("key", PREFIXED)
@pytest.mark.parametrize(
    "make",
    [
        lambda key: gi.Session("runbase", api_key="sk-real-key-0000000000", on_exit=key),
        lambda key: gi.Session("runbase", api_key="sk-real-key-0000000000", routing=key),
        lambda key: gi.Session("runbase", api_key="sk-real-key-0000000000", proxy=key),
        lambda key: gi.ImageRequest("a lamp", quality=key),
        lambda key: gi.ImageRequest("a lamp", aspect_ratio=key),
        lambda key: gi.ImageRequest("a lamp", image_urls=[key]),
    ],
)
def test_a_key_passed_to_the_wrong_argument_is_not_in_the_error(key: str, make: object) -> None:
    with pytest.raises(gi.GPTImageError) as caught:
        make(key)  # type: ignore[operator]
    for text in (str(caught.value), repr(caught.value), caught.value.message):
        assert key not in text and NOT_SHOWN in text


@pytest.mark.parametrize(
    "text",
    [
        "keys begin sk- for Runbase",  # a hint naming the prefix alone
        "HTTP 404 for https://cdn.example.com/img/3f9a7c2e5b1d8f4a6c0e9b7d55.png",  # a URL's hash
        "run 8f14e45f-ceea-467f-a0e6-5f1c2e9d0b3a was not found",  # a UUID run id
        "the task-force disk-full ask-me words",
    ],
)
def test_a_library_message_keeps_what_is_not_a_key(text: str) -> None:
    assert redact(text) == text
