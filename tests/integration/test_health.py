"""Health routes, readiness with a dependency down, and recovery."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from tests.support.config import make_settings
from tests.support.processes import RedisServer, free_port
from xenios_ai.api.app import create_app
from xenios_ai.version import VERSION


async def test_health_and_live(client: AsyncTestClient[Any]) -> None:
    for path in ("/health", "/health/live"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "version": VERSION}


async def test_ready_checks_postgres_and_redis(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failed"] == []
    for name in ("postgres", "redis"):
        assert body["checks"][name]["status"] == "ok"
        assert body["checks"][name]["latency_ms"] >= 0


async def test_ready_names_postgres_when_it_is_unreachable(test_env: dict[str, str]) -> None:
    settings = make_settings(test_env, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    async with AsyncTestClient(create_app(settings)) as client:
        started = time.monotonic()
        response = await client.get("/health/ready")
        assert time.monotonic() - started < 2.0
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["postgres"]
    assert body["checks"]["redis"]["status"] == "ok"
    assert "postgresql://" not in response.text


async def test_ready_says_503_naming_redis_while_it_is_down_and_recovers(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        settings = make_settings(test_env, redis_url=redis.url)
        async with AsyncTestClient(create_app(settings)) as client:
            assert (await client.get("/health/ready")).status_code == 200
            redis.stop()
            started = time.monotonic()
            response = await client.get("/health/ready")
            elapsed = time.monotonic() - started
            assert response.status_code == 503
            assert response.json()["failed"] == ["redis"]
            assert response.json()["checks"]["redis"]["status"] == "fail"
            assert elapsed < 2.0
            redis.start()
            deadline = time.monotonic() + 10
            while (response := await client.get("/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, response.text
            assert response.json()["checks"]["redis"]["status"] == "ok"
    finally:
        redis.stop()


def test_ready_on_the_real_server(api_server_url: str) -> None:
    response = httpx.get(f"{api_server_url}/health/ready", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
