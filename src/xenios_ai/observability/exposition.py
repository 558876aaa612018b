"""What a scrape returns: the processes' metrics (merged across processes), derived series, and gauges of
the whole system read from PostgreSQL and Redis; plus the workers' own metrics server.

Operators scrape:

- the API's ``GET /metrics`` (X-API-Key or ``Authorization: Bearer`` with METRICS_API_KEY or a service
  key): HTTP, LLM, and the system gauges (jobs by kind and state, queue depths, workers alive and their
  heartbeat age), plus the metrics of every worker process on the same host (see `multiprocess`);
- each worker container's ``--metrics-port`` (WORKER_METRICS_PORT, same keys), when workers run on other
  hosts or in their own containers: message, job and LLM metrics of that worker's processes.
"""

from __future__ import annotations

import asyncio
import glob
import hmac
import os
import time
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal, cast

from loguru import logger
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from xenios_ai.observability import metrics
from xenios_ai.observability.multiprocess import group_dir
from xenios_ai.settings import Settings, load_settings
from xenios_ai.version import VERSION

if TYPE_CHECKING:
    from xenios_ai.db.pool import Pool
    from xenios_ai.db.redis import Redis

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SYSTEM_GAUGES = (
    "xenios_jobs",
    "xenios_jobs_oldest_queued_seconds",
    "xenios_queue_messages",
    "xenios_workers_alive",
    "xenios_worker_heartbeat_age_seconds",
    "xenios_worker_current_jobs",
    "xenios_metrics_source_up",
    "xenios_build_info",
)
"""The gauges `SystemState` computes when /metrics is scraped."""

# -- the processes' own metrics ------------------------------------------------------------------------


def process_metrics(scope: Literal["host", "group"] = "host") -> list[Metric]:
    """This host's processes' metrics (``group``: this command's processes only), merged; in-process
    values without multi-process mode."""
    directory = group_dir()
    if directory is None:
        families = list(REGISTRY.collect())
    else:
        pattern = str(directory.parent / "*" / "*.db") if scope == "host" else str(directory / "*.db")
        for tries in range(3):  # a stale group's files may vanish while being read
            try:
                merged = MultiProcessCollector.merge(glob.glob(pattern), accumulate=True)  # type: ignore[no-untyped-call]
                families = list(merged)
                break
            except FileNotFoundError:
                if tries == 2:
                    raise
    return [*families, *_derived(families)]


def _derived(families: Iterable[Metric]) -> list[Metric]:
    """``xenios_http_requests_total`` from the duration histogram's ``_count`` (identical by construction)."""
    counter = CounterMetricFamily(
        metrics.HTTP_REQUESTS_TOTAL,
        "HTTP requests by method, route template and status.",
        labels=("method", "route", "status"),
    )
    for family in families:
        if family.name == metrics.HTTP_REQUEST_DURATION_NAME:
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    labels = sample.labels
                    counter.add_metric([labels["method"], labels["route"], labels["status"]], sample.value)
    return [counter]


class _Families:
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(families: Sequence[Metric]) -> bytes:
    """The text exposition format of ``families``."""
    return generate_latest(_Families(families))


def key_matches(settings: Settings, x_api_key: str | None, authorization: str | None) -> bool:
    """X-API-Key or a Bearer token equal to METRICS_API_KEY or a service key (constant time)."""
    given = x_api_key
    if not given and authorization:
        scheme, _, token = authorization.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    keys = list(settings.api_keys)
    if settings.metrics_api_key:
        keys.append(settings.metrics_api_key.get())
    if not given or not keys:
        return False
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given.encode(), key.encode())
    return matched


# -- gauges of the whole system, read when scraped -----------------------------------------------------


