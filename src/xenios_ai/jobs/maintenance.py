"""The periodic sweep and the retention cleanup, run by one worker at a time (a Redis lock decides).

The sweep is the second net under Dramatiq's own redelivery:

1. ``running`` jobs whose heartbeat is older than STALE_JOB_SECONDS (their worker died) go back to the
   queue, or end ``cancelled`` (a cancel was asked) or ``failed``/``worker_lost`` (no attempts left).
   Jobs a live worker lists as its current jobs in the worker registry (Redis) are left alone: their
   database heartbeats failed (a database outage), the worker did not.
2. ``queued`` jobs whose message is no longer in Redis (Redis lost it, or a worker failed before it could
   claim the job) are marked unsent.
3. Unsent jobs (Redis was down at submit, re-queued by 1 or 2, a retry whose backoff is over, follow-ups
   whose worker could not send them) are sent.
4. Webhooks that are due (the enqueue after the job's end was lost, or a failed delivery's backoff is
   over) are queued for delivery.

Retention deletes finished jobs older than JOB_RETENTION_DAYS, their blobs first, and their log lines;
the stored LLM text (LLM_STORE_CONTENT) of usage rows as old goes too. Uploads go earlier, when their
job ends, with DELETE_UPLOADS_ON_FINISH (`JobService.after_terminal`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.jobs import store_maintenance, store_webhooks
from xenios_ai.jobs.models import actor_name
from xenios_ai.jobs.queues import alive_workers, broker_namespace
from xenios_ai.jobs.service import WEBHOOK_ACTOR, JobService
from xenios_ai.jobs.stewardship import delete_blobs
from xenios_ai.observability.joblog import log_key


@dataclass(frozen=True)
class SweepReport:
    ended: int = 0
    requeued: int = 0
    lost_messages: int = 0
    sent: int = 0
    webhooks: int = 0


async def sweep(jobs: JobService) -> SweepReport:
    settings = jobs.settings
    ended, requeued = await store_maintenance.sweep_stale(
        jobs.db,
        settings.stale_job_seconds,
        alive=await running_on_live_workers(jobs),
        webhook_after=settings.webhook_resend_seconds,
    )
    for job in ended:
        logger.warning("job {} ended {} by the sweep ({})", job.id, job.status, job.error)
        await jobs.after_terminal(job)
    if requeued:
        logger.warning(
            "{} running job(s) with no heartbeat for {:g} s and on no live worker's list were put back in "
            "the queue (their worker stopped)", requeued, settings.stale_job_seconds,
        )  # fmt: skip

    lost = 0
    candidates = await store_maintenance.queued_sent_before(jobs.db, settings.stale_job_seconds)
    if candidates:
        namespace = broker_namespace(settings.redis_namespace)
        async with jobs.redis.pipeline(transaction=False) as pipe:
            for _, queue, message_id in candidates:
                pipe.hexists(f"{namespace}:{queue}.msgs", message_id)
            present = await pipe.execute()
        for (job_id, _, message_id), exists in zip(candidates, present, strict=True):
            if not exists:
                lost += 1
                await store_maintenance.mark_unsent(jobs.db, job_id, message_id)
        if lost:
            logger.warning("{} queued job(s) had lost their message; sending them again", lost)

    sent = 0
    for job_id, kind, queue, message_id in await store_maintenance.take_due(jobs.db):
        await jobs.enqueuer.send(queue, actor_name(kind), (str(job_id),), message_id=message_id)
        sent += 1

    webhooks = 0
    for job_id in await store_webhooks.webhooks_due(jobs.db, settings.webhook_resend_seconds):
        await jobs.enqueuer.send("default", WEBHOOK_ACTOR, (str(job_id),))
        webhooks += 1
    return SweepReport(len(ended), requeued, lost, sent, webhooks)


async def running_on_live_workers(jobs: JobService) -> list[UUID]:
    """The jobs that workers seen within STALE_JOB_SECONDS (worker registry) say they are running."""
    settings = jobs.settings
    workers = await alive_workers(jobs.redis, settings.redis_namespace, max_age=settings.stale_job_seconds)
    running = []
    for worker in workers:
        for job_id in worker.current_jobs:
            try:
                running.append(UUID(job_id))
            except ValueError:
                continue
    return running


async def expire(jobs: JobService, *, clock: Callable[[], float] = time.time) -> int:
    """Delete finished jobs past JOB_RETENTION_DAYS at ``clock()`` (epoch seconds; tests move it), their
    files and their log lines; remove the stored LLM text of usage rows as old. Returns how many jobs
    went."""
    settings = jobs.settings
    now = datetime.fromtimestamp(clock(), UTC)
    total = 0
    while True:
        batch = await store_maintenance.expired(jobs.db, settings.job_retention_days, now=now)
        if not batch:
            break
        await delete_blobs(jobs.storage, [key for _, blobs in batch for key in blobs])
        total += await store_maintenance.delete(jobs.db, [job_id for job_id, _ in batch])
        with contextlib.suppress(RedisError, OSError):  # they expire by themselves a day later
            await jobs.redis.delete(*(log_key(settings.redis_namespace, job_id) for job_id, _ in batch))
        logger.info("retention: deleted {} finished job(s) and their files", len(batch))
    texts = await store_maintenance.expire_llm_texts(jobs.db, settings.job_retention_days, now=now)
    if texts:
        logger.info("retention: removed the stored text of {} LLM request(s)", texts)
    return total
