"""A key of any form never comes back in a library error, and ordinary words still do.

The fresh-user tester's open findings: a bare token (a key without a
provider's prefix) pasted into ``base_url`` (as its host, path, user info or
query), into a pool file's ``key_env`` or into any option check that repeats
the value it refuses was echoed, because library messages hid only prefixed
keys. Now every ``GPTImageError`` message goes through one rule
(``_secrets.bare_token``, the command line's too), and a URL in a message is
shown without user info or query string. Hexadecimal ids, run ids, file
names and paths stay readable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import gptimage_async as gi
from gptimage_async._pool import parse_pool, parse_rate
from gptimage_async._secrets import NOT_SHOWN, bare_token, looks_like_key, redact, shown
from gptimage_async.simulator import SimulatorConfig

from .test_cli import run_main, simulator_thread

#: Bare tokens of several forms: mixed case, lower case with digits, with separators.
TOKENS = [
    "Zq8Lm3Np7Vx2Kc9Rt4Wy6Hb1Jd5Fg0Sa",
    "k3j9x2m4q8w7e1r5t6y0u2i9o4p7a3s8",
    "live_9fX2kQ7mN4pR8sT1vW6yZ3bC5dE0gH",
]
RIGHT = "sk-right-key-000000"


def _cases(token: str) -> list[Callable[[], object]]:
    return [
        lambda: gi.Lane("runbase", RIGHT, base_url=f"ftp://{token}"),
        lambda: gi.Lane("runbase", RIGHT, base_url=f"https://{token}:{token}@host/v1"),
        lambda: gi.Lane("runbase", RIGHT, base_url=f"https://host/v1?key={token}"),
        lambda: gi.Lane("runbase", RIGHT, base_url=f"https://host/{token}/v1"),
        lambda: gi.Session("runbase", api_key=RIGHT, base_url=f"gopher://host/{token}"),
        lambda: gi.Session("runbase", api_key=RIGHT, proxy=f"ftp://{token}"),
        lambda: gi.Session(token),  # type: ignore[arg-type]
        lambda: gi.Session("runbase", api_key=RIGHT, routing=token),  # type: ignore[arg-type]
        lambda: gi.Session("runbase", api_key=RIGHT, on_exit=token),  # type: ignore[arg-type]
        lambda: gi.Lane("runbase", RIGHT, prices={token: 3}),  # type: ignore[dict-item]
        lambda: gi.ImageRequest("a lamp", quality=token),  # type: ignore[arg-type]
        lambda: gi.ImageRequest("a lamp", aspect_ratio=token),  # type: ignore[arg-type]
        lambda: gi.ImageRequest("a lamp", image_urls=[f"ftp://{token}"]),
        lambda: gi.ImageRequest("a lamp", image_urls=[token]),
        lambda: parse_rate(f"20/{token}"),
        # A key pasted where the variable's NAME goes: never repeated as "not set".
        lambda: parse_pool(
            {"lanes": {"a": {"provider": "runbase", "key_env": token}}}, source="p.toml", environ={}
        ),
        lambda: parse_pool({"lanes": {"a": {"provider": token}}}, source="p.toml", environ={}),
        lambda: parse_pool({"routing": token, "lanes": {}}, source="p.toml", environ={}),
    ]


@pytest.mark.parametrize("token", TOKENS)
def test_a_bare_token_in_a_library_error_is_not_echoed(token: str) -> None:
    for number, make in enumerate(_cases(token)):
        with pytest.raises(gi.GPTImageError) as caught:
            make()
        error = caught.value
        for text in (str(error), repr(error), error.message):
            assert token not in text, (number, text)
            assert token[:16] not in text, (number, text)


def test_a_pool_files_key_env_holding_a_key_is_called_a_key() -> None:
    with pytest.raises(gi.ConfigurationError, match="looks like an API key") as caught:
        parse_pool(
            {"lanes": {"a": {"provider": "runbase", "key_env": TOKENS[0]}}},
            source="pool.toml",
            environ={TOKENS[0]: RIGHT},
        )
    assert "pool.toml" in str(caught.value) and TOKENS[0] not in str(caught.value)


@pytest.mark.parametrize("token", TOKENS)
def test_a_lane_labelled_with_a_bare_token_is_refused(token: str) -> None:
    # A label is shown everywhere (logs, manifests, the gallery, the summary).
    with pytest.raises(gi.ConfigurationError, match="label must not be an API key") as caught:
        gi.Lane("runbase", RIGHT, label=token)
    assert token not in str(caught.value)
    table = {"provider": "runbase", "key_env": "K"}
    with pytest.raises(gi.ConfigurationError, match="must not be an API key") as named:
        parse_pool({"lanes": {token: table}}, source="p.toml", environ={"K": RIGHT})
    assert token not in str(named.value)
    # Labels that are names, with digits and dates, are kept.
    label = "account-2026-12-07-primary-eu-west-1"
    assert gi.Lane("runbase", RIGHT, label=label).label == label


def test_a_base_url_holding_a_key_in_its_path_is_refused_and_never_shown() -> None:
    # Accepted, it would be in every request's URL, every log line and the Lane's repr.
    with pytest.raises(gi.ConfigurationError, match="path holds what looks like an API key"):
        gi.Lane("runbase", RIGHT, base_url=f"https://host/v1/{TOKENS[0]}")
    lane = gi.Lane("runbase", RIGHT, base_url="https://host/v1/3f9a7c2e5b1d8f4a6c0e9b7d55aa")
    assert "3f9a7c2e5b1d8f4a6c0e9b7d55aa" in repr(lane)  # a hexadecimal id is no key


def test_a_refused_url_is_shown_without_user_info_or_query() -> None:
    with pytest.raises(gi.ConfigurationError) as caught:
        gi.Lane("runbase", RIGHT, base_url="ftp://alice:hunter2@files.example.com/v1?sig=abc")
    text = str(caught.value)
    assert "ftp://files.example.com/v1?..." in text, text
    assert "hunter2" not in text and "alice" not in text and "sig=abc" not in text
    with pytest.raises(gi.InvalidRequestError) as bad:
        gi.ImageRequest("a lamp", image_urls=["ftp://bob:pw123@cdn.example.com/a.png?t=1"])
    assert "ftp://cdn.example.com/a.png?..." in str(bad.value) and "pw123" not in str(bad.value)


KEPT = [
    "HTTP 404 for https://cdn.example.com/img/3f9a7c2e5b1d8f4a6c0e9b7d55aa11.png",
    "run 8f14e45f-ceea-467f-a0e6-5f1c2e9d0b3a was not found",
    "lane runbase:604a05c7d654 is closed",
    "cannot write /tmp/pytest-of-me/pytest-12/test_things_0/out/00003-a-lamp-2083cbc7-1.png",
    "prompts-2026-12-07-v2.txt:12: quality must be 'medium' or 'high'",
    "batch_2026_12_07_run0001_outputs_final.csv is empty",
    "second_prompt_file_for_the_spring_catalogue.txt",
    "the task-force disk-full ask-me words, keys begin sk- for Runbase",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 differs",
]


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_words_ids_and_paths_are_kept(text: str) -> None:
    assert redact(text) == text
    assert str(gi.GPTImageError(text)) == text


def test_an_errors_own_run_ids_are_kept() -> None:
    # A provider's run ids may look random (base36); a caller needs them in the message.
    run_id, other = "zsxwq3l4n5rb6mgq4q5c2dvt6r", "pq7rs2tu9vw4xy1za8bc3de6fg"
    failed = gi.RunFailedError(f"run {run_id} failed", run_id=run_id)
    assert str(failed) == f"run {run_id} failed"
    mixed = gi.RunIdMismatchError(
        f"a poll of run {run_id} was answered about run {other}", run_id=run_id, answered_id=other
    )
    assert run_id in str(mixed) and other in str(mixed)
    # Anything else that random is still hidden, even in the same message.
    assert TOKENS[0] not in str(gi.RunFailedError(f"{run_id}: {TOKENS[0]}", run_id=run_id))


def test_one_rule_decides_what_a_bare_token_is() -> None:
    import gptimage_async._secrets as secrets

    assert not hasattr(secrets, "_random_token")  # the second rule is gone
    samples = [*TOKENS, "a" * 40, "0123456789abcdef0123456789", "RUNBASE_API_KEY_OF_THE_SECOND"]
    for sample in samples:
        # looks_like_key, redact (library and command line alike) and shown agree.
        hidden = redact(sample) != sample
        assert looks_like_key(sample) == hidden == bare_token(sample), sample
        assert (shown(sample) == NOT_SHOWN) == hidden, sample
    assert [bare_token(s) for s in samples] == [True, True, True, False, False, False]


#: Real keys, as a user's environment holds them: each command's error paths must not print them.
CANARIES = {
    "RUNBASE_API_KEY": "sk-CANARYrb7Q2x9Lm4Kp8Zt3",
    "APIINONE_API_KEY": "aio_CANARYai5W1y6Hb2Jd7Fg0",
    "POOL_KEY_A": "CanaryPoolA9Xq2Lm7Np3Vx8Kc4",
    "POOL_KEY_B": "sk-CANARYpoolB4Ht6Ws1Qe8",
}


#: Each command's error paths ({...}: files and URLs of the ``world`` fixture).
ERROR_PATHS = [
    # generate: argparse, a refused option, an unknown key (401), a dead endpoint.
    "generate|a lamp|--quality|best",
    "generate|a lamp|--provider|runbase|--base-url|ftp://x",
    "generate|a lamp|-v|--provider|runbase|--base-url|{url}",
    "generate|a lamp|-v|--provider|apiinone|--base-url|{aio}",
    "generate|a lamp|-v|--provider|runbase|--base-url|{dead}|--run-timeout|0.3",
    "generate|a lamp|-v|--pool|{pool}|--run-timeout|0.3",
    # a real key typed into a flag: the base URL's path, its user info, a pool's key_env
    "generate|a lamp|-v|--provider|runbase|--base-url|{dead}/{bare}|--run-timeout|0.3",
    "generate|a lamp|-v|--provider|runbase|--base-url|http://u:{bare}@127.0.0.1:1/v1",
    "generate|a lamp|-v|--pool|{keyenv}",
    # batch: a missing file, a bad pool, the unknown key, a dead lane, dry runs.
    "batch|{tmp}/missing.txt|--out|{tmp}/o1",
    "batch|{p}|--out|{tmp}/o2|--pool|{bad}",
    "batch|{p}|--out|{tmp}/o3|-v|--provider|runbase|--base-url|{url}",
    "batch|{p}|--out|{tmp}/o4|-v|--pool|{pool}|--no-state|--run-timeout|0.3",
    "batch|{p}|--out|{tmp}/o5|--dry-run|--provider|runbase",
    "batch|{p}|--out|{tmp}/o6|--dry-run|--pool|{pool}",
    # the journal's commands, the gallery, the simulator (a real key given as its --key).
    "unknown|{tmp}/empty",
    "unknown|{tmp}/empty|--pool|{bad}",
    "settle|{tmp}/empty|1|run_x",
    "settle|{tmp}/empty|1|run_x|--lane|runbase:0123456789ab",
    "gallery|{tmp}/nowhere",
    "simulate|--port|-5",
    "simulate|--key|sk-CANARYrb7Q2x9Lm4Kp8Zt3:credits=lots",
    "simulate|--fault|nonsense=2",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import socket

    tmp = tmp_path_factory.mktemp("canary")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=4)
    with simulator_thread(config.replace(api_keys=frozenset({"sk-only-this-one"}))) as sim:
        url = sim.base_url("runbase")
        (tmp / "p.txt").write_text("a lamp\nan owl\n")
        (tmp / "pool.toml").write_text(
            f'[lanes.a]\nprovider = "runbase"\nkey_env = "POOL_KEY_A"\nbase_url = "{url}"\n'
            f'[lanes.b]\nprovider = "runbase"\nkey_env = "POOL_KEY_B"\nbase_url = "{dead}"\n'
        )
        (tmp / "bad.toml").write_text(
            '[lanes.a]\nprovider = "runbase"\nkey_env = "NOT_SET_ANYWHERE"\n'
        )
        (tmp / "empty").mkdir()
        (tmp / "keyenv.toml").write_text(
            f'[lanes.a]\nprovider = "runbase"\nkey_env = "{CANARIES["POOL_KEY_A"]}"\n'
        )
        yield {
            "tmp": str(tmp),
            "p": str(tmp / "p.txt"),
            "pool": str(tmp / "pool.toml"),
            "bad": str(tmp / "bad.toml"),
            "url": url,
            "aio": sim.base_url("apiinone"),
            "dead": dead,
            "bare": CANARIES["POOL_KEY_A"],
            "keyenv": str(tmp / "keyenv.toml"),
        }


@pytest.mark.parametrize("path", ERROR_PATHS)
def test_no_command_prints_a_real_key(world: dict[str, str], path: str) -> None:
    args = [part.format(**world) for part in path.split("|")]
    done = run_main(*args, key=None, env=dict(CANARIES))
    text = done.stdout + done.stderr
    assert done.code != 0 or "--dry-run" in args, (args, text)
    for key in CANARIES.values():
        assert key not in text and key[-12:] not in text, (args, text)
