"""Fuzzing request inputs: they pass validation or raise ``InvalidRequestError``, sending nothing.

What passes must also be something the provider accepts: the simulator
(which checks inputs the way the providers document) must never answer a
validated request with a 400.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.provisional import urls as http_urls

import gptimage_async as gi
from gptimage_async.simulator import Simulator

from .conftest import PROVIDERS, session_for, sim_config

VALID_RATIOS = ("1:1", "3:2", "2:3")
VALID_QUALITIES = ("medium", "high")
#: Image URLs one request takes (the library's documented limit).
MAX_IMAGE_URLS = 16

# Prompts: any text, the edges of both providers' limits, and blanks and NULs.
prompts = st.one_of(
    st.text(),
    st.text(min_size=1, max_size=8, alphabet=" \t\r\n\x00\x0b\u00a0\u2028abc"),
    st.sampled_from([2, 3, 4, 4999, 5000, 5001, 31_999, 32_000, 32_001]).map(lambda n: "p" * n),
)
ratios = st.one_of(st.none(), st.sampled_from(VALID_RATIOS), st.text(max_size=6))
qualities = st.one_of(st.none(), st.sampled_from(VALID_QUALITIES), st.text(max_size=8))
ODD_URLS = [
    "http://",
    "https://host",
    "ftp://host/x.png",
    "https://host/a b.png",
    "https://host/\x00.png",
    "//host/x.png",
    "https://[::1]/x.png",
    "https://[::1/x.png",
    "https://" + "h" * 5000 + ".png",
    "javascript:alert(1)",
]
url_items = st.one_of(http_urls(), st.text(max_size=40), st.sampled_from(ODD_URLS))


def _long_list(n: int, odd: list[str], at: int) -> list[str]:
    urls = [f"https://img.example/{i}.png" for i in range(n)]
    urls[at % n : at % n] = odd
    return urls


#: Short lists of any URL, and long ones (up to and past the 16 a request takes) of
#: valid URLs with at most one odd one anywhere. Long lists of generated URLs found
#: nothing more (each item is checked alone), and drawing up to 20 of them was most
#: of this file's CPU; nor did they ever reach 17 valid ones.
url_lists = st.one_of(
    st.none(),
    st.lists(url_items, max_size=4),
    st.builds(
        _long_list,
        st.integers(5, 20),
        st.lists(st.sampled_from(ODD_URLS), max_size=1),
        st.integers(0, 19),
    ),
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_valid(request: gi.ImageRequest, provider: str) -> None:
    """A request that passed validation really is valid, by the providers' documented rules."""
    assert isinstance(request.prompt, str) and request.prompt.strip()
    if provider == "apiinone":
        assert 3 <= len(request.prompt) <= 5000
    assert request.aspect_ratio in (None, *VALID_RATIOS)
    assert request.quality in (None, *VALID_QUALITIES)
    assert isinstance(request.image_urls, tuple)
    assert len(request.image_urls) <= MAX_IMAGE_URLS
    for url in request.image_urls:
        assert isinstance(url, str) and url.startswith(("http://", "https://"))


@FUZZ
@given(prompt=prompts, aspect_ratio=ratios, quality=qualities, image_urls=url_lists)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_prepare_validates_or_raises_invalid_request(
    provider: str, prompt: str, aspect_ratio: Any, quality: Any, image_urls: Any
) -> None:
    session = gi.Session(provider, api_key="sk-fuzz" if provider == "runbase" else "aio_fuzz")
    try:
        request = session.prepare(
            prompt, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
        )
    except gi.InvalidRequestError as exc:
        refused: gi.InvalidRequestError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.field in ("prompt", "aspect_ratio", "quality", "image_urls")
        return
    _check_valid(request, provider)
    # Validation is a fixed point: a validated request validates again, unchanged.
    assert session.prepare(request) == request


@contextlib.asynccontextmanager
async def _live(provider: str) -> AsyncIterator[tuple[Simulator, gi.Session]]:
    async with (
        Simulator(sim_config()) as sim,
        session_for(sim, provider, on_exit="cancel") as session,
    ):
        yield sim, session


@pytest.fixture(params=PROVIDERS)
async def live(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Simulator, gi.Session]]:
    """One simulator and session per provider, shared by every hypothesis example."""
    async with _live(request.param) as pair:
        yield pair


@FUZZ
@given(prompt=prompts, aspect_ratio=ratios, quality=qualities, image_urls=url_lists)
async def test_submit_sends_nothing_invalid_and_everything_valid(
    live: tuple[Simulator, gi.Session],
    prompt: str,
    aspect_ratio: Any,
    quality: Any,
    image_urls: Any,
) -> None:
    sim, session = live
    before = sim.stats.requests
    with anyio.fail_after(10):
        try:
            run = await session.submit(
                prompt, aspect_ratio=aspect_ratio, quality=quality, image_urls=image_urls
            )
        except gi.InvalidRequestError:
            assert sim.stats.requests == before, "an invalid request reached the server"
            return
        # Validated means the provider takes it: a 400 here would be a hole in validation.
        result = await run
    assert run.request is not None
    assert sim.runs[result.run_id].prompt == run.request.prompt
    assert sim.stats.create_requests >= 1


# -- known holes (core bugs) ------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"quality": ["high"]}, {"aspect_ratio": {"w": 3, "h": 2}}, {"image_urls": 42}],
    ids=["quality-list", "aspect-ratio-dict", "image-urls-int"],
)
def test_wrongly_typed_options_raise_invalid_request(options: dict[str, Any]) -> None:
    session = gi.Session("runbase", api_key="sk-fuzz")
    with pytest.raises(gi.InvalidRequestError):
        session.prepare("a lamp", **options)


@FUZZ
@example(prompt="a lamp \ud800")
@given(prompt=st.text(alphabet=st.characters(categories=["Cs"]), min_size=1).map("x{}x".format))
def test_unencodable_prompt_raises_invalid_request(prompt: str) -> None:
    session = gi.Session("runbase", api_key="sk-fuzz")
    with pytest.raises(gi.InvalidRequestError):
        session.prepare(prompt)


async def test_generate_many_with_an_unencodable_prompt_finishes() -> None:
    async with _live("runbase") as (sim, session):
        with anyio.fail_after(2):
            out = await session.generate_many(["a lamp", "a lamp \ud800"], return_exceptions=True)
        assert isinstance(out[0], gi.Result)
        assert isinstance(out[1], gi.InvalidRequestError)
        assert sim.stats.create_requests == 1
