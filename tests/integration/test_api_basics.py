"""Cross-cutting HTTP behaviour: request ids, problem details, no internals in 500s, logs without secrets."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, get
from litestar.exceptions import HTTPException, InternalServerException, ServiceUnavailableException
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from tests.support import tokens
from tests.support.asgi import captured_logs, send_then_disconnect
from tests.support.config import make_settings
from tests.support.processes import RedisServer, free_port
from xenios_ai.analysis import MAX_TEXT_CHARS
from xenios_ai.api.app import MAX_JSON_BODY_BYTES, create_app
from xenios_ai.api.auth import allow_service, require_api_key, require_user
from xenios_ai.api.schemas import MAX_PROMPT_CHARS
from xenios_ai.errors import UpstreamError, XeniosError
from xenios_ai.settings import Settings

JSON = "application/json"


async def test_request_id_is_generated_and_echoed(client: AsyncTestClient[Any]) -> None:
    generated = (await client.get("/health")).headers["x-request-id"]
    assert len(generated) == 32
    given = await client.get("/health", headers={"X-Request-ID": "mvp-req-123"})
    assert given.headers["x-request-id"] == "mvp-req-123"
    unsafe = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


async def test_unknown_route_and_method_are_problems(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"
    response = await client.delete("/health")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_unexpected_errors_give_500_without_internals(settings: Settings) -> None:
    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail: password=hunter2")

    app = create_app(settings)
    app.register(boom)
    async with AsyncTestClient(app) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "req-boom"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text


async def test_openapi_schema_is_served(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert "/health/ready" in schema["paths"]
    assert "/api/v1/status" in schema["paths"]


async def test_status_reports_version_queues_and_workers(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/api/v1/status", headers={"X-API-Key": tokens.API_KEY})
    assert response.status_code == 200
    body = response.json()
    assert body["environment"] == "test"
    assert [q["name"] for q in body["queues"]] == ["default", "extraction", "transcription", "llm"]
    assert body["uptime_seconds"] >= 0
    assert isinstance(body["workers_alive"], int)


def test_every_request_logs_one_json_line_without_secrets(api_server_url: str, api_log: Path) -> None:
    token = tokens.hs256_token("log-user")
    request_id = f"log-check-{time.time_ns()}"
    headers = tokens.token_headers(token) | {"X-Request-ID": request_id}
    assert httpx.get(f"{api_server_url}/api/v1/me", headers=headers, timeout=5).status_code == 200
    bad = headers | {"X-API-Key": "wrong-key-value", "X-Request-ID": request_id + "-bad"}
    assert httpx.get(f"{api_server_url}/api/v1/me", headers=bad, timeout=5).status_code == 401
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        text = api_log.read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if sum(1 for line in lines if str(line.get("request_id", "")).startswith(request_id)) >= 2:
            break
        time.sleep(0.05)
    mine = [line for line in lines if line.get("request_id") == request_id and line.get("path")]
    assert len(mine) == 1
    assert mine[0] | {"duration_ms": 0} == mine[0] | {
        "method": "GET", "path": "/api/v1/me", "status": 200, "duration_ms": 0,
    }  # fmt: skip
    assert mine[0]["duration_ms"] > 0
    for secret in (tokens.API_KEY, token, "wrong-key-value", tokens.TEST_JWT_SECRET):
        assert secret not in text


async def test_redis_down_is_503_naming_redis_with_a_warning_and_no_traceback(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        async with AsyncTestClient(create_app(make_settings(test_env, redis_url=redis.url))) as client:
            assert (await client.get("/api/v1/status", headers=tokens.headers())).status_code == 200
            redis.stop()
            with captured_logs() as logs:
                response = await client.get(
                    "/api/v1/status", headers=tokens.headers() | {"X-Request-ID": "req-redis-down"}
                )
    finally:
        redis.stop()
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body | {"detail": ""} == body | {
        "code": "dependency_unavailable", "dependency": "redis", "request_id": "req-redis-down", "detail": "",
    }  # fmt: skip
    assert "redis://" not in response.text
    assert str(redis.port) not in response.text
    warnings = [r for r in logs if "redis unavailable" in r["message"]]
    assert [r["level"] for r in warnings] == ["WARNING"]
    assert warnings[0]["extra"]["request_id"] == "req-redis-down"
    request_lines = [r for r in logs if r["extra"].get("component") == "http"]
    assert [(r["message"].split()[:3], r["level"]) for r in request_lines] == [
        (["GET", "/api/v1/status", "503"], "WARNING")  # a 5xx request line is a warning, not INFO
    ]
    assert all(r["exception"] is None and r["level"] != "ERROR" for r in logs)


async def test_postgres_unreachable_is_503_naming_the_database_after_the_pool_timeout(
    test_env: dict[str, str],
) -> None:
    url = f"postgresql://postgres:pg-secret@127.0.0.1:{free_port()}/none"
    settings = make_settings(test_env, database_url=url, db_pool_timeout_seconds=0.5)
    async with AsyncTestClient(create_app(settings)) as client:
        with captured_logs() as logs:
            listed = await client.get("/api/v1/jobs", headers=tokens.headers())
            submitted = await client.post(
                "/api/v1/jobs/analysis",
                json={"task": "session_summary", "text": "a session"},
                headers=tokens.headers(),
            )
    for response in (listed, submitted):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        body = response.json()
        assert (body["code"], body["dependency"]) == ("dependency_unavailable", "database")
        assert "postgresql://" not in response.text
        assert "pg-secret" not in response.text
    assert [r["message"] for r in logs if r["level"] == "WARNING" and "database" in r["message"]] == [
        "database unavailable on GET /api/v1/jobs: PoolTimeout",
        "database unavailable on POST /api/v1/jobs/analysis: PoolTimeout",
    ]
    assert all(r["exception"] is None and r["level"] != "ERROR" for r in logs)


async def test_a_body_that_is_not_json_is_422_invalid_body(client: AsyncTestClient[Any]) -> None:
    for path in ("/api/v1/llm/complete", "/api/v1/jobs/analysis"):
        response = await client.post(
            path, content=b'{"task": "chat", "input": ', headers=tokens.headers() | {"content-type": JSON}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "invalid_body"
        assert response.json()["detail"] == "Input data was truncated"  # msgspec's word for it


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json"])
async def test_a_json_route_refuses_another_media_type_with_415(
    client: AsyncTestClient[Any], content_type: str
) -> None:
    for path in ("/api/v1/llm/complete", "/api/v1/jobs/analysis"):
        response = await client.post(
            path,
            content=b'{"task": "chat", "input": "hi"}',
            headers=tokens.headers() | {"content-type": content_type},
        )
        assert response.status_code == 415, response.text
        assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON", None])
async def test_json_media_types_and_a_missing_one_are_decoded(
    client: AsyncTestClient[Any], content_type: str | None
) -> None:
    headers = tokens.headers() | ({"content-type": content_type} if content_type else {})
    response = await client.post("/api/v1/llm/complete", content=b'{"tsk": "chat"}', headers=headers)
    assert response.status_code == 422, response.text  # decoded, then refused by the schema
    assert response.json()["code"] == "invalid_body"
    assert "tsk" in response.text


async def test_a_client_gone_mid_body_is_499_without_an_error(client: AsyncTestClient[Any]) -> None:
    with captured_logs() as logs:
        status, body = await send_then_disconnect(
            client.app,
            "POST",
            "/api/v1/llm/complete",
            tokens.headers() | {"content-type": JSON, "content-length": "100000", "x-request-id": "req-gone"},
            b'{"task": "chat", "input": "',
        )
    assert status == 499
    assert body["code"] == "client_disconnected"
    assert [r["extra"].get("status") for r in logs if r["extra"].get("request_id") == "req-gone"] == [499]
    assert all(r["exception"] is None and r["level"] != "ERROR" for r in logs)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (HTTPException(status_code=502, detail="bad gateway"), 502, "bad_gateway"),
        (ServiceUnavailableException(detail="busy"), 503, "service_unavailable"),
        (HTTPException(status_code=504, detail="too slow"), 504, "gateway_timeout"),
        (InternalServerException(detail="internal detail: password=hunter2"), 500, "internal_error"),
    ],
)
async def test_litestar_http_errors_keep_their_5xx_status(
    settings: Settings, exc: HTTPException, status: int, code: str
) -> None:
    @get("/litestar-error")
    async def fail() -> None:
        raise exc

    app = create_app(settings)
    app.register(fail)
    async with AsyncTestClient(app) as client:
        response = await client.get("/litestar-error")
    assert response.status_code == status
    assert response.json()["code"] == code
    assert "hunter2" not in response.text


async def test_a_5xx_xenios_error_is_logged_and_its_detail_kept_from_the_client(settings: Settings) -> None:
    @get("/xenios-500")
    async def broken() -> None:
        raise XeniosError("storage path /srv/secret-mount is not writable", code="storage_broken")

    @get("/upstream-502")
    async def upstream() -> None:
        raise UpstreamError("every model of chat failed: m1 (timeout)", code="upstream_error")

    app = create_app(settings)
    app.register(broken)
    app.register(upstream)
    async with AsyncTestClient(app) as client:
        with captured_logs() as logs:
            response = await client.get("/xenios-500", headers={"X-Request-ID": "req-500"})
            relayed = await client.get("/upstream-502")
    assert response.status_code == 500
    body = response.json()
    assert (body["code"], body["request_id"]) == ("storage_broken", "req-500")
    assert "secret-mount" not in response.text
    errors = [r for r in logs if r["level"] == "ERROR"]
    assert len(errors) == 1
    assert "req-500" in errors[0]["message"]
    assert errors[0]["extra"]["request_id"] == "req-500"
    assert "secret-mount" in str(errors[0]["exception"].value)
    # Upstream trouble (502/503/504) is told to the client as it is: which models failed and how.
    assert relayed.status_code == 502
    assert relayed.json()["detail"] == "every model of chat failed: m1 (timeout)"


USER_SECURITY: list[dict[str, list[str]]] = [{"apiKey": [], "supabaseJWT": []}]
SERVICE_READ_SECURITY: list[dict[str, list[str]]] = [{"apiKey": [], "supabaseJWT": []}, {"apiKey": []}]


def _operation_security(app: Litestar) -> dict[tuple[str, str], list[dict[str, list[str]]]]:
    """(OpenAPI path, method) of every /api/v1 operation -> the security its guards enforce: the key and
    a user's JWT (require_user), or those or the key alone (allow_service: service reads), or the key
    alone (require_api_key), or nothing (the signed result URL carries its own credential)."""
    expected: dict[tuple[str, str], list[dict[str, list[str]]]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/api/v1"):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():  # e.g. the automatic OPTIONS handlers
                continue
            guards = handler.resolve_guards()
            want: list[dict[str, list[str]]] = (
                USER_SECURITY if require_user in guards
                else SERVICE_READ_SECURITY if allow_service in guards
                else [{"apiKey": []}] if require_api_key in guards
                else []
            )  # fmt: skip
            for method in handler.http_methods:
                expected[(path, method.lower())] = want
    return expected


async def test_openapi_security_says_key_and_jwt_exactly_where_a_user_is_required(
    client: AsyncTestClient[Any],
) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    expected = _operation_security(client.app)
    documented = {
        (path, method): operation.get("security", [])
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1")
        for method, operation in operations.items()
    }
    assert set(documented) == set(expected)
    for key, want in expected.items():
        assert documented[key] == want, key
    assert expected[("/api/v1/me", "get")] == USER_SECURITY
    assert expected[("/api/v1/llm/tasks", "get")] == [{"apiKey": []}]
    assert expected[("/api/v1/jobs/{job_id}", "get")] == SERVICE_READ_SECURITY
    assert expected[("/api/v1/jobs/{job_id}", "delete")] == USER_SECURITY
    assert expected[("/api/v1/results/{job_id}", "get")] == []


async def test_the_largest_valid_json_bodies_are_accepted_and_larger_ones_refused(
    fresh_env: Callable[..., dict[str, str]],
) -> None:
    headers = tokens.headers() | {"content-type": JSON}
    analysis = "/api/v1/jobs/analysis"
    complete = "/api/v1/llm/complete"
    per_message = MAX_PROMPT_CHARS // 500
    largest = [
        # 4 bytes of UTF-8 per character, as JSON.stringify or msgspec send them
        (analysis, msgspec.json.encode({"task": "session_summary", "text": "😀" * MAX_TEXT_CHARS}), 202),
        (complete, msgspec.json.encode({"task": "chat", "input": "😀" * 200_000}), 200),
        # a \\u00e9 escape (6 bytes) per character, as Python's json.dumps sends them by default
        (analysis, json.dumps({"task": "session_summary", "text": "é" * MAX_TEXT_CHARS}).encode(), 202),
        (
            complete,
            json.dumps(
                {"task": "chat", "messages": [{"role": "user", "content": "é" * per_message}] * 500}
            ).encode(),
            200,
        ),
    ]
    async with AsyncTestClient(create_app(make_settings(fresh_env()))) as client:
        for path, body, status in largest:
            response = await client.post(path, content=body, headers=headers)
            assert response.status_code == status, (path, len(body), response.text[:300])
        too_long = [
            (analysis, {"task": "session_summary", "text": "a" * (MAX_TEXT_CHARS + 1)}),
            (complete, {"task": "chat", "messages": [{"role": "user", "content": "a" * 200_000}] * 2
                        + [{"role": "user", "content": "a"}]}),
        ]  # fmt: skip
        for path, data in too_long:
            response = await client.post(path, content=msgspec.json.encode(data), headers=headers)
            assert response.status_code == 422, response.text[:300]
            assert response.json()["code"] == "invalid_body"
        oversized = b'{"task": "chat", "input": "hi"}'.ljust(MAX_JSON_BODY_BYTES + 1)
        for path in (analysis, complete):
            response = await client.post(path, content=oversized, headers=headers)
            assert response.status_code == 413
            assert response.json()["code"] == "payload_too_large"
