"""A ``Result`` in a notebook: IPython's real display formatter, and ``save`` / ``read``.

Every result here is a real one, from a run on the simulator served on
127.0.0.1; its images are fetched over HTTP.
"""

from __future__ import annotations

import gc
import html
import re
import tempfile
import weakref
from pathlib import Path

import msgspec
import pytest
from IPython.core.formatters import DisplayFormatter

import gptimage_async as gi
from gptimage_async.simulator import Simulator
from gptimage_async.testing import TEST_KEYS, simulated_session

from .helpers import config

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<img src=x onerror=alert(1)> & a lamp"


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def shown(result: gi.Result) -> dict[str, str]:
    data, _metadata = DisplayFormatter().format(result)
    return data


async def test_a_result_shows_its_images_inline_with_an_escaped_caption() -> None:
    async with simulated_session(config=config(rate_limit=None)) as (_sim, session):
        result = await session.generate(HOSTILE, aspect_ratio="3:2")
        data = shown(result)
    assert set(data) >= {"text/plain", "text/html"}
    page = data["text/html"]
    # One <img> per URL, pointing at it; nothing else is an element of the user's text.
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert [html.unescape(s) for s in sources] == result.urls
    assert "onerror" not in re.sub(r"&lt;.*?&gt;", "", page)  # only as escaped text
    assert html.escape(HOSTILE, quote=True) in page
    assert page.count("<img ") == 1
    # The caption: prompt, the options (defaults named), run, and that the URLs expire.
    assert "aspect ratio 3:2" in page and "quality medium (default)" in page
    assert result.run_id in page and "runbase" in page
    assert "expire" in page
    assert data["text/plain"].startswith("Result(")


async def test_read_embeds_the_images_so_they_outlive_their_urls(tmp_path: Path) -> None:
    async with simulated_session(config=config(rate_limit=None)) as (_sim, session):
        result = await session.generate("a ceramic lamp", quality="high")
        images = await result.read()
        [saved] = await result.save(tmp_path)
    assert len(images) == len(result.urls) == 1
    assert images[0].startswith(PNG) and images[0] == saved.read_bytes()
    page = shown(result)["text/html"]
    [source] = re.findall(r'<img src="([^"]*)"', page)
    assert source.startswith("data:image/png;base64,")
    assert "expire" not in page and "quality high" in page


async def test_save_is_the_safe_atomic_download_path(tmp_path: Path) -> None:
    async with simulated_session(config=config(rate_limit=None)) as (sim, session):
        result = await session.generate("a ceramic lamp")
        paths = await result.save(tmp_path / "new" / "dir")
        named = await result.save(tmp_path, stem="../../etc/passwd")
        assert sim.stats.file_requests == 2
    [path] = paths
    assert path == tmp_path / "new" / "dir" / f"{result.run_id}-1.png"
    assert path.read_bytes().startswith(PNG)
    # A hostile stem cannot leave the directory; nothing half-written is left behind.
    assert named == [tmp_path / "etc-passwd-1.png"]
    assert names(tmp_path) == ["etc-passwd-1.png", "new"]


async def test_the_session_binding_is_invisible(tmp_path: Path) -> None:
    async with Simulator(config(rate_limit=None)) as sim:
        async with gi.Session(
            "runbase", api_key=TEST_KEYS["runbase"], base_url=sim.base_url("runbase")
        ) as session:
            result = await session.generate("a ceramic lamp")
        plain = msgspec.json.decode(msgspec.json.encode(result), type=gi.Result)
        assert plain == result and repr(plain) == repr(result)
        assert "_origin" not in msgspec.json.encode(result).decode()
        # A result decoded from JSON (no session) and one whose session closed still save.
        [a] = await plain.save(tmp_path / "a")
        [b] = await result.save(tmp_path / "b")
        assert a.read_bytes() == b.read_bytes() and a.read_bytes().startswith(PNG)
        assert sim.stats.file_requests == 2
        # The result does not keep its session alive, and saves without it.
        gone = weakref.ref(session)
        del session
        gc.collect()
        assert gone() is None
        [c] = await result.save(tmp_path / "c")
        assert c.read_bytes() == a.read_bytes()


async def test_a_download_error_is_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where read() stages the files
    async with simulated_session(config=config(rate_limit=None)) as (_sim, session):
        result = await session.generate("a ceramic lamp")
        assert len(await result.read()) == 1
        assert names(tmp_path) == []  # staged, read, removed
        gone = msgspec.structs.replace(result, urls=[result.urls[0] + ".missing"])
        with pytest.raises(gi.DownloadError) as failed:
            await gone.read()
    assert failed.value.url == gone.urls[0] and failed.value.status_code == 404
    assert names(tmp_path) == []
