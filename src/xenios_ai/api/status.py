"""GET /api/v1/status: what an operator wants at a glance."""

from __future__ import annotations

import time

import msgspec
from litestar import Controller, get

from xenios_ai.api.auth import Principal, require_user
from xenios_ai.api.deps import PrincipalDep, ServicesDep
from xenios_ai.jobs.queues import QueueDepth, WorkerInfo, alive_workers, queue_depths
from xenios_ai.version import VERSION


class Status(msgspec.Struct):
    version: str
    environment: str
    uptime_seconds: float
    queues: list[QueueDepth]
    workers: list[WorkerInfo]
    workers_alive: int
    llm_configured: bool


class StatusController(Controller):
    path = "/status"
    tags = ["status"]
    security = [{"apiKey": []}]

    @get("/", summary="Version, uptime, queue depths, workers alive")
    async def status(self, services: ServicesDep) -> Status:
        settings = services.settings
        prefix = settings.redis_namespace
        queues = await queue_depths(services.redis, prefix)
        workers = await alive_workers(services.redis, prefix, max_age=3 * settings.worker_heartbeat_seconds)
        return Status(
            version=VERSION,
            environment=settings.environment,
            uptime_seconds=round(time.time() - services.started_at, 3),
            queues=queues,
            workers=workers,
            workers_alive=len(workers),
            llm_configured=settings.openrouter_api_key is not None,
        )


@get(
    "/me",
    guards=[require_user],
    security=[{"apiKey": [], "supabaseJWT": []}],
    tags=["status"],
    summary="The caller as the service sees it (auth check)",
)
async def whoami(principal: PrincipalDep) -> Principal:
    return principal
