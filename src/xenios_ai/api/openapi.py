"""The OpenAPI document as a client generator needs it, and Swagger UI served from local assets.

Litestar derives paths, parameters and the JSON bodies from the handlers. What it cannot know is added to
the generated document once, when it is first served (`complete_openapi`):

- errors: every operation lists the statuses it can answer, each an RFC 9457 problem
  (``application/problem+json``, component ``Problem``), instead of Litestar's ``400 {status_code,
  detail, extra}`` that no route answers;
- the upload routes' ``multipart/form-data`` bodies (``file``, ``options`` as JSON of the kind's options,
  ``webhook_url``, ``webhook_include_result``); they read the body themselves, so Litestar sees none;
- the SSE routes as ``text/event-stream``, each event's payload a component (``x-events`` names them);
- ``task`` of the LLM routes as the catalogue's enum (streams: text tasks), an analysis job's
  text-or-source rule and a completion's messages-or-input rule;
- the request bodies as msgspec (what the app validates with) describes them (`_precise_bodies`).

schemathesis (``--checks all``) runs against it: tests/integration/test_schemathesis.py; the fixed parts
are in `xenios_ai.api.openapi_parts`. Why: docs/decisions/0010-mvp-fit.md.

Swagger UI's JavaScript and CSS come from the ``swagger-ui-py`` package's copy, served under
``/schema/assets/``: the page works offline.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args

import msgspec
import swagger_ui  # type: ignore[import-untyped]  # only its bundled static files are used
from litestar import Litestar, Request, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.response import File
from litestar.routes import HTTPRoute

from xenios_ai.api.openapi_parts import (
    OPENAI_AUDIO_FORM,
    PROBLEM,
    REF,
    SSE_EVENTS,
    STREAM_START,
    TRANSCRIPT_TYPES,
    WEBHOOK_URL,
    component_schemas,
    multipart,
    problem_responses,
    sse_event,
    statuses,
)
from xenios_ai.extraction.job import EXTRACTION
from xenios_ai.jobs.events import Progress
from xenios_ai.llm.tasks import AnalysisTask
from xenios_ai.llm.types import Delta, Done
from xenios_ai.transcription.job import TRANSCRIPTION

ASSETS_PATH = "/schema/assets"
_ASSETS_DIR = Path(swagger_ui.__file__).parent / "static"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def _precise_bodies(components: dict[str, Any], body_types: Iterable[Any]) -> None:
    """The request bodies' components as msgspec describes them, in place of Litestar's.

    Litestar drops the constraints of a list's items when the list is optional (``labels: list[Name] |
    None`` lost the names' length and pattern) and never says ``additionalProperties: false`` of a Struct
    that forbids unknown fields; schemathesis sent what the app rightly refused. msgspec's own schema is
    what the app validates with. A component keeps Litestar's key (``schemas_ChatMessage``): it is matched
    by title and fields.
    """
    for body_type in body_types:
        _, generated = msgspec.json.schema_components([body_type], ref_template=REF)
        top = body_type.__name__
        if top not in components:
            continue
        keys = {top: top}
        todo = [top]
        while todo:  # Litestar's key of each nested component: the ref at the same field of its parent
            name = todo.pop()
            ours = generated[name].get("properties", {})
            theirs = components.get(keys[name], {}).get("properties", {})
            for field, schema in ours.items():
                for mine, litestar in zip(_refs(schema), _refs(theirs.get(field, {})), strict=False):
                    if mine not in keys:
                        keys[mine] = litestar
                        todo.append(mine)
        for name in generated:
            keys.setdefault(name, name)
        for name, component in generated.items():
            text = msgspec.json.encode(component).decode()
            for old, new in keys.items():
                text = text.replace(f'"{REF.format(name=old)}"', f'"{REF.format(name=new)}"')
            components[keys[name]] = msgspec.json.decode(text)


def _refs(schema: Any) -> list[str]:
    """The component names ``schema`` refers to, in order."""
    text = msgspec.json.encode(schema).decode()
    prefix = REF.format(name="")
    return [part.split('"', 1)[0] for part in text.split(prefix)[1:]]


def _one_of(first: str, first_type: dict[str, Any], second: str, second_type: dict[str, Any]) -> list[Any]:
    """Exactly one of two optional fields."""
    return [
        {"required": [first], "properties": {first: first_type, second: {"type": "null"}}},
        {"required": [second], "properties": {second: second_type, first: {"type": "null"}}},
    ]


def complete_openapi(
    schema: dict[str, Any],
    tasks: Mapping[str, str],
    body_types: Iterable[Any] = (),
    languages: list[str] | None = None,
) -> dict[str, Any]:
    """A copy of Litestar's document with what it cannot know added (see the module): ``tasks`` maps the
    LLM tasks to their output kind, ``languages`` are the transcription model's (None: not known here)."""
    schema = copy.deepcopy(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _precise_bodies(components, body_types)
    components["Problem"] = PROBLEM
    components["StreamStart"] = STREAM_START
    for name, component in component_schemas(
        Progress, Delta, Done, TRANSCRIPTION.input_type, EXTRACTION.input_type
    ).items():
        components.setdefault(name, component)
    _llm_rules(schema, components, tasks)
    analysis = components.get("AnalysisRequest")
    if analysis is not None:  # exactly one of text and source_job_id
        analysis["oneOf"] = _one_of(
            "text", {"type": "string"}, "source_job_id", {"type": "string", "format": "uuid"}
        )
        if "webhook_url" in analysis.get("properties", {}):
            analysis["properties"]["webhook_url"] = {"anyOf": [WEBHOOK_URL, {"type": "null"}]}
    for kind in _OPTIONS.values():  # follow-up analyses: known tasks, each once (422 `invalid_options`)
        then = components.get(kind, {}).get("properties", {}).get("then")
        if then is not None:
            then.update(items={"type": "string", "enum": sorted(get_args(AnalysisTask))}, uniqueItems=True)
    formats = components.get(_OPTIONS[EXTRACTION.name], {}).get("properties", {}).get("output_formats")
    if formats is not None:  # 422 `invalid_options` on a repeated format
        formats["uniqueItems"] = True
    transcription = components.get(_OPTIONS[TRANSCRIPTION.name], {}).get("properties", {})
    if languages is not None and "language" in transcription:
        transcription["language"] = {"anyOf": [{"type": "string", "enum": languages}, {"type": "null"}]}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                _complete_operation(path, method, operation, languages)
    return schema


_OPTIONS = {
    TRANSCRIPTION.name: TRANSCRIPTION.input_type.__name__,
    EXTRACTION.name: EXTRACTION.input_type.__name__,
}


def _llm_rules(schema: dict[str, Any], components: dict[str, Any], tasks: Mapping[str, str]) -> None:
    """``task`` as the catalogue's enum; messages or input (JSON tasks: input); streams: text tasks."""
    text_tasks = sorted(name for name, output in tasks.items() if output == "text")
    complete = components.get("CompleteRequest")
    if complete is None or not tasks:
        return
    complete["properties"]["task"]["enum"] = sorted(tasks)
    complete["oneOf"] = _one_of("messages", {"type": "array"}, "input", {"type": "string"})
    complete["oneOf"][0]["properties"]["task"] = {"enum": text_tasks}  # 422 `invalid_llm_input`
    stream = schema.get("paths", {}).get("/api/v1/llm/stream", {}).get("post")
    if stream is not None:  # JSON tasks cannot stream (422 `task_not_streamable`)
        components["StreamRequest"] = copy.deepcopy(complete) | {"title": "StreamRequest"}
        components["StreamRequest"]["properties"]["task"]["enum"] = text_tasks
        body = {"$ref": REF.format(name="StreamRequest")}
        stream["requestBody"]["content"]["application/json"]["schema"] = body


def _complete_operation(
    path: str, method: str, operation: dict[str, Any], languages: list[str] | None
) -> None:
    responses: dict[str, Any] = operation["responses"]
    if not path.startswith("/api/v1"):
        if path == "/health/ready":
            responses.update(problem_responses([503]))
        if path == "/v1/audio/transcriptions":  # the OpenAI face reads its form itself
            _openai_audio(operation, languages)
        return
    if method == "post" and path.startswith("/api/v1/jobs/") and path.rsplit("/", 1)[1] in _OPTIONS:
        operation["requestBody"] = multipart(_OPTIONS[path.rsplit("/", 1)[1]])
    responses.pop("400", None)  # Litestar's generic validation answer: no route answers it
    transcript = TRANSCRIPT_TYPES.get(path.rsplit(".", 1)[-1]) if "/result/transcript." in path else None
    if transcript is not None and "200" in responses:
        responses["200"]["content"] = {transcript: {"schema": {"type": "string"}}}
    responses.update(problem_responses(statuses(path, method, operation)))
    if path in SSE_EVENTS:
        events = SSE_EVENTS[path]
        responses["200"] = {
            "description": "Server-sent events: "
            + ", ".join(f"`{event}` ({component})" for event, component in events.items())
            + "; `: heartbeat` comments keep the connection open.",
            "content": {
                "text/event-stream": {
                    "schema": sse_event(events),
                    "x-events": {event: {"$ref": REF.format(name=c)} for event, c in events.items()},
                }
            },
        }


def _openai_audio(operation: dict[str, Any], languages: list[str] | None) -> None:
    operation["requestBody"] = form = copy.deepcopy(OPENAI_AUDIO_FORM)
    if languages is not None:
        form["content"]["multipart/form-data"]["schema"]["properties"]["language"] = {
            "type": "string",
            "enum": languages,
        }
    responses = operation["responses"]
    ok = responses["200"].setdefault("content", {})
    for media_type in ("text/plain", "application/x-subrip", "text/vtt"):
        ok[media_type] = {"schema": {"type": "string"}}
    responses["415"] = {
        "description": "The file's type is not supported, or the body is not multipart "
        "(`unsupported_format`, `multipart_required`)",
        "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorResponse")}}},
    }


