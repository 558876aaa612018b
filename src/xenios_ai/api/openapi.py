"""The OpenAPI document as a client generator needs it, and Swagger UI served from local assets.

Litestar derives paths, parameters and the JSON bodies from the handlers. What it cannot know is added to
the generated document once, when it is first served (`complete_openapi`):

- errors: every operation lists the statuses it can answer, each an RFC 9457 problem
  (``application/problem+json``, component ``Problem``), instead of Litestar's ``400 {status_code,
  detail, extra}`` that no route answers;
- the upload routes' ``multipart/form-data`` bodies (``file``, ``options`` as JSON of the kind's options,
  ``webhook_url``, ``webhook_include_result``); they read the body themselves, so Litestar sees none;
- the SSE routes as ``text/event-stream``, each event's payload a component (``x-events`` names them);
- ``task`` of the LLM routes as the catalogue's enum, and an analysis job's text-or-source rule.

Swagger UI's JavaScript and CSS come from the ``swagger-ui-py`` package's copy, served under
``/schema/assets/``: the page works offline.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import swagger_ui  # type: ignore[import-untyped]  # only its bundled static files are used
from litestar import Request, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.response import File

from xenios_ai.extraction.job import EXTRACTION
from xenios_ai.jobs.events import Progress
from xenios_ai.llm.types import Delta, Done
from xenios_ai.transcription.job import TRANSCRIPTION

PROBLEM_JSON = "application/problem+json"
ASSETS_PATH = "/schema/assets"
_ASSETS_DIR = Path(swagger_ui.__file__).parent / "static"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_REF = "#/components/schemas/{name}"

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

_REASONS = {
    400: "Malformed request (`bad_request`)",
    401: "No or a wrong X-API-Key (`invalid_api_key`); for user routes no, a bad or an expired user JWT "
    "(`missing_token`, `invalid_token`, `token_expired`, `jwt_not_configured`)",
    403: "Not allowed (`owner_mismatch`: a user's token names another owner; `invalid_result_url`)",
    404: "Not found (`job_not_found`: also another user's job; `result_part_not_found`, `result_not_found`)",
    405: "Method not allowed",
    409: "Conflict (`idempotency_key_reused`, `idempotency_key_in_use`, `job_finished`)",
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


def _statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
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
    if any(p.get("name") == "owner" for p in operation.get("parameters", [])):
        statuses.add(403)
    if path.startswith("/api/v1/jobs") and method == "post":
        statuses |= {409, 429}
    if path.startswith("/api/v1/jobs/") and method == "delete":
        statuses.add(409)
    if path.startswith("/api/v1/llm/") and method == "post":
        statuses |= {429, 502, 504}
    if path.startswith("/api/v1/users") or path.endswith("/me/data"):
        statuses.add(404)
    return statuses


def _problem_responses(statuses: Iterable[int]) -> dict[str, Any]:
    return {
        str(status): {
            "description": _REASONS.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": _REF.format(name="Problem")}}},
        }
        for status in sorted(statuses)
    }


def _components(*types: Any) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(types, ref_template=_REF)
    return components


def _multipart(options_name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The file to process."},
                        "options": {
                            "$ref": _REF.format(name=options_name),
                            "description": "JSON: the job's options (all optional).",
                        },
                        "webhook_url": {"type": "string", "description": "Called when the job ends."},
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


_SSE_EVENTS: dict[str, dict[str, str]] = {
    "/api/v1/jobs/{job_id}/events": {"state": "JobOut", "progress": "Progress"},
    "/api/v1/llm/stream": {"start": "StreamStart", "delta": "Delta", "done": "Done", "error": "Problem"},
}
_STREAM_START = {
    "type": "object",
    "title": "StreamStart",
    "required": ["request_id", "task"],
    "properties": {"request_id": {"type": ["string", "null"]}, "task": {"type": "string"}},
}


def complete_openapi(schema: dict[str, Any], tasks: Iterable[str]) -> dict[str, Any]:
    """A copy of Litestar's document with what it cannot know added (see the module)."""
    schema = copy.deepcopy(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM
    components["StreamStart"] = _STREAM_START
    options = {
        TRANSCRIPTION.name: f"{TRANSCRIPTION.input_type.__name__}",
        EXTRACTION.name: f"{EXTRACTION.input_type.__name__}",
    }
    for name, component in _components(
        Progress, Delta, Done, TRANSCRIPTION.input_type, EXTRACTION.input_type
    ).items():
        components.setdefault(name, component)
    task_names = sorted(tasks)
    for name in ("CompleteRequest",):
        task = components.get(name, {}).get("properties", {}).get("task")
        if task is not None and task_names:
            task["enum"] = task_names
    analysis = components.get("AnalysisRequest")
    if analysis is not None:  # exactly one of text and source_job_id
        analysis["oneOf"] = [
            {
                "required": ["text"],
                "properties": {"text": {"type": "string"}, "source_job_id": {"type": "null"}},
            },
            {
                "required": ["source_job_id"],
                "properties": {
                    "source_job_id": {"type": "string", "format": "uuid"},
                    "text": {"type": "null"},
                },
            },
        ]
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            if not path.startswith("/api/v1"):
                if path == "/health/ready":
                    responses.update(_problem_responses([503]))
                continue
            if method == "post" and path.startswith("/api/v1/jobs/") and path.rsplit("/", 1)[1] in options:
                operation["requestBody"] = _multipart(options[path.rsplit("/", 1)[1]])
            responses.pop("400", None)  # Litestar's generic validation answer: no route answers it
            responses.update(_problem_responses(_statuses(path, method, operation)))
            if path in _SSE_EVENTS:
                ok = "200"
                events = _SSE_EVENTS[path]
                responses[ok] = {
                    "description": "Server-sent events: "
                    + ", ".join(f"`{event}` ({component})" for event, component in events.items())
                    + "; `: heartbeat` comments keep the connection open.",
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string"},
                            "x-events": {event: {"$ref": _REF.format(name=c)} for event, c in events.items()},
                        }
                    },
                }
    return schema


