"""The gauges of the whole system, computed when /metrics is scraped: jobs by kind and state and the
oldest due job (PostgreSQL), queue depths and workers alive (Redis). Their names are
`observability.exposition.SYSTEM_GAUGES`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
from loguru import logger
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from xenios_ai.db.pool import Pool
from xenios_ai.db.redis import Redis
from xenios_ai.jobs import store_ops
from xenios_ai.jobs.models import JOB_STATUSES
from xenios_ai.jobs.queues import QUEUES, WorkerInfo, queue_depths, workers_key
from xenios_ai.jobs.registry import KINDS
from xenios_ai.settings import Settings
from xenios_ai.version import VERSION


class SystemState:
    """Jobs by kind and state (PostgreSQL), queue depths and workers (Redis), as gauge families; read at
    most every METRICS_CACHE_SECONDS, each source within a time limit, a failed source reported by
    ``xenios_metrics_source_up`` instead of failing the scrape. ``clock`` (monotonic) ages the cache;
    tests move it."""

    def __init__(
        self, settings: Settings, db: Pool, redis: Redis, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._settings = settings
        self._db = db
        self._redis = redis
        self._families: list[Metric] = []
        self._read_at = -1e18
        self._lock = asyncio.Lock()

    async def families(self) -> list[Metric]:
        ttl = self._settings.metrics_cache_seconds
        if self._clock() - self._read_at < ttl:
            return self._families
        async with self._lock:
            if self._clock() - self._read_at >= ttl:
                self._families = await self._read()
                self._read_at = self._clock()
        return self._families

    async def _read(self) -> list[Metric]:
        timeout = max(1.0, self._settings.ready_timeout_seconds)
        pg, rd = await asyncio.gather(
            asyncio.wait_for(self._from_postgres(), timeout),
            asyncio.wait_for(self._from_redis(), timeout),
            return_exceptions=True,
        )
        up = GaugeMetricFamily(
            "xenios_metrics_source_up", "Whether /metrics could read the source just now.", labels=["source"]
        )
        families: list[Metric] = []
        for source, result in (("postgres", pg), ("redis", rd)):
            if isinstance(result, BaseException):
                logger.warning("metrics: reading {} failed: {}", source, type(result).__name__)
                up.add_metric([source], 0)
            else:
                up.add_metric([source], 1)
                families.extend(result)
        info = GaugeMetricFamily(
            "xenios_build_info", "The running version (value 1).", labels=["version", "environment"]
        )
        info.add_metric([VERSION, self._settings.environment], 1)
        return [*families, up, info]

    async def _from_postgres(self) -> list[Metric]:
        counts = await store_ops.counts_by_kind_queue_status(self._db)
        oldest = await store_ops.oldest_due_ages(self._db)
        for kind in KINDS.values():
            for state in JOB_STATUSES:
                counts.setdefault((kind.name, kind.queue, state), 0)
        jobs = GaugeMetricFamily(
            "xenios_jobs",
            "Jobs in the database by kind, queue and state.",
            labels=["kind", "queue", "status"],
        )
        for (kind_name, queue, status), n in sorted(counts.items()):
            jobs.add_metric([kind_name, queue, status], n)
        age = GaugeMetricFamily(
            "xenios_jobs_oldest_queued_seconds",
            "Age of the oldest job waiting to run (due, not yet claimed), by queue.",
            labels=["queue"],
        )
        for queue in sorted({*QUEUES, *oldest}):
            age.add_metric([queue], max(0.0, oldest.get(queue, 0.0)))
        return [jobs, age]

    async def _from_redis(self) -> list[Metric]:
        prefix = self._settings.redis_namespace
        depths = await queue_depths(self._redis, prefix)
        raw = await self._redis.hgetall(workers_key(prefix))
        messages = GaugeMetricFamily(
            "xenios_queue_messages",
            "Messages in the broker by queue and state (waiting, in_progress, delayed).",
            labels=["queue", "state"],
        )
        for depth in depths:
            messages.add_metric([depth.name, "waiting"], depth.waiting)
            messages.add_metric([depth.name, "in_progress"], depth.in_progress)
            messages.add_metric([depth.name, "delayed"], depth.delayed)
        now, max_age = time.time(), 3 * self._settings.worker_heartbeat_seconds
        alive: dict[str, int] = dict.fromkeys(QUEUES, 0)
        age = GaugeMetricFamily(
            "xenios_worker_heartbeat_age_seconds",
            "Seconds since each registered worker process's last heartbeat (alive: under 3 heartbeats).",
            labels=["worker"],
        )
        current = GaugeMetricFamily(
            "xenios_worker_current_jobs", "Jobs each worker process is running.", labels=["worker"]
        )
        for value in raw.values():
            try:
                worker = msgspec.json.decode(value, type=WorkerInfo)
            except msgspec.DecodeError:
                continue
            age.add_metric([worker.worker_id], max(0.0, now - worker.seen_at))
            current.add_metric([worker.worker_id], len(worker.current_jobs))
            if now - worker.seen_at <= max_age:
                for queue in worker.queues:
                    alive[queue] = alive.get(queue, 0) + 1
        workers = GaugeMetricFamily(
            "xenios_workers_alive", "Worker processes alive, by queue they consume.", labels=["queue"]
        )
        for queue, n in sorted(alive.items()):
            workers.add_metric([queue], n)
        return [messages, workers, age, current]