class _Completed:
    """`complete_openapi` of Litestar's document, computed once and shared by the JSON and the UI."""

    def __init__(self, tasks: Mapping[str, Any], languages: list[str] | None) -> None:
        self._tasks = {name: getattr(task, "output", "text") for name, task in tasks.items()}
        self._languages = languages
        self._done: tuple[int, dict[str, Any]] | None = None

    def __call__(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> dict[str, Any]:
        if self._done is None or self._done[0] != id(openapi_schema):
            bodies = _body_types(request.app)
            self._done = (
                id(openapi_schema),
                complete_openapi(openapi_schema, self._tasks, bodies, self._languages),
            )
        return self._done[1]


def _body_types(app: Litestar) -> list[Any]:
    """The types of the handlers' JSON bodies (their ``data`` parameter)."""
    found: dict[str, Any] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                data = handler.parsed_fn_signature.parameters.get("data")
                if data is not None and isinstance(data.annotation, type):
                    found.setdefault(
                        data.annotation.__qualname__ + data.annotation.__module__, data.annotation
                    )
    return list(found.values())


class CompleteJsonRenderPlugin(JsonRenderPlugin):
    """``/schema/openapi.json``: the generated document completed by `complete_openapi` (once)."""

    def __init__(self, completed: _Completed) -> None:
        super().__init__()
        self._completed = completed

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, self._completed(request, openapi_schema))


class CompleteSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI inlines the document in its page: the completed one, not Litestar's (whose errors are
    ``400 {status_code, detail, extra}``); tests/e2e/test_swagger_ui.py found the difference."""

    def __init__(self, completed: _Completed, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._completed = completed

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, self._completed(request, openapi_schema))


def render_plugins(tasks: Mapping[str, Any], whisper_model: str | None = None) -> list[Any]:
    """The document as JSON and Swagger UI (at ``/schema`` and ``/schema/swagger``) on local assets;
    ``tasks`` the LLM catalogue (names and their output kind); an English-only Whisper model (the bundled
    tiny.en, or a ``*.en`` WHISPER_MODEL) makes ``language`` the enum ["en"] (others: 400/failed job). Why: docs/decisions/0010-mvp-fit.md."""
    english_only = whisper_model is None or whisper_model.endswith(".en")  # None: the bundled tiny.en
    completed = _Completed(tasks, ["en"] if english_only else None)
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
