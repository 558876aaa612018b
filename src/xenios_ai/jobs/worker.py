"""The module `xenios-ai worker` hands to Dramatiq: logging, the broker and its middleware (log context,
message metrics, the runtime, job log lines for the dashboard), the actors.

Each worker process (``--processes N``) imports it once; its `WorkerRuntime` then starts the process's
event loop, services and background duties at worker boot (see `jobs.runtime`).
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.middleware import Retries

from xenios_ai.jobs.broker import make_broker
from xenios_ai.jobs.middleware import LogContext
from xenios_ai.jobs.runtime import WorkerRuntime
from xenios_ai.log import setup_logging
from xenios_ai.observability.joblog import JobLogCapture
from xenios_ai.observability.worker import WorkerMetrics
from xenios_ai.settings import load_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in a worker may wait on the Hugging Face hub

settings = load_settings()
setup_logging(settings, component="worker")
broker = make_broker(
    settings,
    [LogContext(), WorkerMetrics(), Retries(max_retries=0), WorkerRuntime(settings), JobLogCapture(settings)],
)
dramatiq.set_broker(broker)

from xenios_ai.jobs import actors  # noqa: E402, F401 - declares the actors on this broker
