"""Errors on /v1 in OpenAI's shape: ``{"error": {"message", "type", "code", "param"}}``.

The same handlers as /api/v1 decide status, code, logging and what a 5xx may tell (`api.problems`); their
problem is then re-shaped, so guards, rate limits and upstream failures behave alike on both faces. What
differs, as OpenAI's clients expect: an invalid request is a 400 (not 422) naming the offending
``param``, and an unknown model is a 404 ``model_not_found``. Headers (Retry-After, WWW-Authenticate,
X-Request-ID) are kept, so the SDKs' own exception classes and retry logic apply.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.openapi import ResponseSpec

from xenios_ai.api.openai.schemas import ErrorDetail, ErrorResponse
from xenios_ai.api.problems import EXCEPTION_HANDLERS
from xenios_ai.errors import InvalidInput

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_AT_PATH = re.compile(r"\s*- at `\$[^`]*`")


def unsupported(param: str, detail: str | None = None) -> InvalidInput:
    """A parameter we do not serve: 400 ``unsupported_parameter`` naming it."""
    return InvalidInput(
        detail or f"the parameter {param!r} is not supported by this service",
        code="unsupported_parameter",
        extra={"param": param},
    )


def invalid(param: str, detail: str) -> InvalidInput:
    """A parameter with a value we cannot serve: 400 ``invalid_value`` naming it."""
    return InvalidInput(detail, code="invalid_value", extra={"param": param})


def _param_of_validation(errors: Any) -> tuple[str | None, str | None]:
    """(param, message) of Litestar's msgspec validation error (``key`` = where, e.g. ``messages[0]``;
    ``message`` = ``Object contains unknown field `name` - at `$...```)."""
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    message = _AT_PATH.sub("", str(errors[0].get("message") or "")).strip()
    key = errors[0].get("key")
    path = key.removeprefix("data").lstrip(".") if isinstance(key, str) else ""
    field = _UNKNOWN_FIELD.search(message)
    if field is not None:
        param = f"{path}.{field.group(1)}" if path else field.group(1)
        return param, f"the parameter {param!r} is not supported by this service"
    return (path or None), message


def to_openai(response: Response[Any]) -> Response[Any]:
    """A problem response (`api.problems`) as an OpenAI error response."""
    body: dict[str, Any] = response.content if isinstance(response.content, dict) else {}
    status = response.status_code or 500
    code: str | None = body.get("code")
    message = str(body.get("detail") or "error")
    param = body.get("param") if isinstance(body.get("param"), str) else None
    if code == "invalid_body":
        found, detail = _param_of_validation(body.get("errors"))
        param, message = found or param, detail or message
        if detail is not None and found is not None and "not supported" in detail:
            code = "unsupported_parameter"
    if code == "unknown_task":
        status, code, param = 404, "model_not_found", "model"
    elif status == 422:
        status = 400
    error_type = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
    encoded = msgspec.json.encode(ErrorResponse(ErrorDetail(message, error_type, code, param)))
    return Response(encoded, status_code=status, media_type="application/json", headers=headers)


def error_chunk(exc: Exception, request: Request[Any, Any, Any]) -> bytes:
    """The body of the OpenAI-style error event that ends a stream which already sent text."""
    handler = next(h for cls in type(exc).__mro__ if (h := EXCEPTION_HANDLERS.get(cls)) is not None)
    response = to_openai(handler(request, exc))
    content: bytes = response.content
    return content


def _wrap(handler: Any) -> Any:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        return to_openai(handler(request, exc))

    return handle


OPENAI_EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    cls: _wrap(handler) for cls, handler in EXCEPTION_HANDLERS.items()
}
"""/v1's exception handlers: /api/v1's, re-shaped."""

ERROR_RESPONSES = {
    status: ResponseSpec(ErrorResponse, description=description)
    for status, description in {
        400: "Invalid or unsupported parameter (error.param names it)",
        401: "Missing or invalid X-API-Key or bearer token (the user's Supabase JWT)",
        404: "Unknown model (task)",
        429: "Rate limited (Retry-After)",
        502: "Every model failed",
        503: "Upstream unavailable or LLM not configured (Retry-After)",
        504: "Upstream timeout",
    }.items()
}
"""OpenAPI: the errors of /v1, in OpenAI's shape."""
