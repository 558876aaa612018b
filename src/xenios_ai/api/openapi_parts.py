"""The fixed parts of the OpenAPI document (`xenios_ai.api.openapi` assembles it): the problem schema and
the statuses each /api/v1 operation answers, the upload forms, the webhook URL, the SSE event schemas."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

PROBLEM_JSON = "application/problem+json"
REF = "#/components/schemas/{name}"

PROBLEM: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "An error, as RFC 9457 problem details (`application/problem+json`). `code` is the stable "
    "machine-readable reason; some problems add fields (`errors` of a 422, `attempts` of an LLM failure, "
    "`retry_after` and `limit` of a 429, `request_id`).",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {}},
        "attempts": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}

REASONS = {
    400: "Malformed request (`bad_request`)",
    401: "No or a wrong X-API-Key (`invalid_api_key`); for user routes no, a bad or an expired user JWT "
    "(`missing_token`, `invalid_token`, `token_expired`, `jwt_not_configured`)",
    403: "Not allowed (`owner_mismatch`: a user's token names another owner; `invalid_result_url`)",
    404: "Not found (`job_not_found`: also another user's job; `result_part_not_found`, `result_not_found`)",
    405: "Method not allowed",
    409: "Conflict (`idempotency_key_reused`, `idempotency_key_in_use`, `job_finished`, `result_not_ready`)",
    413: "The body is larger than the route's limit",
    415: "The body's media type or the uploaded file's type is not supported (`unsupported_format`, "
    "`multipart_required`)",
    422: "Invalid input (`invalid_body` with `errors`, `invalid_options`, `owner_required`, `unknown_task`, "
    "`invalid_webhook_url`, ...)",
    429: "Rate limited or over budget (`rate_limited`, `too_many_streams`, `budget_exceeded`; Retry-After)",
    500: "Unexpected error (`internal_error`; logged with the request id)",
    502: "The LLM provider failed (`upstream_error`, ...; `attempts`)",
    503: "A dependency is unavailable (`dependency_unavailable`, `upstream_unavailable`, "
    "`llm_not_configured`, `jwks_unavailable`; Retry-After)",
    504: "The LLM provider timed out (`upstream_timeout`, ...; `attempts`)",
}


def statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The problem statuses an /api/v1 operation can answer, from what its guards and handler do."""
    statuses = {401, 500, 503}
    if path.startswith("/api/v1/results/"):  # the signed result URL: its signature is its credential
        statuses = {403, 404, 422, 500, 503}
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {413, 415}
    if "{job_id}" in path:
        statuses.add(404)
    if "/result/" in path:
        statuses.add(409)  # `result_not_ready`: the job has not succeeded (yet)
    if any(p.get("name") == "owner" for p in operation.get("parameters", [])):
        statuses.add(403)
    if path.startswith("/api/v1/jobs") and method == "post" and not path.endswith("/cancel"):
        statuses |= {409, 429}
    if path.endswith("/cancel") or (path.startswith("/api/v1/jobs/") and method == "delete"):
        statuses.add(409)
    if path.startswith("/api/v1/llm/") and method == "post":
        statuses |= {429, 502, 504}
    if path.startswith("/api/v1/users") or path.endswith("/me/data"):
        statuses.add(404)
    if path == "/api/v1/jobs/analysis":  # source_job_id names no job of the caller's
        statuses.add(404)
    return statuses


def problem_responses(statuses: Iterable[int]) -> dict[str, Any]:
    return {
        str(status): {
            "description": REASONS.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(name="Problem")}}},
        }
        for status in sorted(statuses)
    }


def component_schemas(*types: Any) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    return components


WEBHOOK_URL: dict[str, Any] = {
    "type": "string",
    "maxLength": 2048,
    "pattern": r"^https?://[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9.-]*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~/-]*)?$",
    "description": "An http(s) URL of a named host, without credentials (an IP literal must be public: "
    "not described here)",
}


def multipart(options_name: str) -> dict[str, Any]:
    """The upload form; it describes one ``file`` part, so ``track_offsets`` (for several files, the
    tracks of one session) stays empty here (422 `invalid_options`)."""
    one_file = {"properties": {"track_offsets": {"maxItems": 0}}} if "Transcription" in options_name else {}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,  # another field is a 422 (`invalid_form`)
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The file to process."},
                        "options": {
                            "$ref": REF.format(name=options_name),
                            **one_file,
                            "description": "JSON: the job's options (all optional).",
                        },
                        "webhook_url": WEBHOOK_URL | {"description": "Called when the job ends."},
                        "webhook_include_result": {
                            "type": "string",
                            "enum": ["true", "false"],
                            "description": "The webhook's event carries the result.",
                        },
                    },
                },
                "encoding": {"options": {"contentType": "application/json"}},
            }
        },
    }


OPENAI_AUDIO_FORM: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "model"],
                "additionalProperties": False,  # another field is a 400 naming it
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "The recording."},
                    "model": {
                        "type": "string",
                        "enum": ["whisper-1"],
                        "description": "`whisper-1`, or the configured model's own name",
                    },
                    "language": {
                        "type": "string",
                        "pattern": r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$",
                        "description": "ISO 639-1 (a region suffix is ignored)",
                    },
                    "prompt": {"type": "string", "maxLength": 1000},
                    "response_format": {
                        "type": "string",
                        "enum": ["json", "text", "srt", "vtt", "verbose_json", "diarized_json"],
                    },
                    "timestamp_granularities[]": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["segment", "word"]},
                        "description": "Only with response_format verbose_json",
                    },
                    "temperature": {"type": "number", "enum": [0]},
                    "stream": {"type": "string", "enum": ["false"]},
                },
                "dependentSchemas": {  # word or segment timings come only in verbose_json
                    "timestamp_granularities[]": {
                        "required": ["response_format"],
                        "properties": {"response_format": {"const": "verbose_json"}},
                    }
                },
            }
        }
    },
}
TRANSCRIPT_TYPES = {"txt": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
SSE_EVENTS: dict[str, dict[str, str]] = {
    "/api/v1/jobs/{job_id}/events": {"state": "JobOut", "progress": "Progress"},
    "/api/v1/llm/stream": {"start": "StreamStart", "delta": "Delta", "done": "Done", "error": "Problem"},
}
STREAM_START = {
    "type": "object",
    "title": "StreamStart",
    "required": ["request_id", "task"],
    "properties": {"request_id": {"type": ["string", "null"]}, "task": {"type": "string"}},
}


def sse_event(events: dict[str, str]) -> dict[str, Any]:
    """One event of the stream (schemathesis validates each): its name, and its ``data`` as JSON of that
    event's component (``contentMediaType``/``contentSchema``, JSON Schema 2020-12)."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {"event": {"type": "string", "enum": list(events)}, "data": {"type": "string"}},
        "oneOf": [
            {
                "properties": {
                    "event": {"const": event},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": REF.format(name=component)},
                    },
                }
            }
            for event, component in events.items()
        ],
    }
