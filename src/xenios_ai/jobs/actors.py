"""One thin actor per registered job kind, on its kind's queue; the runner does the bookkeeping.

`declare_actors` (called by the worker entry point, `xenios_ai.worker`, after `xenios_ai.kinds` has
registered the kinds) makes a Dramatiq actor ``job_<kind>`` for every kind with a handler, plus the
webhook actor. A handler is ``async def`` (runs on the worker's event loop: I/O, the LLM router) or
``def`` (runs on the actor's thread: blocking engines, reporting progress with ``ctx.progress_sync``).

Retry policy as data: actors never retry through Dramatiq (``max_retries=0``). The runner applies the
kind's `RetryPolicy` and keeps the row in step; a webhook's next delivery attempt is scheduled in its job's
row (``webhook_due_at``, WEBHOOK_MAX_ATTEMPTS in all) and queued by the sweep, so it survives a worker or
Redis restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

import dramatiq

from xenios_ai.jobs.models import JobKind
from xenios_ai.jobs.registry import registered
from xenios_ai.jobs.runner import Handler, execute
from xenios_ai.jobs.runtime import WorkerRuntime
from xenios_ai.jobs.service import WEBHOOK_ACTOR

H = TypeVar("H", bound=Handler)


def job_actor(kind: JobKind) -> Callable[[H], H]:
    """Register ``handler`` as the handler of ``kind``: a Dramatiq actor named ``job_<kind>`` on its queue."""

    def register(handler: H) -> H:
        def run(job_id: str) -> None:
            execute(kind, handler, job_id)

        run.__name__ = run.__qualname__ = kind.actor_name
        dramatiq.actor(actor_name=kind.actor_name, queue_name=kind.queue, max_retries=0)(run)
        return handler

    return register


def deliver_webhook(job_id: str) -> None:
    runtime = WorkerRuntime.current()
    services = runtime.services
    runtime.call(services.jobs.deliver_webhook(services.webhooks, UUID(job_id)))


def declare_actors() -> None:
    """Declare the actors of every registered kind and the webhook's on the current broker (once)."""
    for kind in registered():
        if kind.handler is not None:
            job_actor(kind)(kind.handler)
    dramatiq.actor(actor_name=WEBHOOK_ACTOR, queue_name="default", max_retries=0)(deliver_webhook)
