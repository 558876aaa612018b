"""RFC 9457 problem details for every error the API returns.

Each problem carries a stable machine ``code`` next to the standard members; internals (tracebacks,
exception text of unexpected errors, secrets) never reach the body.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from loguru import logger

from xenios_ai.errors import XeniosError

PROBLEM_JSON = "application/problem+json"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": f"https://docs.xenios.ai/problems/{code}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def handle_xenios_error(request: Request[Any, Any, Any], exc: XeniosError) -> Response[dict[str, Any]]:
    extra = dict(exc.extra)
    if (request_id := _request_id(request)) is not None:
        extra["request_id"] = request_id
    return problem(
        exc.status,
        exc.code,
        exc.detail,
        title=exc.title,
        instance=request.url.path,
        extra=extra,
        headers=exc.headers,
    )


def handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    errors = exc.extra if isinstance(exc.extra, list) else []
    return problem(
        422,
        "invalid_body",
        exc.detail or "the request is not valid",
        title="Invalid request",
        instance=request.url.path,
        extra={"errors": errors},
    )


def handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    code = (
        "unauthorized" if isinstance(exc, NotAuthorizedException) else _HTTP_CODES.get(status, "http_error")
    )
    if status >= 500:
        return handle_unexpected(request, exc)
    return problem(status, code, exc.detail, instance=request.url.path, headers=exc.headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.opt(exception=exc).error("unhandled error on {} {}", request.method, request.url.path)
    extra = {"request_id": rid} if (rid := _request_id(request)) else None
    return problem(
        500,
        "internal_error",
        "an unexpected error occurred; it has been logged",
        instance=request.url.path,
        extra=extra,
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    XeniosError: handle_xenios_error,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    Exception: handle_unexpected,
}
