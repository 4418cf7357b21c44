"""A key passed in the wrong place never comes back in an error (issue 19's tester).

``Lane(key, "runbase")`` (arguments swapped), ``Session(key)``,
``base_url=key`` and ``settle ... --lane KEY`` are refused with a clear
error that does not repeat the key: such errors end up in CI logs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async._secrets import looks_like_key, shown

from .test_cli import KEY, run_main

KEYS = ["sk-live-0123456789abcdef", "aio_0123456789abcdef", "Zq7" * 10]


@pytest.mark.parametrize("key", KEYS)
def test_a_key_in_the_wrong_argument_is_not_echoed(key: str) -> None:
    for make in (
        lambda: gi.Lane(key, "runbase"),  # type: ignore[arg-type]
        lambda: gi.Session(key),  # type: ignore[arg-type]
        lambda: gi.Session("runbase", api_key="sk-right", base_url=key),
        lambda: gi.Lane("runbase", "sk-right", base_url=key),
    ):
        with pytest.raises(gi.ConfigurationError) as caught:
            make()
        assert key not in str(caught.value) and key[:12] not in str(caught.value)
        assert "looks like an API key" in str(caught.value)


def test_ordinary_values_are_still_shown() -> None:
    with pytest.raises(gi.ConfigurationError, match="'runbas'"):
        gi.Session("runbas")  # type: ignore[arg-type]
    assert shown("https://example.com/v1/" + "a" * 30).startswith("'https://example.com")
    assert not looks_like_key("runbase:0123456789ab") and not looks_like_key(3)
    assert shown("x y " * 50, limit=10) == "'x y x ..."


def test_settle_does_not_echo_a_key_given_as_its_lane(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    lane = f"runbase:{gi.Lane('runbase', KEY).fingerprint}"
    with gi.Journal(out / "journal.jsonl") as journal:
        journal.start(provider="runbase", base_url="http://127.0.0.1:1/v1")
        journal.intent("k1", line=1, request=gi.ImageRequest("a lamp"), lane=lane)
    done = run_main("settle", str(out), "1", "run_found", "--lane", KEY + "0123456789")
    assert done.code == 2 and "not one of this job's lanes" in done.stderr, done.stderr
    assert KEY not in done.stderr + done.stdout and "looks like an API key" in done.stderr


async def test_debug_lines_name_the_lane_never_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from gptimage_async.simulator import Simulator, SimulatorConfig

    keys = {"sk-log-a-0123456789", "sk-log-b-0123456789"}
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=1, api_keys=frozenset(keys))
    caplog.set_level(logging.DEBUG, logger="gptimage_async")
    async with Simulator(config) as sim:
        url = sim.base_url("runbase")
        lanes = [
            gi.Lane("runbase", key, base_url=url, label=name, rate_limit=gi.RateLimit(100, 1))
            for name, key in zip(("left", "right"), sorted(keys), strict=True)
        ]
        async with gi.Session(lanes=lanes) as session:
            await session.generate_many(["a lamp", "a chair", "an owl", "a cup"])
    ours = [r for r in caplog.records if r.name == "gptimage_async"]
    exchanges = [r.getMessage() for r in ours if "/runs" in r.getMessage()]
    assert exchanges and all(m.startswith(("left: ", "right: ")) for m in exchanges), exchanges
    assert not any(key in r.getMessage() for r in caplog.records for key in keys)


@pytest.mark.parametrize("label", ["sk-live-0123456789abcdef", "aio_0123456789", "sk-right-123"])
def test_a_lane_labelled_with_a_key_is_refused(label: str) -> None:
    with pytest.raises(gi.ConfigurationError, match="label must not be an API key") as caught:
        gi.Lane("runbase", "sk-right-123", label=label)
    assert label not in str(caught.value)


def test_a_pool_file_naming_a_lane_or_field_after_a_key_does_not_echo_it() -> None:
    from gptimage_async._pool import parse_pool

    env = {"K": "sk-abc-12345"}
    secret = "sk-alpha-secret-111"
    for data in (
        {"lanes": {secret: {"provider": "runbase", "key_env": "K"}}},
        {"lanes": {"a": {"provider": "runbase", "key_env": "K", secret: 1}}},
    ):
        with pytest.raises(gi.ConfigurationError) as caught:
            parse_pool(data, source="pool.toml", environ=env)
        assert secret not in str(caught.value) and "pool.toml" in str(caught.value)
    # A long variable name is a name, not a key.
    long_env = {"RUNBASE_API_KEY_OF_THE_SECOND_ACCOUNT": "sk-abc-12345"}
    pool = parse_pool(
        {
            "lanes": {
                "b": {"provider": "runbase", "key_env": "RUNBASE_API_KEY_OF_THE_SECOND_ACCOUNT"}
            }
        },
        source="pool.toml",
        environ=long_env,
    )
    assert pool.lanes[0].label == "b"


def test_a_key_given_as_a_run_id_or_a_lane_is_neither_kept_nor_echoed(tmp_path: Path) -> None:
    key = "sk-LONGREALISTICKEYAAAA0001"
    out = tmp_path / "out"
    out.mkdir()
    with gi.Journal(out / "journal.jsonl") as journal:
        journal.start(provider="runbase", base_url="http://127.0.0.1:1/v1")
        journal.intent("k1", line=1, request=gi.ImageRequest("a lamp"))
    before = (out / "journal.jsonl").read_bytes()
    done = run_main("settle", str(out), "1", key)
    assert done.code == 2 and "looks like an API key" in done.stderr, done.stderr
    assert key not in done.stderr + done.stdout
    assert (out / "journal.jsonl").read_bytes() == before  # nothing was kept
    lane = run_main("settle", str(out), "1", "run_found", "--lane", f"runbase:{key}")
    assert lane.code == 2 and key not in lane.stderr + lane.stdout
    with pytest.raises(gi.ConfigurationError) as caught:
        gi.Lane("runbase", "sk-right-123", prices={key: 3})  # type: ignore[dict-item]
    assert key not in str(caught.value)


def test_an_upper_case_variable_name_is_not_a_key() -> None:
    from gptimage_async._pool import parse_pool

    table = {"provider": "apiinone", "key_env": "AIO_K"}
    pool = parse_pool({"lanes": {"aio": table}}, source="p.toml", environ={"AIO_K": "aio_1234"})
    assert pool.lanes[0].label == "aio"
