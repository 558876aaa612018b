"""The async services of a worker process (pool, Redis, storage, job service, webhook session, the LLM
router built on first use), one set per process, living on the runtime's loop (`jobs.runtime`).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import aiohttp

from xenios_ai.db.pool import Pool, open_pool
from xenios_ai.db.redis import Redis, open_redis
from xenios_ai.jobs.service import JobService
from xenios_ai.jobs.webhooks import webhook_session
from xenios_ai.llm.router import LLMRouter
from xenios_ai.llm.usage import UsageWriter, spent_by_task
from xenios_ai.observability.metrics import LLM_METRICS
from xenios_ai.settings import Settings
from xenios_ai.storage import BlobStorage, open_storage

__all__ = ["WorkerServices"]


@dataclass
class WorkerServices:
    """What job handlers may use; one set per worker process, living on the runtime's loop."""

    settings: Settings
    db: Pool
    redis: Redis
    storage: BlobStorage
    jobs: JobService
    webhooks: aiohttp.ClientSession
    _llm: LLMRouter | None = None
    _usage: UsageWriter | None = None

    @classmethod
    async def open(cls, settings: Settings) -> WorkerServices:
        db = await open_pool(settings)
        redis = open_redis(settings, max_connections=32)
        storage = open_storage(settings)
        jobs = JobService(settings, db, redis, storage)
        session = webhook_session(
            allow_private=settings.webhook_allow_private, timeout=settings.webhook_timeout_seconds
        )
        return cls(settings, db, redis, storage, jobs, session)

    def llm(self) -> LLMRouter:
        """The LLM router, built on first use (call on the runtime's loop)."""
        if self._llm is None:
            self._usage = UsageWriter(self.db, self.settings)
            self._usage.start()
            self._llm = LLMRouter(
                self.settings,
                self._usage,
                metrics=LLM_METRICS,
                budget_history=functools.partial(spent_by_task, self.db),
            )
        return self._llm

    async def flush_usage(self) -> None:
        """Write the LLM usage rows waiting in this process now (raises on database errors; they stay)."""
        if self._usage is not None:
            await self._usage.flush()

    async def aclose(self) -> None:
        if self._llm is not None:
            with contextlib.suppress(Exception):
                await self._llm.aclose()
        if self._usage is not None:
            await self._usage.aclose()
        await self.webhooks.close()
        await self.redis.aclose()
        await self.db.close()
