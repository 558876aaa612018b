"""Every dependency provider of the API in one place: the services built at start-up and the caller."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from litestar import Litestar, Request
from litestar.di import NamedDependency

from xenios_ai.api.auth import Principal
from xenios_ai.api.ratelimit import RateLimiter
from xenios_ai.db.pool import Pool, open_pool
from xenios_ai.db.redis import Redis, open_redis
from xenios_ai.gc_tuning import settle
from xenios_ai.jobs.service import JobService
from xenios_ai.llm.reconcile import Reconciler
from xenios_ai.llm.router import LLMRouter
from xenios_ai.llm.usage import UsageWriter, spent_by_task
from xenios_ai.observability.metrics import LLM_METRICS
from xenios_ai.settings import Settings
from xenios_ai.storage import BlobStorage, open_storage


@dataclass
class Services:
    """What a request may use; built once per API process in the lifespan."""

    settings: Settings
    db: Pool
    redis: Redis
    http: httpx.AsyncClient
    started_at: float
    llm: LLMRouter
    """LLM task routing; its usage rows go to the batched writer, flushed at shutdown."""
    storage: BlobStorage
    """Uploads and large results."""
    jobs: JobService
    """Submit, read, cancel and follow jobs; its event hub holds one Redis pub/sub connection."""
    limiter: RateLimiter
    """Per-user rate limits (LLM requests and streams, job submits), counted in Redis."""


ServicesDep = NamedDependency[Services]
PrincipalDep = NamedDependency[Principal]
ReaderDep = NamedDependency[Principal | None]
"""The user a read acts for, or None for a service read (the API key alone: see `auth.allow_service`)."""


@asynccontextmanager
async def services_lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    http = httpx.AsyncClient(timeout=10.0)
    db = await open_pool(settings)
    redis = open_redis(settings)
    usage = UsageWriter(db, settings)
    usage.start()
    llm = LLMRouter(settings, usage, metrics=LLM_METRICS, budget_history=functools.partial(spent_by_task, db))
    reconciler = Reconciler(db, llm, settings.llm_reconcile_seconds)
    reconciler.start()
    storage = open_storage(settings)
    jobs = JobService(settings, db, redis, storage)
    limiter = RateLimiter(settings)
    app.state.services = Services(settings, db, redis, http, time.time(), llm, storage, jobs, limiter)
    app.state.jwt.use_http(http)
    settle(first_only=True)  # tests build many apps in one process
    try:
        yield
    finally:
        await jobs.hub.aclose()
        await limiter.aclose()
        await reconciler.aclose()
        await llm.aclose()
        await usage.aclose()
        await redis.aclose()
        await db.close()
        app.state.jwt.use_http(None)
        await http.aclose()


def provide_services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller, as verified by the ``require_user`` guard."""
    principal: Principal = request.scope["state"]["principal"]
    return principal


def provide_reader(request: Request[Any, Any, Any]) -> Principal | None:
    """The caller of a route guarded by ``allow_service``: the user, or None for the service itself."""
    principal: Principal | None = request.scope["state"].get("principal")
    return principal
