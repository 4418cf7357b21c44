"""Images are judged by their bytes, saved whatever their address form, and never stall.

A small aiohttp server on 127.0.0.1 plays the CDN (S3's generic content type,
error pages labelled as images, a Retry-After of a day, a body that stalls);
a raw socket server answers with no Content-Type at all.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

import gptimage_async as gi
from gptimage_async._download import DEFAULT_ATTEMPTS, DEFAULT_IMAGE_TIMEOUT, DEFAULT_TIMEOUT
from gptimage_async._retry import MAX_RETRY_AFTER
from gptimage_async.simulator import SimulatorConfig
from gptimage_async.testing import simulated_session

from ._images import GIF, JPEG, PNG, WEBP
from .web.servers import EXAMPLES, load_example

HTML = b"<!DOCTYPE html><html><body>Access denied</body></html>"
JSON = b'{"error": {"message": "token expired"}}'
S3_XML = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code></Error>'


class Cdn:
    """Serves ``/{anything}`` per a table of (status, headers, body); counts hits."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        if path == "/stall.png":
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            await response.prepare(request)
            await response.write(PNG[:10])
            await asyncio.sleep(3600)  # cancelled when the client goes away
        if path not in self.routes:
            return web.Response(status=404)
        status, headers, body = self.routes[path]
        response = web.Response(status=status, body=body, headers=headers)
        return response


@pytest.fixture
async def cdn() -> AsyncIterator[Cdn]:
    server = Cdn()
    app = web.Application()
    app.router.add_get("/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


def serve(cdn: Cdn, path: str, body: bytes, content_type: str, status: int = 200) -> str:
    cdn.routes[path] = (status, {"Content-Type": content_type}, body)
    return cdn.url + path


def files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# -- item 6: judged by the bytes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "ext"), [(PNG, ".png"), (JPEG, ".jpg"), (WEBP, ".webp"), (GIF, ".gif")]
)
@pytest.mark.parametrize(
    "label", ["binary/octet-stream", "application/octet-stream", "application/force-download"]
)
async def test_an_image_with_a_generic_type_is_saved_by_its_magic_number(
    cdn: Cdn, tmp_path: Path, body: bytes, ext: str, label: str
) -> None:
    url = serve(cdn, "/img", body, label)
    [path] = await gi.download(url, tmp_path, stem="x")
    assert path.name == f"x-1{ext}"
    assert path.read_bytes() == body


