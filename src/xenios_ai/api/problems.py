"""RFC 9457 problem details for every error the API returns.

Each problem carries a stable machine ``code`` next to the standard members; internals (tracebacks,
exception text of unexpected errors, secrets) never reach the body.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import psycopg
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    NotAuthorizedException,
    SerializationException,
    ValidationException,
)
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from xenios_ai.errors import (
    ClientGone,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    XeniosError,
)

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
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_LITESTAR_DISCONNECT = "client disconnected prematurely"
"""The detail of the InternalServerException Litestar raises on ``http.disconnect`` mid-body."""
DEPENDENCY_RETRY_AFTER_SECONDS = 5
"""Retry-After of a 503 while PostgreSQL or Redis cannot be reached."""
_PUBLIC_5XX = (UpstreamError, UpstreamUnavailable, UpstreamTimeout)
"""5xx errors whose detail is written for the client (which upstream failed, how), not internals."""


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
    request_id = _request_id(request)
    if request_id is not None:
        extra["request_id"] = request_id
    detail = exc.detail
    if exc.status >= 500 and not isinstance(exc, _PUBLIC_5XX):
        logger.opt(exception=exc).error(
            "{} on {} {} (request {})", exc.code, request.method, request.url.path, request_id
        )
        detail = "an internal error occurred; it has been logged"
    return problem(
        exc.status,
        exc.code,
        detail,
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
    if status == 400 and isinstance(exc.__cause__, SerializationException):  # a body that is not JSON
        extra = {"request_id": rid} if (rid := _request_id(request)) else None
        return problem(
            422, "invalid_body", exc.detail, title="Invalid request", instance=request.url.path, extra=extra
        )
    if isinstance(exc, InternalServerException) and exc.detail == _LITESTAR_DISCONNECT:
        return handle_xenios_error(request, ClientGone("the client disconnected before sending the body"))
    if status >= 500 and status not in (502, 503, 504):
        return handle_unexpected(request, exc)
    code = (
        "unauthorized" if isinstance(exc, NotAuthorizedException) else _HTTP_CODES.get(status, "http_error")
    )
    return problem(status, code, exc.detail, instance=request.url.path, headers=exc.headers)


def handle_dependency_down(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """PostgreSQL or Redis cannot be reached (refused, pool timeout, socket timeout): 503, no traceback.

    Only the dependency's name and the error's type are told; their messages may name hosts.
    """
    which = "redis" if isinstance(exc, RedisError) else "database"
    logger.warning("{} unavailable on {} {}: {}", which, request.method, request.url.path, type(exc).__name__)
    extra: dict[str, Any] = {"dependency": which}
    if (request_id := _request_id(request)) is not None:
        extra["request_id"] = request_id
    return problem(
        503,
        "dependency_unavailable",
        f"{which} is unavailable; try again shortly",
        instance=request.url.path,
        extra=extra,
        headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
    )


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
    psycopg.OperationalError: handle_dependency_down,  # includes psycopg_pool.PoolTimeout
    RedisConnectionError: handle_dependency_down,
    RedisTimeoutError: handle_dependency_down,
    Exception: handle_unexpected,
}
