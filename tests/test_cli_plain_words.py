"""Usage errors speak the command line's terms: options and variables, not class fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_cli import run_main


@pytest.mark.parametrize("rate", ["0/10", "-1/10", "0/1"])
@pytest.mark.parametrize("command", [["generate", "a lamp"], ["batch", "p.txt", "--out", "o"]])
def test_a_rate_of_no_requests_names_the_option(command: list[str], rate: str) -> None:
    done = run_main(*command, f"--rate-limit={rate}")
    assert done.code == 2
    assert f"argument --rate-limit: at least 1 request per window, not '{rate}'" in done.stderr
    assert "RateLimit" not in done.stderr


@pytest.mark.parametrize("rate", ["5/0", "5/-1", "5/inf", "5/nan"])
def test_a_window_of_no_time_names_the_option(rate: str) -> None:
    done = run_main("generate", "a lamp", f"--rate-limit={rate}")
    assert done.code == 2
    assert "--rate-limit: the window must be a positive number of seconds" in done.stderr
    assert "RateLimit" not in done.stderr


@pytest.mark.parametrize(
    ("rate", "words"),
    [("0/10", "at least 1 request per window"), ("5/0", "a positive number of seconds")],
)
def test_a_pool_files_rate_speaks_the_files_terms(tmp_path: Path, rate: str, words: str) -> None:
    pool = tmp_path / "pool.toml"
    pool.write_text(f'[lanes.a]\nprovider = "runbase"\nrate_limit = "{rate}"\n')
    prompts = tmp_path / "p.txt"
    prompts.write_text("a lamp\n")
    done = run_main("batch", str(prompts), "--out", str(tmp_path / "o"), "--pool", str(pool))
    assert done.code == 2
    assert words in done.stderr and "rate_limit" in done.stderr
    assert "RateLimit" not in done.stderr


@pytest.mark.parametrize(
    ("given", "env", "hint"),
    [
        (
            [],
            {"APIINONE_API_KEY": "aio_key_of_the_other_seller_1"},
            "APIINONE_API_KEY is set: add --provider apiinone",
        ),
        (
            ["--provider", "apiinone"],
            {"RUNBASE_API_KEY": "sk-key-of-the-other-seller-1"},
            "RUNBASE_API_KEY is set: add --provider runbase",
        ),
    ],
)
def test_no_key_points_at_the_other_providers_key(
    given: list[str], env: dict[str, str], hint: str
) -> None:
    done = run_main("generate", "a lamp", *given, key=None, env=env)
    assert done.code == 2
    assert f"({hint})" in done.stderr
    assert next(iter(env.values())) not in done.stderr


def test_no_key_at_all_gives_no_hint() -> None:
    done = run_main("generate", "a lamp", key=None)
    assert done.code == 2
    assert "no API key for runbase: set RUNBASE_API_KEY\n" in done.stderr
    assert "is set" not in done.stderr
