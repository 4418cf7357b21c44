"""Runbase's wire format: ``POST /runs``, ``GET /runs/{id}``, string error codes."""

from __future__ import annotations

import random
from typing import Any

from gptimage_async.simulator._config import SimulatorConfig
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
from gptimage_async.simulator._runs import SimulatedRun

__all__ = ["Runbase"]

_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    "invalid_json": (400, "invalid_json"),
    "missing_model": (400, "missing_model"),
    "model_not_found": (400, "model_not_found"),
    "missing_input": (400, "missing_input"),
    "invalid_input": (400, "invalid_input"),
    "missing_api_key": (401, "missing_api_key"),
    "invalid_api_key": (401, "invalid_api_key"),
    "insufficient_balance": (402, "insufficient_balance"),
    "ip_not_allowed": (403, "ip_not_allowed"),
    # Runbase reports a spent quota as a 429 that retrying can never clear.
    "usage_exceeded": (429, "USAGE_EXCEEDED"),
    "spend_limit_exceeded": (403, "api_key_spend_limit_exceeded"),
    "not_found": (404, "run_not_found"),
    "rate_limited": (429, "RATE_LIMITED"),
}


class Runbase(Dialect):
    """Runbase: ``{"model", "input": {...}}`` in, run objects out."""

    name = "runbase"
    key_prefix = "sk-"
    id_prefix = "run_"
    model = "openai/gpt-image-1.5"

    def parse_create(self, raw: bytes) -> CreateRequest:
        body = decode_object(raw)
        model = body.get("model")
        if model is None:
            raise ApiError("missing_model", "model is required.")
        if model != self.model:
            raise ApiError("model_not_found", f"Model {model!r} not found.")
        fields = body.get("input")
        if fields is None:
            raise ApiError("missing_input", "input is required.")
        if not isinstance(fields, dict):
            raise ApiError("invalid_input", "input must be an object.")
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError("invalid_input", "input.prompt must be a non-empty string.")
        return read_create_options(prompt, fields, "image_urls")

    def error(self, err: ApiError, config: SimulatorConfig, rng: random.Random) -> Reply:
        status, code = _ERRORS[err.kind]
        return json_reply(status, {"error": {"message": err.message, "code": code}})

    def _run_object(
        self, run: SimulatedRun, now: float, config: SimulatorConfig
    ) -> tuple[dict[str, Any], bool]:
        state = run.state(now)
        obj: dict[str, Any] = {"id": run.id, "model": self.model, "status": state}
        if config.runbase_extra_fields:
            fields: dict[str, Any] = {"prompt": run.prompt}
            if run.aspect_ratio != "1:1":
                fields["aspect_ratio"] = run.aspect_ratio
            if run.quality != "medium":
                fields["quality"] = run.quality
            if run.input_urls:
                fields["image_urls"] = list(run.input_urls)
            obj["created_at"] = iso_time(run.created_wall)
            obj["input"] = fields
        if state == "succeeded":
            obj["output"] = {"urls": list(run.urls)}
        elif state == "failed":
            obj["error"] = (
                run.error_message
                if run.error_as_string
                else {"message": run.error_message, "code": run.error_code}
            )
        return obj, state in ("succeeded", "failed")

    def created(
        self, run: SimulatedRun, now: float, config: SimulatorConfig, rng: random.Random
    ) -> Reply:
        obj, _ = self._run_object(run, now, config)
        return json_reply(200, obj, ok=True)

    def status(
        self, run: SimulatedRun, now: float, config: SimulatorConfig, rng: random.Random
    ) -> Reply:
        obj, terminal = self._run_object(run, now, config)
        return json_reply(200, obj, ok=True, terminal=terminal)
