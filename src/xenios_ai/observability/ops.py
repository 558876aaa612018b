"""The operator's view of and actions on jobs, across every owner (the /ops dashboard; never the public API).

Retry is a new attempt of the same job (not a new job): the row goes from failed or cancelled back to
queued with a fresh attempt budget (``max_attempts`` = attempts so far + the kind's), its message is sent,
and it runs like any other queued job. The caller that submitted it keeps following the same id (its
status, events and webhook fire again); the error of the previous attempt stays until the next outcome,
and the job's log shows the operator's action between the attempts. Its start time is the new run's
(an automatic retry keeps the first start: its backoff is part of the job's time; a manual one is not).
"""

# ruff: noqa: S608 - the only interpolated SQL is the store's constant column list and fixed clauses
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.db.pool import Pool
from xenios_ai.errors import Conflict, NotFound
from xenios_ai.jobs import events, store
from xenios_ai.jobs.events import StateChanged
from xenios_ai.jobs.models import Job
from xenios_ai.jobs.registry import kind_named
from xenios_ai.jobs.service import JobService

_COLUMNS = store._COLUMNS


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    kind: str | None = None
    queue: str | None = None


async def recent_jobs(db: Pool, where: JobFilter | None = None, *, limit: int = 50) -> list[Job]:
    """The newest jobs of every owner, optionally of one status, kind or queue."""
    clauses, params = _where(where or JobFilter())
    params.append(limit)
    async with db.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM ai_backend.jobs {clauses} ORDER BY created_at DESC, id DESC LIMIT %s",
            params,
        )
        return [store.to_job(row) for row in await cur.fetchall()]


async def failed_jobs(db: Pool, *, limit: int = 20) -> list[Job]:
    """The latest failures (by when they failed)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""SELECT {_COLUMNS} FROM ai_backend.jobs WHERE status = 'failed' AND finished_at IS NOT NULL
                ORDER BY finished_at DESC LIMIT %s""",
            (limit,),
        )
        return [store.to_job(row) for row in await cur.fetchall()]


async def status_counts(db: Pool) -> dict[str, dict[str, int]]:
    """{kind: {status: jobs}} over every job kept."""
    async with db.connection() as conn:
        cur = await conn.execute("SELECT kind, status, count(*) AS n FROM ai_backend.jobs GROUP BY 1, 2")
        counts: dict[str, dict[str, int]] = {}
        for row in await cur.fetchall():
            counts.setdefault(str(row["kind"]), {})[str(row["status"])] = cast(int, row["n"])
    return counts


def _where(where: JobFilter) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for column in ("status", "kind", "queue"):
        value = getattr(where, column)
        if value:
            clauses.append(f"{column} = %s")
            params.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


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
    async with jobs.db.connection() as conn:
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs
                SET status = 'queued', max_attempts = attempts + %s, cancel_requested_at = NULL,
                    started_at = NULL, finished_at = NULL, result = NULL, progress = 0, progress_message = NULL,
                    run_after = NULL, worker_id = NULL, heartbeat_at = NULL,
                    message_id = %s, enqueued_at = now()
                WHERE id = %s AND status IN ('failed', 'cancelled')
                RETURNING {_COLUMNS}""",
            (kind.retry.max_attempts, message_id, job_id),
        )
        row = await cur.fetchone()
    if row is None:
        raise Conflict(f"only failed or cancelled jobs can be retried; this one is {job.status}")
    retried = store.to_job(row)
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
