"""API in One's wire format, with every ambiguity its docs leave open.

By default the simulator answers as the documentation shows: the
``{"code": 200, "message": "success", "data": {"task_id", "status"}}``
envelope, ``IN_PROGRESS`` until the task is ``completed`` or ``failed``, the
URLs in ``data.output.urls`` and errors as ``{"error": {"code", "message",
"type"}}`` under their HTTP status. Beyond the example, the docs and the wild
show a flat body shape, status words in other cases and spellings, URLs in
other places and errors in an envelope under HTTP 200: with
``SimulatorConfig.with_variants()`` the simulator draws among all of them, per
response or per run, so a client that handles only the documented example
fails here rather than in production.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from gptimage_async.simulator._config import SimulatorConfig, UrlLocation
from gptimage_async.simulator._protocol import (
    ApiError,
    CreateRequest,
    Dialect,
    ErrorKind,
    Reply,
    decode_object,
    iso_time,
    json_reply,
    read_create_options,
)
from gptimage_async.simulator._runs import RunState, SimulatedRun

__all__ = ["ApiInOne"]

PROMPT_MIN, PROMPT_MAX = 3, 5000

_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    "invalid_json": (400, "invalid_request"),
    "missing_model": (400, "invalid_request"),
    "model_not_found": (400, "invalid_request"),
    "missing_input": (400, "invalid_request"),
    "invalid_input": (400, "invalid_request"),
    "missing_api_key": (401, "authentication_error"),
    "invalid_api_key": (401, "authentication_error"),
    "insufficient_balance": (402, "insufficient_credits"),
    "ip_not_allowed": (403, "forbidden"),
    "usage_exceeded": (403, "spend_limit"),
    "spend_limit_exceeded": (403, "spend_limit"),
    "not_found": (404, "not_found"),
    "rate_limited": (429, "rate_limit"),
}

# The documented words: the create example says IN_PROGRESS, and the status
# endpoint is polled "until status is 'completed' or 'failed'".
_PLAIN_WORDS: dict[RunState, str] = {
    "pending": "IN_PROGRESS",
    "processing": "IN_PROGRESS",
    "succeeded": "completed",
    "failed": "failed",
}

_VARIANT_WORDS: dict[RunState, tuple[str, ...]] = {
    "pending": ("pending", "PENDING", "queued", "Queued", "IN_PROGRESS"),
    "processing": ("IN_PROGRESS", "in_progress", "processing", "Running", "RUNNING"),
    "succeeded": ("completed", "COMPLETED", "SUCCESS", "succeeded", "Success"),
    "failed": ("failed", "FAILED", "ERROR", "error"),
}


def _status_word(state: RunState, config: SimulatorConfig, rng: random.Random) -> str:
    if config.apiinone_status_variants:
        return rng.choice(_VARIANT_WORDS[state])
    return _PLAIN_WORDS[state]


def _place_urls(target: dict[str, Any], location: UrlLocation, urls: list[str]) -> None:
    if location == "output.urls":
        target["output"] = {"urls": urls}
    elif location == "output_list_str":
        target["output"] = urls
    elif location == "output_list_obj":
        target["output"] = [{"url": url} for url in urls]
    elif location == "urls":
        target["urls"] = urls
    elif location == "result.urls":
        target["result"] = {"urls": urls}
    elif location == "images":
        target["images"] = [{"url": url} for url in urls]
    else:  # "random" is resolved per run at creation and never reaches here
        raise AssertionError(location)


def _shape(config: SimulatorConfig, rng: random.Random) -> Literal["envelope", "flat"]:
    if config.apiinone_shape == "mixed":
        return "envelope" if rng.random() < 0.5 else "flat"
    return config.apiinone_shape


class ApiInOne(Dialect):
    """API in One: flat create bodies in, envelope or flat task objects out."""

    name = "apiinone"
    key_prefix = "aio_"
    id_prefix = "task_"
    model = "gpt-image-1-5"

    def parse_create(self, raw: bytes) -> CreateRequest:
        body = decode_object(raw)
        model = body.get("model")
        if model is None:
            raise ApiError("missing_model", "model is required")
        if model != self.model:
            raise ApiError("model_not_found", f"Unknown model: {model!r}")
        prompt = body.get("prompt")
        if prompt is None:
            raise ApiError("missing_input", "prompt is required")
        if not isinstance(prompt, str) or not PROMPT_MIN <= len(prompt) <= PROMPT_MAX:
            raise ApiError("invalid_input", f"prompt must be {PROMPT_MIN}-{PROMPT_MAX} characters")
        return read_create_options(prompt, body, "input_urls")

    def error(self, err: ApiError, config: SimulatorConfig, rng: random.Random) -> Reply:
        status, kind = _ERRORS[err.kind]
        if (
            status != 429
            and config.apiinone_shape != "flat"
            and rng.random() < config.apiinone_envelope_error_rate
        ):
            # The error lives only in the envelope's code: HTTP says 200.
            return json_reply(200, {"code": status, "message": err.message, "data": None})
        return json_reply(status, {"error": {"code": status, "message": err.message, "type": kind}})

    def _task(
        self, run: SimulatedRun, now: float, config: SimulatorConfig, rng: random.Random
    ) -> tuple[dict[str, Any], bool]:
        state = run.state(now)
        word = _status_word(state, config, rng)
        if _shape(config, rng) == "envelope":
            data: dict[str, Any] = {"task_id": run.id, "status": word}
            body: dict[str, Any] = {"code": 200, "message": "success", "data": data}
        else:
            data = body = {
                "id": run.id,
                "status": word,
                "model": self.model,
                "created_at": iso_time(run.created_wall),
            }
        if state == "succeeded":
            _place_urls(data, run.url_location, list(run.urls))
        elif state == "failed":
            data["error"] = (
                run.error_message
                if run.error_as_string
                else {"code": run.error_code, "message": run.error_message}
            )
        return body, state in ("succeeded", "failed")

    def created(
        self, run: SimulatedRun, now: float, config: SimulatorConfig, rng: random.Random
    ) -> Reply:
        body, _ = self._task(run, now, config, rng)
        return json_reply(200, body, ok=True)

    def status(
        self, run: SimulatedRun, now: float, config: SimulatorConfig, rng: random.Random
    ) -> Reply:
        body, terminal = self._task(run, now, config, rng)
        return json_reply(200, body, ok=True, terminal=terminal)
