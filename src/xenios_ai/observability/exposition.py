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

import glob
import os
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from loguru import logger
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from xenios_ai.keys import key_matches as keys_match
from xenios_ai.log import setup_logging
from xenios_ai.observability import metrics
from xenios_ai.observability.multiprocess import group_dir
from xenios_ai.settings import Settings
from xenios_ai.settings_load import load_settings

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
"""The gauges `jobs.gauges.SystemState` computes when /metrics is scraped."""

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
    return keys_match(given, keys)


# -- the workers' metrics server (a Dramatiq fork process) ---------------------------------------------


def serve_worker_metrics() -> int:
    """Serve this worker command's processes' metrics on WORKER_METRICS_PORT (run by Dramatiq as a fork
    process: `xenios-ai worker --metrics-port` passes ``--fork-function``)."""
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