class _Completed:
    """`complete_openapi` of Litestar's document, computed once and shared by the JSON and the UI."""

    def __init__(self, tasks: Iterable[str]) -> None:
        self._tasks = tuple(tasks)
        self._done: tuple[int, dict[str, Any]] | None = None

    def __call__(self, openapi_schema: dict[str, Any]) -> dict[str, Any]:
        if self._done is None or self._done[0] != id(openapi_schema):
            self._done = (id(openapi_schema), complete_openapi(openapi_schema, self._tasks))
        return self._done[1]


class CompleteJsonRenderPlugin(JsonRenderPlugin):
    """``/schema/openapi.json``: the generated document completed by `complete_openapi` (once)."""

    def __init__(self, completed: _Completed) -> None:
        super().__init__()
        self._completed = completed

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, self._completed(openapi_schema))


class CompleteSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI inlines the document in its page: the completed one, not Litestar's (whose errors are
    ``400 {status_code, detail, extra}``); tests/e2e/test_swagger_ui.py found the difference."""

    def __init__(self, completed: _Completed, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._completed = completed

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, self._completed(openapi_schema))


def render_plugins(tasks: Iterable[str]) -> list[Any]:
    """The document as JSON and Swagger UI (at ``/schema`` and ``/schema/swagger``) on local assets."""
    completed = _Completed(tasks)
    return [
        CompleteJsonRenderPlugin(completed),
        CompleteSwaggerRenderPlugin(
            completed,
            path=["/", "/swagger"],
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
        ),
    ]


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False)
async def swagger_assets(name: str) -> File:
    """Swagger UI's files, from the installed ``swagger-ui-py`` package."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFoundException()
    return File(_ASSETS_DIR / name, media_type=media_type, content_disposition_type="inline")
