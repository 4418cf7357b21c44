"""Proxies (issue 14): ``proxy=`` and ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``.

A real forward proxy on 127.0.0.1 relays to the simulator: what it records
is what went through it. Environment variables are honoured as requests and
httpx honour them (an explicit ``proxy=`` wins), read when the session opens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async._transport import HTTPTransport as Transport
from gptimage_async.simulator import Simulator

from .conftest import PROVIDERS, session_for, sim_config
from .test_wire import assert_public, free_port
from .wire_servers import Request, forward_proxy, raw_server

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_explicit_proxy_carries_creates_and_polls(provider: str) -> None:
    async with (
        forward_proxy() as proxy,
        Simulator(sim_config()) as sim,
        session_for(sim, provider, proxy=proxy.url) as session,
    ):
        results = await session.generate_many(["a lamp", "a chair", "a desk"])
        assert len(results) == 3
        root = sim.base_url(provider)
    assert sum(line.startswith(f"POST {root}") for line in proxy.request_lines) == 3
    assert sim.stats.creates == 3


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_batch_images_go_through_the_proxy(provider: str, tmp_path: Path) -> None:
    """Issue 18 item 3: downloads share the session's transport, so its proxy."""
    async with (
        forward_proxy() as proxy,
        Simulator(sim_config()) as sim,
        session_for(sim, provider, proxy=proxy.url) as session,
    ):
        report = await gi.Batch(session, ["a lamp", "a chair"], tmp_path).run()
        result = await session.generate("a desk")
        await gi.download(result, tmp_path / "one", transport=session.transport)
        files = f"GET {sim.url}/files/"
    assert [e.status for e in report.entries] == ["succeeded", "succeeded"]
    images = [line for line in proxy.request_lines if line.startswith(files)]
    assert len(images) == 3, proxy.request_lines
    assert sim.stats.file_requests == 3  # every image the simulator served came via the proxy


async def test_download_on_its_own_honours_the_environment_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with forward_proxy() as proxy, Simulator(sim_config()) as sim:
        async with session_for(sim, "runbase") as session:
            result = await session.generate("a lamp")
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        [path] = await gi.download(result, tmp_path)
    assert path.stat().st_size > 0
    assert proxy.request_lines == [f"GET {result.urls[0]} HTTP/1.1"]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_environment_proxy_is_honoured(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    async with forward_proxy() as proxy, Simulator(sim_config()) as sim:
        monkeypatch.setenv(variable, proxy.url)
        async with session_for(sim, "runbase") as session:
            await session.generate("a lamp")
    assert any(line.startswith("POST http://127.0.0.1") for line in proxy.request_lines)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
async def test_no_proxy_bypasses_it(monkeypatch: pytest.MonkeyPatch, no_proxy: str) -> None:
    async with forward_proxy() as proxy, Simulator(sim_config()) as sim:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        async with session_for(sim, "runbase") as session:
            await session.generate("a lamp")
    assert proxy.request_lines == []


async def test_explicit_proxy_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nobody listens
    async with (
        forward_proxy() as proxy,
        Simulator(sim_config()) as sim,
        session_for(sim, "runbase", proxy=proxy.url) as session,
    ):
        await session.generate("a lamp")
    assert proxy.request_lines


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HTTPS_PROXY": "http://proxy.internal:3128"}, "http://proxy.internal:3128"),
        ({"https_proxy": "proxy.internal:3128"}, "http://proxy.internal:3128"),
        ({"ALL_PROXY": "http://all.internal:8080"}, "http://all.internal:8080"),
        ({"HTTP_PROXY": "http://only-http.internal:3128"}, None),  # not for https URLs
        ({"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": ".example"}, None),
        ({"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "runbase.example"}, None),
        (
            {"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "other.example"},
            "http://proxy.internal:3128",
        ),
    ],
)
async def test_which_environment_proxy_applies(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    transport = Transport(
        "https://runbase.example/api/v1", "sk-x", timeout=1, max_connections=1, user_agent="t"
    )
    try:
        assert transport.proxy == expected
    finally:
        await transport.aclose()


async def test_proxy_credentials_are_used_and_never_shown() -> None:
    async with forward_proxy() as proxy, Simulator(sim_config()) as sim:
        url = proxy.url.replace("http://", "http://alice:s3cr3t-pw@")
        async with session_for(sim, "runbase", proxy=url) as session:
            await session.generate("a lamp")
            shown = repr(session.transport) + repr(session)
            assert "s3cr3t" not in shown and "alice" not in shown
        assert proxy.proxy_authorizations  # Basic credentials went to the proxy
    async with Simulator(sim_config()) as sim:
        dead = f"http://alice:s3cr3t-pw@127.0.0.1:{free_port()}"
        async with session_for(sim, "runbase", proxy=dead, max_create_attempts=1) as session:
            with pytest.raises(gi.APIConnectionError) as info:
                await session.submit("a lamp")
    assert_public(info.value)
    assert "proxy" in str(info.value)
    assert "s3cr3t" not in str(info.value) and "alice" not in str(info.value)


@pytest.mark.parametrize(
    "bad", ["socks5://user:s3cr3t@127.0.0.1:1080", "127.0.0.1:3128", "http://", "http://h:99999"]
)
def test_bad_proxy_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(gi.ConfigurationError) as info:
        gi.Session("runbase", api_key="sk-x", proxy=bad)
    assert "s3cr3t" not in str(info.value)


async def test_a_proxy_refusing_the_tunnel_is_a_certain_failure_without_credentials() -> None:
    async def refuse(request: Request) -> tuple[int, dict[str, str], bytes]:
        assert request.method == "CONNECT"
        return 407, {"Proxy-Authenticate": 'Basic realm="x"'}, b""

    async with raw_server(refuse) as proxy:
        url = f"http://alice:s3cr3t-pw@127.0.0.1:{proxy.port}"
        async with gi.Session(
            "runbase",
            api_key="sk-proxy-test",
            base_url="https://runbase.example/api/v1",
            proxy=url,
            max_create_attempts=2,
        ) as session:
            with pytest.raises(gi.APIConnectionError) as info:
                await session.submit("a lamp")
            assert session.stats.uncertain_creates == 0
    assert_public(info.value)
    assert len(proxy.requests) == 2  # never written to the API: tried again, once
    assert "s3cr3t" not in str(info.value) and "alice" not in str(info.value)
