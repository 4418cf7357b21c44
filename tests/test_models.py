"""Validation happens on construction, with typed errors naming the field."""

from __future__ import annotations

import msgspec
import pytest

import gptimage_async as gi
from gptimage_async._models import MAX_IMAGE_URLS, MAX_PROMPT_CHARS, as_request


def test_valid_request_keeps_its_fields() -> None:
    req = gi.ImageRequest(
        "a lamp", aspect_ratio="3:2", quality="high", image_urls=["https://x.io/a.png"]
    )
    assert req.image_urls == ("https://x.io/a.png",)
    assert req.aspect_ratio == "3:2"
    assert hash(req) == hash(gi.ImageRequest("a lamp", "3:2", "high", ("https://x.io/a.png",)))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n"}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
        ({"prompt": "a\x00b"}, "prompt"),
        ({"prompt": "ok", "aspect_ratio": "16:9"}, "aspect_ratio"),
        ({"prompt": "ok", "quality": "ultra"}, "quality"),
        ({"prompt": "ok", "image_urls": "https://x.io/a.png"}, "image_urls"),
        ({"prompt": "ok", "image_urls": ["ftp://x.io/a.png"]}, "image_urls"),
        ({"prompt": "ok", "image_urls": ["https:///nohost"]}, "image_urls"),
        ({"prompt": "ok", "image_urls": ["https://x.io/a b.png"]}, "image_urls"),
        ({"prompt": "ok", "image_urls": [1]}, "image_urls"),
        (
            {"prompt": "ok", "image_urls": ["https://x.io/a.png"] * (MAX_IMAGE_URLS + 1)},
            "image_urls",
        ),
    ],
)
def test_invalid_requests_raise_typed_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(gi.InvalidRequestError) as info:
        gi.ImageRequest(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_requests_decode_from_json_with_validation() -> None:
    req = msgspec.json.decode(b'{"prompt": "a", "quality": "high"}', type=gi.ImageRequest)
    assert req.quality == "high"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"prompt": "a", "quality": "x"}', type=gi.ImageRequest)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"prompt": "a", "colour": "red"}', type=gi.ImageRequest)


def test_as_request_fills_only_unset_options() -> None:
    base = gi.ImageRequest("a chair", aspect_ratio="2:3")
    merged = as_request(base, aspect_ratio="3:2", quality="high")
    assert (merged.aspect_ratio, merged.quality) == ("2:3", "high")
    assert as_request(base) is base
    with pytest.raises(gi.InvalidRequestError):
        as_request("ok", image_urls="https://x.io/a.png")
    with pytest.raises(gi.InvalidRequestError):
        as_request(b"bytes")  # type: ignore[arg-type]


def test_rate_limit_validation() -> None:
    assert gi.RateLimit(20, 10.0).rate == 2.0
    for bad in (
        {"requests": 0, "per": 1.0},
        {"requests": 1, "per": 0},
        {"requests": True, "per": 1.0},
    ):
        with pytest.raises(gi.ConfigurationError):
            gi.RateLimit(**bad)  # type: ignore[arg-type]


def test_run_status_terminality() -> None:
    assert not gi.RunStatus.PENDING.is_terminal
    assert not gi.RunStatus.RUNNING.is_terminal
    assert all(
        s.is_terminal for s in gi.RunStatus if s not in (gi.RunStatus.PENDING, gi.RunStatus.RUNNING)
    )