class SystemState:
    """Jobs by kind and state (PostgreSQL), queue depths and workers (Redis), as gauge families; read at
    most every METRICS_CACHE_SECONDS, each source within a time limit, a failed source reported by
    ``xenios_metrics_source_up`` instead of failing the scrape."""

    def __init__(self, settings: Settings, db: Pool, redis: Redis) -> None:
        self._settings = settings
        self._db = db
        self._redis = redis
        self._families: list[Metric] = []
        self._read_at = -1e18
        self._lock = asyncio.Lock()

    async def families(self) -> list[Metric]:
        ttl = self._settings.metrics_cache_seconds
        if time.monotonic() - self._read_at < ttl:
            return self._families
        async with self._lock:
            if time.monotonic() - self._read_at >= ttl:
                self._families = await self._read()
                self._read_at = time.monotonic()
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
        from xenios_ai.jobs.models import JOB_STATUSES
        from xenios_ai.jobs.queues import QUEUES
        from xenios_ai.jobs.registry import KINDS

        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT kind, queue, status, count(*) AS n FROM ai_backend.jobs GROUP BY kind, queue, status"
            )
            counts = {
                (str(r["kind"]), str(r["queue"]), str(r["status"])): cast(int, r["n"])
                for r in await cur.fetchall()
            }
            cur = await conn.execute(
                """SELECT queue, extract(epoch FROM now() - min(coalesce(enqueued_at, created_at)))::float8
                          AS age
                   FROM ai_backend.jobs
                   WHERE status = 'queued' AND (run_after IS NULL OR run_after <= now()) GROUP BY queue"""
            )
            oldest = {str(r["queue"]): cast(float, r["age"]) for r in await cur.fetchall()}
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
        import msgspec

        from xenios_ai.jobs.queues import QUEUES, WorkerInfo, queue_depths, workers_key

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


# -- the workers' metrics server (a Dramatiq fork process) ---------------------------------------------


def serve_worker_metrics() -> int:
    """Serve this worker command's processes' metrics on WORKER_METRICS_PORT (run by Dramatiq as a fork
    process: `xenios-ai worker --metrics-port` passes ``--fork-function``)."""
    from xenios_ai.log import setup_logging

    settings = load_settings()
    setup_logging(settings, component="worker-metrics")
    assert settings.worker_metrics_port, "WORKER_METRICS_PORT is not set"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, b"not found\n")
            elif not key_matches(settings, self.headers.get("x-api-key"), self.headers.get("authorization")):
                self._answer(401, b"a metrics key is required (X-API-Key or Bearer)\n")
            else:
                self._answer(200, render(process_metrics("group")), CONTENT_TYPE)

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer((settings.worker_metrics_host, settings.worker_metrics_port), Handler)
    logger.info(
        "worker metrics on http://{}:{}/metrics (pid {})",
        settings.worker_metrics_host, settings.worker_metrics_port, os.getpid(),
    )  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def sample_names() -> set[str]:
    """Every sample name these metrics (and the derived and scrape-time ones) can export."""
    names = {metrics.HTTP_REQUESTS_TOTAL, *SYSTEM_GAUGES}
    for metric in (
        metrics.HTTP_REQUEST_DURATION, metrics.LLM_REQUESTS, metrics.LLM_TOKENS, metrics.LLM_COST,
        metrics.LLM_DURATION, metrics.LLM_TTFT, metrics.LLM_FALLBACKS, metrics.LLM_ATTEMPT_FAILURES,
        metrics.JOB_ATTEMPTS, metrics.JOB_ATTEMPT_DURATION, metrics.JOB_QUEUE_WAIT, metrics.WORKER_MESSAGES,
        metrics.WORKER_MESSAGE_RETRIES, metrics.WORKER_MESSAGES_DEAD, metrics.WORKER_MESSAGE_DURATION,
        metrics.WORKER_MESSAGES_IN_PROGRESS,
    ):  # fmt: skip
        for family in metric.describe():
            if family.type == "histogram":
                names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            elif family.type == "counter":
                names.add(f"{family.name}_total")
            else:
                names.add(family.name)
    return names
