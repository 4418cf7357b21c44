"""Saving images: the simulator's real files, plus a small local server for the bad answers.

The local aiohttp server stands in for a CDN misbehaving (wrong content type,
flaky 5xx, oversized bodies); it is a real server on 127.0.0.1, not a mock.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import gptimage_async as gi
from gptimage_async._download import PARTIAL_PREFIX, remove_partials, safe_filename, slugify
from gptimage_async._transport import HTTPTransport
from gptimage_async.simulator import SimulatorConfig
from gptimage_async.testing import simulated_session

from ._images import JPEG, PNG


class Cdn:
    """A local image server whose routes misbehave on purpose; counts hits per path."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        if name == "img.png":
            return web.Response(body=PNG, content_type="image/png")
        if name == "photo":
            return web.Response(body=JPEG, content_type="image/jpeg")
        if name == "page.png":
            return web.Response(text="<html>login</html>", content_type="text/html")
        if name == "flaky.png":
            if self.hits[name] <= 2:
                return web.Response(status=503, headers={"Retry-After": "0"})
            return web.Response(body=PNG, content_type="image/png")
        if name == "down.png":
            return web.Response(status=500, headers={"Retry-After": "0"})
        if name == "big-declared.png":
            return web.Response(body=b"\x00" * 5000, content_type="image/png")
        if name == "big-streamed.png":
            # No Content-Length: the cap has to be enforced while streaming.
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(10):
                await response.write(b"\x00" * 1000)
            await response.write_eof()
            return response
        return web.Response(status=404, text="no such image")


@pytest.fixture
async def cdn() -> AsyncIterator[Cdn]:
    server = Cdn()
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith(PARTIAL_PREFIX))


async def test_a_simulator_result_is_saved_as_a_whole_png(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=0.01, rate_limit=None, images_per_run=2)
    async with simulated_session(config=config) as (sim, session):
        result = await session.generate("a ceramic lamp", aspect_ratio="3:2")
        paths = await gi.download(result, tmp_path / "new" / "dir")
    assert [p.name for p in paths] == [f"{result.run_id}-1.png", f"{result.run_id}-2.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert data.endswith(b"IEND\xaeB`\x82")
    assert sim.stats.file_requests == 2
    assert leftovers(tmp_path / "new" / "dir") == []


async def test_the_size_cap_leaves_no_file_behind(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=0.01, rate_limit=None)
    async with simulated_session(config=config) as (_, session):
        result = await session.generate("a ceramic lamp")
        with pytest.raises(gi.DownloadError, match="byte cap"):
            await gi.download(result, tmp_path, max_bytes=100)
    assert names(tmp_path) == []


@pytest.mark.parametrize("name", ["big-declared.png", "big-streamed.png"])
async def test_size_cap_declared_or_streamed(cdn: Cdn, tmp_path: Path, name: str) -> None:
    with pytest.raises(gi.DownloadError, match="4000-byte cap"):
        await gi.download(f"{cdn.url}/{name}", tmp_path, max_bytes=4000)
    assert names(tmp_path) == []
    assert cdn.hits[name] == 1  # not retried: it would be as large again


async def test_a_page_that_is_not_an_image_is_refused(cdn: Cdn, tmp_path: Path) -> None:
    with pytest.raises(gi.DownloadError, match="'text/html', not an image") as caught:
        await gi.download(f"{cdn.url}/page.png", tmp_path)
    assert caught.value.url == f"{cdn.url}/page.png"
    assert names(tmp_path) == []


async def test_5xx_is_retried_until_it_passes(cdn: Cdn, tmp_path: Path) -> None:
    [path] = await gi.download(f"{cdn.url}/flaky.png", tmp_path, stem="flaky")
    assert path == tmp_path / "flaky-1.png"
    assert path.read_bytes() == PNG
    assert cdn.hits["flaky.png"] == 3


async def test_retries_give_up_after_the_attempts(cdn: Cdn, tmp_path: Path) -> None:
    with pytest.raises(gi.DownloadError, match="after 3 attempts: HTTP 500"):
        await gi.download(f"{cdn.url}/down.png", tmp_path, attempts=3)
    assert cdn.hits["down.png"] == 3


async def test_404_is_not_retried(cdn: Cdn, tmp_path: Path) -> None:
    with pytest.raises(gi.DownloadError, match="HTTP 404") as caught:
        await gi.download(f"{cdn.url}/gone.png", tmp_path)
    assert caught.value.status_code == 404
    assert cdn.hits["gone.png"] == 1


async def test_the_extension_follows_the_content_type(cdn: Cdn, tmp_path: Path) -> None:
    [path] = await gi.download([f"{cdn.url}/photo"], tmp_path)
    assert path.name == "photo-1.jpg"


async def test_hostile_names_stay_inside_the_directory(cdn: Cdn, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    for stem in ("../../escape", "/etc/passwd", "..", "a/../../b", "\x00evil", ".hidden"):
        [path] = await gi.download(f"{cdn.url}/img.png", dest, stem=stem)
        assert path.resolve().parent == dest.resolve()
        assert not path.name.startswith(".")
    assert names(tmp_path) == ["out"]


async def test_a_shared_transport_is_reused_and_left_open(cdn: Cdn, tmp_path: Path) -> None:
    transport = HTTPTransport("", None, timeout=5.0, max_connections=2, user_agent="t")
    try:
        await gi.download(f"{cdn.url}/img.png", tmp_path, stem="a", transport=transport)
        await gi.download(f"{cdn.url}/img.png", tmp_path, stem="b", transport=transport)
        assert not transport.closed
    finally:
        await transport.aclose()
    assert names(tmp_path) == ["a-1.png", "b-1.png"]


async def test_non_http_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(gi.DownloadError, match="not an http"):
        await gi.download("file:///etc/passwd", tmp_path)


async def test_an_unwritable_destination_is_a_download_error(cdn: Cdn, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(gi.DownloadError, match="cannot create"):
        await gi.download(f"{cdn.url}/img.png", blocker / "sub")


def test_names() -> None:
    assert slugify("A ceramic lamp, 3/4 view!") == "a-ceramic-lamp-3-4-view"
    assert slugify("Café crème") == "cafe-creme"
    assert slugify("日本の庭") == "image"
    assert len(slugify("word " * 100)) <= 40
    assert safe_filename("../../etc/passwd") == "etc-passwd"
    assert safe_filename("...") == "image"
    assert "/" not in safe_filename("a/b\\c")


def test_remove_partials_sweeps_only_its_own(tmp_path: Path) -> None:
    (tmp_path / f"{PARTIAL_PREFIX}x.png.abc.part").write_bytes(b"half")
    (tmp_path / "keep.part").write_bytes(b"mine")
    assert remove_partials(tmp_path) == 1
    assert names(tmp_path) == ["keep.part"]
