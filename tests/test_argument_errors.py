"""Bad arguments raise one family: ``ConfigurationError`` (a ``ValueError``), sending nothing.

Reuse of something that runs once (a ``Session``, a ``Batch``) raises
``SessionClosedError`` (a ``RuntimeError``). Bad *request* input (a prompt)
stays ``InvalidRequestError``.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest

import gptimage_async as gi
from gptimage_async.testing import simulated_session


@pytest.mark.parametrize(
    "options",
    [
        {"request_timeout": 0},
        {"run_timeout": -1.0},
        {"max_connections": 0},
        {"max_create_attempts": 0},
        {"on_exit": "later"},
        {"rate_limit": 20},
        {"base_url": "http://example.com/api/v1"},
        # A query or fragment would swallow the paths appended to it.
        {"base_url": "https://runbase.net/api/v1?x=1"},
        {"base_url": "https://runbase.net/api/v1#top"},
        {"base_url": "https://runbase.net/api/v1?"},
        # Wrongly typed, not only out of range: never an AttributeError or TypeError.
        {"api_key": 123},
        {"base_url": 5},
        {"base_url": b"https://runbase.net/api/v1"},
        {"max_connections": True},
        {"max_create_attempts": 2.5},
        {"resend_uncertain_creates": "yes"},
        {"user_agent": "a\r\nX-Injected: y"},
        {"user_agent": ""},
        {"user_agent": 7},
    ],
)
def test_bad_session_arguments(options: dict[str, Any]) -> None:
    with pytest.raises(gi.ConfigurationError):
        gi.Session("runbase", **{"api_key": "sk-test", **options})
    # The same check, once, in the config every session is built from; the
    # key is not needed to find a bad option.
    if "api_key" not in options:
        with pytest.raises(gi.ConfigurationError):
            gi.SessionConfig("runbase", **options)


def test_session_takes_exactly_the_configs_options_with_its_defaults() -> None:
    signature = inspect.signature(gi.Session.__init__).parameters
    fields = {field.name: field.default for field in dataclasses.fields(gi.SessionConfig)}
    assert [name for name in signature if name != "self"] == list(fields)
    for name, default in fields.items():
        assert signature[name].default == default, name
    built = gi.Session("apiinone", api_key="sk-x", run_timeout=30).config
    assert built == gi.SessionConfig("apiinone", api_key="sk-x", run_timeout=30)


def test_a_config_is_checked_once_and_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNBASE_API_KEY", raising=False)
    config = gi.SessionConfig(base_url="http://127.0.0.1:9/api/v1/", request_timeout=5)
    # Normalised once: what every session built from it uses.
    assert config.base_url == "http://127.0.0.1:9/api/v1"
    assert config.request_timeout == 5.0 and isinstance(config.request_timeout, float)
    assert config.api_root == config.base_url
    assert gi.SessionConfig("apiinone").api_root == "https://apiin.one/api/v1"
    assert gi.SessionConfig().starting_rate == gi.RateLimit(20, per=10.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run_timeout = 1.0  # type: ignore[misc]
    with pytest.raises(gi.ConfigurationError, match="run_timeout"):
        dataclasses.replace(config, run_timeout=0)  # a changed copy is checked again
    # The key is read when a session is built from the config, not before.
    with pytest.raises(gi.ConfigurationError, match="RUNBASE_API_KEY"):
        gi.Session.from_config(config)
    monkeypatch.setenv("RUNBASE_API_KEY", "sk-from-env")
    session = gi.Session.from_config(config)
    assert session.config is config and session.base_url == "http://127.0.0.1:9/api/v1"
    with pytest.raises(gi.ConfigurationError, match="SessionConfig"):
        gi.Session.from_config({"provider": "runbase"})  # type: ignore[arg-type]


def test_a_configs_repr_shows_no_secret() -> None:
    config = gi.SessionConfig(
        api_key="sk-CANARY-1",
        proxy="http://user:CANARY-2@proxy.example:3128",
        base_url="http://127.0.0.1:9/api/v1",
        run_timeout=30,
    )
    for text in (repr(config), str(config), repr(gi.Session.from_config(config))):
        assert "CANARY" not in text, text
    assert "run_timeout=30.0" in repr(config) and "proxy.example:3128" in repr(config)


def test_unknown_provider() -> None:
    with pytest.raises(gi.ConfigurationError, match="unknown provider"):
        gi.Session("nope", api_key="sk-test")


@pytest.mark.parametrize(
    "options",
    [{"requests": 0, "per": 1.0}, {"requests": 1, "per": -2.0}, {"requests": 1.5, "per": 1}],
)
def test_bad_rate_limit(options: dict[str, Any]) -> None:
    with pytest.raises(gi.ConfigurationError) as info:
        gi.RateLimit(**options)
    assert isinstance(info.value, ValueError)  # what callers caught before still works


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"create_window": 0},
        {"download_concurrency": -1},
        {"max_download_bytes": 0},
    ],
)
async def test_bad_batch_arguments(tmp_path: Path, options: dict[str, Any]) -> None:
    async with simulated_session() as (_sim, session):
        with pytest.raises(gi.ConfigurationError):
            gi.Batch(session, ["a lamp"], tmp_path, **options)


@pytest.mark.parametrize("options", [{"max_bytes": 0}, {"attempts": 0}, {"attempt_timeout": 0.0}])
async def test_bad_download_arguments(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(gi.ConfigurationError):
        await gi.download("http://127.0.0.1:9/a.png", tmp_path, **options)


async def test_download_of_something_that_is_no_url(tmp_path: Path) -> None:
    with pytest.raises(gi.ConfigurationError, match="a Result, a URL, or URLs"):
        await gi.download([b"http://127.0.0.1:9/a.png"], tmp_path)  # type: ignore[list-item]


async def test_bad_stream_concurrency() -> None:
    async with simulated_session() as (_sim, session):
        with pytest.raises(gi.ConfigurationError):
            await session.generate_many(["a lamp"], concurrency=0)


@pytest.mark.parametrize("requests", ["a lamp", b"a lamp", gi.ImageRequest("a lamp")])
async def test_a_single_prompt_is_not_an_iterable_of_prompts(requests: Any) -> None:
    # "a lamp" iterated is six one-letter prompts: five paid runs nobody meant.
    async with simulated_session() as (sim, session):
        with pytest.raises(gi.InvalidRequestError, match="iterable of prompts"):
            await session.generate_many(requests)
        with pytest.raises(gi.InvalidRequestError, match="iterable of prompts"):
            session.as_completed(requests)
        assert sim.stats.creates == 0


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True])
async def test_bad_result_timeout(bad: Any) -> None:
    async with simulated_session() as (_sim, session):
        run = await session.submit("a lamp")
        with pytest.raises(gi.ConfigurationError):
            await run.result(timeout=bad)
        assert (await run.result(timeout=None)).urls


async def test_a_bad_prompt_is_a_request_error_not_a_configuration_error() -> None:
    async with simulated_session() as (_sim, session):
        with pytest.raises(gi.InvalidRequestError) as info:
            await session.submit("")
        assert not isinstance(info.value, gi.ConfigurationError)


async def test_reuse_raises_session_closed_for_sessions_and_batches(tmp_path: Path) -> None:
    async with simulated_session() as (_sim, session):
        batch = gi.Batch(session, ["a lamp"], tmp_path)
        await batch.run()
        with pytest.raises(gi.SessionClosedError, match="runs once") as info:
            await batch.run()
        assert isinstance(info.value, RuntimeError)
    with pytest.raises(gi.SessionClosedError):
        await session.open()
