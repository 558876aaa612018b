"""The module `xenios-ai worker` hands to Dramatiq (``python -m dramatiq xenios_ai.worker``): logging, the
broker and its middleware (log context, message metrics, the runtime, job log lines for the dashboard),
the job kinds (`xenios_ai.kinds`) and their actors.

Each worker process (``--processes N``) imports it once; its `WorkerRuntime` then starts the process's
event loop, services and background duties at worker boot (see `jobs.runtime`).
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import Retries

from xenios_ai.hub import hub_offline
from xenios_ai.jobs.actors import declare_actors
from xenios_ai.jobs.broker import make_broker
from xenios_ai.jobs.middleware import LogContext
from xenios_ai.jobs.runtime import WorkerRuntime
from xenios_ai.log import setup_logging
from xenios_ai.observability.joblog import JobLogCapture
from xenios_ai.observability.worker import WorkerMetrics
from xenios_ai.settings_load import load_settings

hub_offline()  # nothing in a worker may wait on the Hugging Face hub

settings = load_settings()
setup_logging(settings, component="worker")
broker = make_broker(
    settings,
    [LogContext(), WorkerMetrics(), Retries(max_retries=0), WorkerRuntime(settings), JobLogCapture(settings)],
)
dramatiq.set_broker(broker)

from xenios_ai import kinds  # noqa: E402 - after HF_HUB_OFFLINE: registers every job kind

declare_actors()  # the actors of every registered kind, on this broker

__all__ = ["broker", "kinds"]
