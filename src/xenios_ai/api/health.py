"""Health routes (no auth): liveness, readiness (PostgreSQL and Redis, each timed; the queues live workers
serve, as capabilities) and version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
from litestar import Controller, Response, get

from xenios_ai.api.deps import Services, ServicesDep
from xenios_ai.jobs.queues import QUEUES, alive_workers
from xenios_ai.jobs.registry import KINDS
from xenios_ai.version import VERSION


class Health(msgspec.Struct):
    status: Literal["ok"]
    version: str


class Check(msgspec.Struct, omit_defaults=True):
    status: Literal["ok", "fail"]
    latency_ms: float
    error: str | None = None


class Capability(msgspec.Struct):
    status: Literal["ok", "unavailable"]
    """ok: at least one live worker serves the queue (a worker whose engine cannot load refuses to start,
    e.g. layout extraction without its models), so jobs of these kinds run."""
    workers: int
    kinds: list[str]


class Readiness(msgspec.Struct):
    status: Literal["ok", "fail"]
    """The API's own dependencies (PostgreSQL, Redis); capabilities do not change it: a submit is accepted
    and waits for a worker."""
    checks: dict[str, Check]
    failed: list[str]
    capabilities: dict[str, Capability] = msgspec.field(default_factory=dict)
    """Per queue (default, extraction, transcription, llm): whether a live worker serves it."""


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
    capabilities = await _capabilities(services) if rd.status == "ok" else {}
    return Readiness("fail" if failed else "ok", checks, failed, capabilities)


async def _capabilities(services: Services) -> dict[str, Capability]:
    settings = services.settings
    try:
        workers = await asyncio.wait_for(
            alive_workers(
                services.redis, settings.redis_namespace, max_age=3 * settings.worker_heartbeat_seconds
            ),
            settings.ready_timeout_seconds,
        )
    except Exception:  # Redis answered the ping; a failed read leaves the section out
        return {}
    kinds: dict[str, list[str]] = {}
    for kind in KINDS.values():
        kinds.setdefault(kind.queue, []).append(kind.name)
    capabilities: dict[str, Capability] = {}
    for queue in QUEUES:
        serving = sum(queue in worker.queues for worker in workers)
        capabilities[queue] = Capability(
            "ok" if serving else "unavailable", serving, sorted(kinds.get(queue, []))
        )
    return capabilities


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/", summary="Service version and liveness")
    async def health(self) -> Health:
        return Health("ok", VERSION)

    @get("/live", summary="Liveness: the process answers")
    async def live(self) -> Health:
        return Health("ok", VERSION)

    @get(
        "/ready",
        summary="Readiness: PostgreSQL and Redis answer; capabilities: queues with a live worker",
        responses=None,
    )
    async def ready(self, services: ServicesDep) -> Response[Readiness]:
        result = await readiness(services)
        return Response(result, status_code=200 if result.status == "ok" else 503)
