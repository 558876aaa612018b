"""The operator's view of and actions on jobs, across every owner (the /ops dashboard; never the public API).

Retry is a new attempt of the same job (not a new job): the row goes from failed or cancelled back to
queued with a fresh attempt budget (``max_attempts`` = attempts so far + the kind's), its message is sent,
and it runs like any other queued job. The caller that submitted it keeps following the same id (its
status, events and webhook fire again); the error of the previous attempt stays until the next outcome,
and the job's log shows the operator's action between the attempts. Its start time is the new run's
(an automatic retry keeps the first start: its backoff is part of the job's time; a manual one is not).
"""

from __future__ import annotations

import uuid
from uuid import UUID

from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.db.pool import Pool
from xenios_ai.errors import Conflict, NotFound
from xenios_ai.jobs import events, store, store_ops
from xenios_ai.jobs.events import StateChanged
from xenios_ai.jobs.models import Job
from xenios_ai.jobs.registry import kind_named
from xenios_ai.jobs.service import JobService
from xenios_ai.jobs.store_ops import JobFilter, failed_jobs, recent_jobs, status_counts

__all__ = ["JobFilter", "cancel", "failed_jobs", "get_job", "recent_jobs", "retry", "status_counts"]


async def get_job(db: Pool, job_id: UUID) -> Job:
    job = await store.get(db, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found", code="job_not_found")
    return job


async def retry(jobs: JobService, job_id: UUID) -> Job:
    """failed | cancelled -> queued, with a fresh attempt budget, and its message sent (see the module)."""
    job = await get_job(jobs.db, job_id)
    kind = kind_named(job.kind)
    message_id = str(uuid.uuid4())
    retried = await store_ops.requeue_for_retry(jobs.db, job_id, kind.retry.max_attempts, message_id)
    if retried is None:
        raise Conflict(f"only failed or cancelled jobs can be retried; this one is {job.status}")
    try:
        await jobs.enqueuer.send(kind.queue, kind.actor_name, (str(job_id),), message_id=message_id)
        await events.publish(jobs.redis, jobs.settings.redis_namespace, job_id, StateChanged("queued"))
    except (RedisError, OSError) as exc:  # the sweep sends it once Redis answers
        logger.warning("retried job {} not sent now ({}); the sweep will send it", job_id, type(exc).__name__)
        await store.set_message(jobs.db, job_id, None)
    return retried


async def cancel(jobs: JobService, job_id: UUID) -> Job:
    """Cancel for its owner: queued ends now, running stops at its next checkpoint (JobService.cancel)."""
    job = await get_job(jobs.db, job_id)
    return await jobs.cancel(job_id, job.owner)
