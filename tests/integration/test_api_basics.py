"""Cross-cutting HTTP behaviour: request ids, problem details, no internals in 500s, logs without secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from litestar import get
from litestar.testing import AsyncTestClient

from tests.support import tokens
from xenios_ai.api.app import create_app
from xenios_ai.settings import Settings


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
