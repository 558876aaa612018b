"""Dramatiq middleware counting messages: what ``dramatiq.middleware.prometheus`` records, made to fit.

Dramatiq's own middleware writes to a fixed directory, measures in milliseconds and always opens port
9191 in a fork process (two worker commands on one host collide). This one records the same things
(messages by actor and queue and outcome, durations, retries, dead letters, in progress) under the
service's names and units, into the command's multi-process group (see `multiprocess`): the API's
/metrics shows them when on the same host, ``xenios-ai worker --metrics-port`` otherwise.
Job outcomes (succeeded, failed, retried, ...) are counted by the runner (``xenios_job_attempts_total``).
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq

from xenios_ai.observability import metrics
from xenios_ai.observability.multiprocess import mark_process_dead


class WorkerMetrics(dramatiq.Middleware):
    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._in_progress = metrics.Children(metrics.WORKER_MESSAGES_IN_PROGRESS)
        self._messages = metrics.Children(metrics.WORKER_MESSAGES)
        self._durations = metrics.Children(metrics.WORKER_MESSAGE_DURATION)

    def before_process_message(self, broker: Any, message: Any) -> None:
        self._in_progress(message.queue_name, message.actor_name).inc()
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._finish(message, "ok" if exception is None else "error")

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self._finish(message, "skipped")

    def _finish(self, message: Any, outcome: str) -> None:
        queue, actor = message.queue_name, message.actor_name
        started = self._started.pop(message.message_id, None)
        if started is not None:
            self._in_progress(queue, actor).dec()
            self._durations(queue, actor).observe(time.perf_counter() - started)
        self._messages(queue, actor, outcome).inc()

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if "retries" in message.options:
            metrics.WORKER_MESSAGE_RETRIES.labels(message.queue_name, message.actor_name).inc()

    def after_nack(self, broker: Any, message: Any) -> None:
        metrics.WORKER_MESSAGES_DEAD.labels(message.queue_name, message.actor_name).inc()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        mark_process_dead()
