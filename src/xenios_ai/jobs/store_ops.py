"""The jobs SQL of the operator dashboard and the metrics scrape (the rest is in `jobs.store`): recent and
failed jobs, counts by kind and state, the oldest due job per queue, and the operator's retry."""

# ruff: noqa: S608 - the only interpolated SQL is the store's constant column list and fixed clauses
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from xenios_ai.db.pool import Pool
from xenios_ai.jobs.models import Job
from xenios_ai.jobs.store import COLUMNS, to_job


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
            f"SELECT {COLUMNS} FROM ai_backend.jobs {clauses} ORDER BY created_at DESC, id DESC LIMIT %s",
            params,
        )
        return [to_job(row) for row in await cur.fetchall()]


async def failed_jobs(db: Pool, *, limit: int = 20) -> list[Job]:
    """The latest failures (by when they failed)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""SELECT {COLUMNS} FROM ai_backend.jobs WHERE status = 'failed' AND finished_at IS NOT NULL
                ORDER BY finished_at DESC LIMIT %s""",
            (limit,),
        )
        return [to_job(row) for row in await cur.fetchall()]


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


async def requeue_for_retry(db: Pool, job_id: UUID, extra_attempts: int, message_id: str) -> Job | None:
    """An operator's retry: failed | cancelled -> queued with ``extra_attempts`` more attempts and a fresh
    run (see `jobs.ops.retry`); None when the job is in another state."""
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs
                SET status = 'queued', max_attempts = attempts + %s, cancel_requested_at = NULL,
                    started_at = NULL, finished_at = NULL, result = NULL, progress = 0, progress_message = NULL,
                    run_after = NULL, worker_id = NULL, heartbeat_at = NULL,
                    message_id = %s, enqueued_at = now()
                WHERE id = %s AND status IN ('failed', 'cancelled')
                RETURNING {COLUMNS}""",
            (extra_attempts, message_id, job_id),
        )
        row = await cur.fetchone()
    return to_job(row) if row is not None else None


async def counts_by_kind_queue_status(db: Pool) -> dict[tuple[str, str, str], int]:
    """{(kind, queue, status): jobs} over every job kept (the ``xenios_jobs`` gauge)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, queue, status, count(*) AS n FROM ai_backend.jobs GROUP BY kind, queue, status"
        )
        return {
            (str(r["kind"]), str(r["queue"]), str(r["status"])): cast(int, r["n"])
            for r in await cur.fetchall()
        }


async def oldest_due_ages(db: Pool) -> dict[str, float]:
    """{queue: seconds} the oldest due, unclaimed job has waited (``xenios_jobs_oldest_queued_seconds``)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """SELECT queue, extract(epoch FROM now() - min(coalesce(enqueued_at, created_at)))::float8
                      AS age
               FROM ai_backend.jobs
               WHERE status = 'queued' AND (run_after IS NULL OR run_after <= now()) GROUP BY queue"""
        )
        return {str(r["queue"]): cast(float, r["age"]) for r in await cur.fetchall()}