async def test_an_image_with_no_content_type_at_all_is_saved(tmp_path: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(PNG) + PNG
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        [path] = await gi.download(f"http://127.0.0.1:{port}/a", tmp_path, stem="x")
    assert path.name == "x-1.png" and path.read_bytes() == PNG


async def test_the_bytes_beat_a_wrong_image_label(cdn: Cdn, tmp_path: Path) -> None:
    [path] = await gi.download(serve(cdn, "/a.png", JPEG, "image/png"), tmp_path, stem="x")
    assert path.name == "x-1.jpg"


@pytest.mark.parametrize(
    ("body", "what"), [(HTML, "an HTML page"), (JSON, "a JSON document"), (S3_XML, "an XML page")]
)
@pytest.mark.parametrize(
    "label", ["image/png", "image/jpeg", "binary/octet-stream", "application/octet-stream"]
)
async def test_an_error_page_is_refused_whatever_its_label(
    cdn: Cdn, tmp_path: Path, body: bytes, what: str, label: str
) -> None:
    url = serve(cdn, "/a.png", b"\xef\xbb\xbf \n" + body, label)
    with pytest.raises(gi.DownloadError, match=f"{what} labelled '{label}', not an image"):
        await gi.download(url, tmp_path)
    assert files(tmp_path) == []
    assert cdn.hits["/a.png"] == 1  # the same page would come back: not retried


@pytest.mark.parametrize("body", [b"\x00" * 300, b"%PDF-1.7\n" + b"\x00" * 50, b"\x89PN"])
async def test_generic_bytes_that_are_no_image_are_refused(
    cdn: Cdn, tmp_path: Path, body: bytes
) -> None:
    with pytest.raises(gi.DownloadError, match="not a PNG, JPEG, WebP or GIF"):
        await gi.download(serve(cdn, "/blob", body, "binary/octet-stream"), tmp_path)
    assert files(tmp_path) == []


@pytest.mark.parametrize("label", ["text/html", "application/json", "text/plain"])
async def test_a_non_image_label_is_still_refused(cdn: Cdn, tmp_path: Path, label: str) -> None:
    with pytest.raises(gi.DownloadError, match="not an image"):
        await gi.download(serve(cdn, "/a", HTML, label), tmp_path)


def data_url(body: bytes, label: str = "image/png") -> str:
    return f"data:{label};base64,{base64.b64encode(body).decode()}"


@pytest.mark.parametrize(("body", "ext"), [(PNG, ".png"), (JPEG, ".jpg"), (WEBP, ".webp")])
async def test_a_data_url_in_a_result_is_saved_directly(
    tmp_path: Path, body: bytes, ext: str
) -> None:
    result = gi.Result("run_1", "runbase", [data_url(body), data_url(PNG, "image/png")])
    paths = await gi.download(result, tmp_path)
    assert [p.name for p in paths] == [f"run_1-1{ext}", "run_1-2.png"]
    assert paths[0].read_bytes() == body


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (data_url(HTML, "image/png"), "an HTML page"),
        (data_url(PNG, "text/html"), "not an image"),
        ("data:image/png;base64,%%%not-base64", "cannot be decoded"),
        (data_url(PNG * 100), "byte cap"),
        ("data:image/png;base64", "no data"),
        (data_url(PNG[: len(PNG) // 2]), "not a whole image"),
        (data_url(JPEG[:-2]), "not a whole image"),
    ],
)
async def test_a_bad_data_url_is_refused(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(gi.DownloadError, match=message):
        await gi.download([url], tmp_path, max_bytes=5000)
    assert files(tmp_path) == []


@pytest.mark.parametrize(
    ("relative", "served_at"),
    [("/files/a.png", "/files/a.png"), ("files/a.png", "/api/v1/files/a.png")],
)
async def test_a_relative_url_is_resolved_against_the_api_root(
    cdn: Cdn, tmp_path: Path, relative: str, served_at: str
) -> None:
    serve(cdn, served_at, PNG, "image/png")
    result = gi.Result("run_1", "runbase", [relative])
    [path] = await gi.download(result, tmp_path, base_url=f"{cdn.url}/api/v1/")
    assert path.read_bytes() == PNG and cdn.hits[served_at] == 1
    with pytest.raises(gi.DownloadError, match="not an http"):
        await gi.download(result, tmp_path)  # no API root to resolve it against


# -- item 9: one deadline per image -----------------------------------------------------------


def test_the_default_deadline_is_below_what_the_attempts_alone_could_take() -> None:
    assert DEFAULT_IMAGE_TIMEOUT < DEFAULT_ATTEMPTS * DEFAULT_TIMEOUT
    assert DEFAULT_IMAGE_TIMEOUT < (DEFAULT_ATTEMPTS - 1) * MAX_RETRY_AFTER + DEFAULT_TIMEOUT


@pytest.mark.parametrize(
    "retry_after", ["99999", "3", "Fri, 31 Dec 2027 23:59:59 GMT", "Wed Dec 31 23:59:59 2098"]
)
@pytest.mark.parametrize("status", [429, 503])
async def test_a_retry_after_past_the_deadline_fails_at_once(
    cdn: Cdn, tmp_path: Path, retry_after: str, status: int
) -> None:
    cdn.routes["/a.png"] = (status, {"Retry-After": retry_after}, b"")
    started = time.monotonic()
    with pytest.raises(gi.DownloadError, match="pass the image's 2s deadline"):
        await gi.download(f"{cdn.url}/a.png", tmp_path, image_timeout=2)
    assert time.monotonic() - started < 1.0
    assert cdn.hits["/a.png"] == 1


async def test_short_waits_add_up_to_the_deadline(cdn: Cdn, tmp_path: Path) -> None:
    # Waits of 0.1 s fit 10 times in the 1 s deadline, far fewer than the 100
    # attempts allowed: the deadline ends it, whether it passes during a wait or
    # during a request (a loaded machine answers slowly), with the same words.
    cdn.routes["/a.png"] = (503, {"Retry-After": "0.1"}, b"")
    started = time.monotonic()
    with pytest.raises(gi.DownloadError, match="the image's 1s deadline"):
        await gi.download(f"{cdn.url}/a.png", tmp_path, attempts=100, image_timeout=1.0)
    assert time.monotonic() - started < 2.0  # the deadline, and the server's shutdown of the read
    assert 2 <= cdn.hits["/a.png"] <= 11


async def test_a_stalled_body_fails_at_the_deadline_not_the_attempt_timeout(
    cdn: Cdn, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(gi.DownloadError, match=r"the image.s 0\.4s deadline"):
        await gi.download(
            f"{cdn.url}/stall.png", tmp_path, attempt_timeout=120, attempts=4, image_timeout=0.4
        )
    assert time.monotonic() - started < 2.0  # not 120 s
    assert files(tmp_path) == []  # no partial file left


async def test_images_of_one_call_each_get_their_deadline(cdn: Cdn, tmp_path: Path) -> None:
    serve(cdn, "/ok.png", PNG, "image/png")
    with pytest.raises(gi.DownloadError, match="stall"):
        await gi.download(
            [f"{cdn.url}/ok.png", f"{cdn.url}/stall.png"], tmp_path, image_timeout=0.3
        )


# -- item 12: files get the umask, like any other file -----------------------------------------


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    mask: int = request.param
    old = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_images_get_the_umask(cdn: Cdn, tmp_path: Path, umask: int) -> None:
    [path] = await gi.download(serve(cdn, "/a.png", PNG, "image/png"), tmp_path)
    [inline] = await gi.download([data_url(JPEG)], tmp_path, stem="inline")
    assert mode(path) == mode(inline) == 0o666 & ~umask


async def test_a_batchs_images_manifest_and_journal_get_the_umask(
    tmp_path: Path, umask: int
) -> None:
    config = SimulatorConfig(time_scale=0.01, rate_limit=None)
    async with simulated_session(config=config, rate_limit=gi.RateLimit(1000, 1)) as (_, s):
        report = await gi.Batch(s, ["a lamp", "a chair"], tmp_path / "out").run()
    assert report.ok
    written = sorted((tmp_path / "out").iterdir())
    assert len(written) == 5  # two images, the journal, the manifest, the gallery page
    assert {p.name: mode(p) for p in written} == {p.name: 0o666 & ~umask for p in written}


# -- item 12: the bulk example skips comments -----------------------------------------------------

bulk_script = load_example("bulk_script")


def test_the_bulk_example_skips_comment_lines_like_batch_does() -> None:
    with (EXAMPLES / "prompts.txt").open(encoding="utf-8") as f:
        prompts = list(bulk_script.read_prompts(f))
    assert prompts == [p.request.prompt for p in gi.read_prompts(EXAMPLES / "prompts.txt")]
    assert len(prompts) == 50 and not any(p.startswith("#") for p in prompts)
    lines = ["# a header\n", "  # indented comment\n", "a lamp\n", "\n", "a #1 chair\n"]
    assert list(bulk_script.read_prompts(lines)) == ["a lamp", "a #1 chair"]
