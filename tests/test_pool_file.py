"""The CLI's pool file: real TOML files, keys only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async._pool import Lane, load_pool_file, parse_rate

ENV = {
    "RUNBASE_API_KEY": "sk-test-main-111111",
    "RUNBASE_API_KEY_2": "sk-test-second-222222",
    "APIINONE_API_KEY": "aio_test_333333",
}

GOOD = """
routing = "cheapest"
spend_cap = 2000

[lanes.rb-main]
provider = "runbase"
prices = { medium = 4, high = 11 }
rate_limit = "20/10"

[lanes.rb-second]
provider = "runbase"
key_env = "RUNBASE_API_KEY_2"
prices = { medium = 4.5, high = 12 }

[lanes.aio]
provider = "apiinone"
base_url = "https://apiin.one/api/v1"
prices = { high = 28 }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_gives_its_pool(tmp_path: Path) -> None:
    pool = load_pool_file(_write(tmp_path, GOOD), environ=ENV)
    assert pool.routing == "cheapest" and pool.spend_cap == 2000
    assert [lane.label for lane in pool.lanes] == ["rb-main", "rb-second", "aio"]
    main, second, aio = pool.lanes
    assert main == Lane("runbase", ENV["RUNBASE_API_KEY"])
    assert second.api_key.reveal() == ENV["RUNBASE_API_KEY_2"]
    assert main.rate_limit == gi.RateLimit(20, 10.0)
    assert dict(second.prices) == {"medium": 4.5, "high": 12}
    assert dict(aio.prices) == {"medium": 10, "high": 28}  # medium: the published default
    assert {lane.unit for lane in pool.lanes} == {"price units"}  # all given: the user's
    assert aio.rate_limit == gi.RateLimit(10, 10.0)


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_RB_KEY", "sk-test-from-env")
    path = _write(tmp_path, '[lanes.only]\nprovider = "runbase"\nkey_env = "MY_RB_KEY"\n')
    pool = load_pool_file(path)
    assert pool.routing == "earliest" and pool.spend_cap is None
    assert pool.lanes[0].api_key.reveal() == "sk-test-from-env"


LANE = '[lanes.a]\nprovider = "runbase"\n'

BAD: list[tuple[str, str, str]] = [
    ("empty file", "", "no lanes"),
    ("empty lanes", "[lanes]\n", "no lanes"),
    ("not toml", "[lanes.a\n", "not valid TOML"),
    ("lanes not tables", 'lanes = ["a"]\n', ": lanes: must be tables"),
    ("lane not a table", "[lanes]\na = 3\n", "lane 'a': must be a table"),
    ("no provider", "[lanes.a]\nkey_env = 'X'\n", "lane 'a': provider: required"),
    ("unknown provider", "[lanes.a]\nprovider = 'openai'\n", "lane 'a': provider: unknown"),
    ("unknown field", LANE + "price = 3\n", "lane 'a': price: unknown field"),
    ("unknown top field", "route = 'cheapest'\n" + LANE, ": route: unknown field"),
    ("key in the file", LANE + "api_key = 'x'\n", "lane 'a': api_key: API keys never go"),
    ("key as a top field", "token = 'x'\n" + LANE, ": token: API keys never go"),
    ("runbase key as env name", LANE + "key_env = 'sk-live-abc'\n", "key_env: this looks like"),
    ("aio key as env name", LANE + "key_env = 'aio_abcdef'\n", "key_env: this looks like"),
    ("key in another field", LANE + "base_url = 'sk-abc'\n", "base_url: API keys never go"),
    ("bad env name", LANE + "key_env = 'MY KEY'\n", "key_env: must name an environment"),
    ("env not set", LANE + "key_env = 'NOT_SET_ANYWHERE'\n", "NOT_SET_ANYWHERE is not set"),
    ("env empty", LANE + "key_env = 'EMPTY'\n", "EMPTY is not set or empty"),
    ("bare rate", LANE + "rate_limit = '20'\n", "lane 'a': rate_limit: expected N/SECONDS"),
    ("rate not text", LANE + "rate_limit = 20\n", "lane 'a': rate_limit: expected N/SECONDS"),
    ("zero rate", LANE + "rate_limit = '0/10'\n", "rate_limit: at least 1 request per window"),
    ("url not text", LANE + "base_url = 3\n", "lane 'a': base_url: must be a string"),
    ("plain http", LANE + "base_url = 'http://example.com'\n", "lane 'a': plain http"),
    ("negative price", LANE + "prices = { high = -1 }\n", "lane 'a': prices['high']"),
    ("unknown quality", LANE + "prices = { low = 1 }\n", "unknown quality 'low'"),
    ("text price", LANE + "prices = { high = '3' }\n", "must be a number"),
    ("bad routing", "routing = 'fast'\n" + LANE, ": routing: must be one of earliest, cheapest"),
    ("text cap", "spend_cap = '10'\n" + LANE, ": spend_cap: must be a number"),
    ("negative cap", "spend_cap = -1\n" + LANE + "prices={medium=1,high=2}\n", "spend_cap must"),
    ("cap, no price", "spend_cap = 10\n" + LANE, "lane 'a': a spend cap needs a price"),
    (
        "same key twice",
        LANE + "[lanes.b]\nprovider = 'runbase'\nkey_env = 'SAME_AS_MAIN'\n",
        "lanes 'a' and 'b' are the same key",
    ),
    (
        "same key at two base URLs",
        "[lanes.a]\nprovider = 'runbase'\nbase_url = 'http://127.0.0.1:9/runbase/api/v1'\n"
        "[lanes.b]\nprovider = 'runbase'\nkey_env = 'SAME_AS_MAIN'\n"
        "base_url = 'http://localhost:9/runbase/api/v1'\n",
        "lanes 'a' and 'b' are the same key",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD, ids=[r[0] for r in BAD])
def test_bad_files_are_refused_naming_file_lane_and_field(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    env = {**ENV, "EMPTY": " ", "SAME_AS_MAIN": ENV["RUNBASE_API_KEY"]}
    with pytest.raises(gi.ConfigurationError) as info:
        load_pool_file(path, environ=env)
    text_of_error = str(info.value)
    assert text_of_error.startswith(f"{path}: "), text_of_error
    assert message in text_of_error
    for key in env.values():
        if key.strip():
            assert key not in text_of_error


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(gi.ConfigurationError, match="cannot read the pool file"):
        load_pool_file(path, environ=ENV)


@pytest.mark.parametrize(
    ("text", "requests", "per"), [("20/10", 20, 10.0), ("5/2.5", 5, 2.5), (" 3 / 1 ", 3, 1.0)]
)
def test_parse_rate(text: str, requests: int, per: float) -> None:
    assert parse_rate(text) == gi.RateLimit(requests, per)


@pytest.mark.parametrize("text", ["20", "a/b", "20/", "/10", "20/0", "20/-1", "1.5/10"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(gi.ConfigurationError):
        parse_rate(text)
