"""Health routes (no auth): liveness, readiness (PostgreSQL and Redis, each timed) and version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
from litestar import Controller, Response, get

from xenios_ai.api.deps import Services, ServicesDep
from xenios_ai.version import VERSION


class Health(msgspec.Struct):
    status: Literal["ok"]
    version: str


class Check(msgspec.Struct, omit_defaults=True):
    status: Literal["ok", "fail"]
    latency_ms: float
    error: str | None = None


class Readiness(msgspec.Struct):
    status: Literal["ok", "fail"]
    checks: dict[str, Check]
    failed: list[str]


async def _timed(probe: Callable[[], Awaitable[object]], timeout: float) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), timeout)
    except TimeoutError:
        return Check("fail", round((time.perf_counter() - started) * 1000, 2), f"no answer in {timeout}s")
    except Exception as exc:  # any failure of the dependency is a failed check, never a 500
        return Check("fail", round((time.perf_counter() - started) * 1000, 2), type(exc).__name__)
    return Check("ok", round((time.perf_counter() - started) * 1000, 2))


async def readiness(services: Services) -> Readiness:
    timeout = services.settings.ready_timeout_seconds

    async def postgres() -> None:
        async with services.db.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")

    async def redis() -> None:
        await services.redis.ping()

    pg, rd = await asyncio.gather(_timed(postgres, timeout), _timed(redis, timeout))
    checks = {"postgres": pg, "redis": rd}
    failed = [name for name, check in checks.items() if check.status == "fail"]
    return Readiness("fail" if failed else "ok", checks, failed)


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/", summary="Service version and liveness")
    async def health(self) -> Health:
        return Health("ok", VERSION)

    @get("/live", summary="Liveness: the process answers")
    async def live(self) -> Health:
        return Health("ok", VERSION)

    @get("/ready", summary="Readiness: PostgreSQL and Redis answer", responses=None)
    async def ready(self, services: ServicesDep) -> Response[Readiness]:
        result = await readiness(services)
        return Response(result, status_code=200 if result.status == "ok" else 503)
