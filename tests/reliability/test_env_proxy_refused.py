"""A proxy set in the environment that the client cannot use is refused, never bypassed.

``HTTPS_PROXY=socks5://...`` (or a value with no host, a bad port) stops the
session before any request with a ``ConfigurationError`` naming the variable,
its value shown without credentials; ``NO_PROXY`` still exempts a host, and a
variable for another scheme than the API's is not read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig
from tests.test_cli import against, prompt_file, run_main, simulator_thread

from .test_proxy import PROXY_VARS

BAD = [
    "socks5://user:s3cr3t@127.0.0.1:1",
    "http://",
    "http://proxy.internal:99999",
    "ftp://h:21",
    # Malformed: a scheme missing its colon (read as host "http"), only spaces, the
    # password where the host goes, a PAC file's URL, a host with a space.
    "http//user:s3cr3t@proxy.internal:8080",
    " ",
    "://@@s3cr3t",
    "http://proxy.internal:3128/s3cr3t.pac",
    "http://user:s3cr3t@proxy internal:8080",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
@pytest.mark.parametrize("bad", BAD)
async def test_a_bad_environment_proxy_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, bad: str
) -> None:
    monkeypatch.setenv(variable, bad)
    with pytest.raises(gi.ConfigurationError) as info:
        async with gi.Session("runbase", api_key="sk-test-proxy"):  # https: HTTPS_PROXY, ALL_PROXY
            pytest.fail("the session opened")
    message = str(info.value)
    assert variable in message
    assert "s3cr3t" not in message and "user" not in message
    assert "not bypassed" in message
    with pytest.raises(gi.ConfigurationError, match=variable):  # when made, too: nothing opens
        gi.Session("runbase", api_key="sk-test-proxy")


async def test_the_schemes_own_variable_is_named_when_both_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALL_PROXY", "http://fine.internal:3128")
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1")
    with pytest.raises(gi.ConfigurationError, match="HTTPS_PROXY"):
        async with gi.Session("runbase", api_key="sk-test-proxy"):
            pytest.fail("the session opened")


@pytest.mark.parametrize("no_proxy", ["runbase.example", ".example", "*"])
async def test_no_proxy_still_exempts_the_host(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    session = gi.Session("runbase", api_key="sk-test-proxy", base_url="https://runbase.example/v1")
    async with session:
        assert session.transport.proxy is None


async def test_another_schemes_bad_variable_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "socks5://127.0.0.1:1")  # for http:// URLs only
    async with gi.Session("runbase", api_key="sk-test-proxy") as session:
        assert session.transport.proxy is None


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
def test_the_command_line_refuses_it_before_sending_anything(variable: str, tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path / "p.txt", 3)
    with simulator_thread(SimulatorConfig(time_scale=0.01)) as sim:
        done = run_main(
            "batch",
            str(prompts),
            "--out",
            str(tmp_path / "out"),
            *against(sim),
            env={variable: "socks5://user:s3cr3t@127.0.0.1:1"},
        )
        requests = sim.stats.requests
    assert done.code == 2, done.stderr
    assert variable in done.stderr and "socks5://127.0.0.1:1" in done.stderr
    assert "s3cr3t" not in done.stderr
    assert "ignoring" not in done.stderr
    assert requests == 0


async def test_a_proxy_that_cannot_be_reached_is_named_not_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A proxy in "user:password@host:port" form (read as http) whose name does not
    # resolve: the connection that failed is the proxy's, and the message says so.
    async with Simulator(SimulatorConfig(time_scale=0.01)) as sim:
        monkeypatch.setenv("HTTP_PROXY", "user:s3cr3t@proxy.invalid:8080")
        async with gi.Session(
            "runbase", api_key="sk-test-proxy", base_url=sim.base_url("runbase")
        ) as session:
            with pytest.raises(gi.APIConnectionError) as info:
                await session.generate("a lamp")
        assert sim.stats.requests == 0
    message = str(info.value)
    assert "the proxy at proxy.invalid:8080" in message, message
    assert "s3cr3t" not in message and "user" not in message
