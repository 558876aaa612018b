"""SQL of the maintenance loop over ``ai_backend.jobs``: the stale-job sweep, sends that never reached the
broker, due retries and follow-ups, and retention. The state rules are `jobs.store`'s (conditional UPDATEs on
status and run token); `jobs.maintenance` runs these on its schedule.
"""

# ruff: noqa: S608 - the only interpolated SQL is jobs.store's constant column lists
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from xenios_ai.db.pool import Pool
from xenios_ai.jobs.models import Job
from xenios_ai.jobs.store import CANCELLED_JSON, J_COLUMNS, LOST_JSON, to_job


async def sweep_stale(
    db: Pool,
    stale_seconds: float,
    *,
    alive: Sequence[UUID] = (),
    webhook_after: float,
    limit: int = 500,
) -> tuple[list[Job], int]:
    """Running jobs whose heartbeat stopped: cancelled if that was asked, failed when out of attempts,
    otherwise back to queued (unsent, so the next send pass picks them up). One statement, so a row is
    either ended or re-queued, never re-queued past its cancel or attempt budget. Jobs in ``alive`` (a
    live worker says it runs them: its database heartbeats failed, e.g. during an outage) are left alone.

    Returns the jobs that reached a terminal state here and the number re-queued.
    """
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""WITH stale AS (
                    SELECT id,
                           CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                                WHEN attempts >= max_attempts THEN 'failed'
                                ELSE 'queued' END AS next
                    FROM ai_backend.jobs
                    WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => %s)
                      AND NOT id = ANY(%s::uuid[])
                    LIMIT %s FOR UPDATE SKIP LOCKED)
                UPDATE ai_backend.jobs AS j
                SET status = stale.next,
                    error = CASE stale.next WHEN 'cancelled' THEN %s::jsonb WHEN 'failed' THEN %s::jsonb
                                            ELSE j.error END,
                    finished_at = CASE WHEN stale.next = 'queued' THEN NULL ELSE now() END,
                    enqueued_at = NULL,
                    message_id = CASE WHEN stale.next = 'queued' THEN NULL ELSE j.message_id END,
                    worker_id = CASE WHEN stale.next = 'queued' THEN NULL ELSE j.worker_id END,
                    heartbeat_at = CASE WHEN stale.next = 'queued' THEN NULL ELSE j.heartbeat_at END,
                    webhook_due_at = CASE WHEN stale.next <> 'queued' AND j.webhook_url IS NOT NULL
                                          THEN now() + make_interval(secs => %s) END
                FROM stale WHERE j.id = stale.id
                RETURNING {J_COLUMNS}""",
            (stale_seconds, list(alive), limit, CANCELLED_JSON, LOST_JSON, webhook_after),
        )
        jobs = [to_job(row) for row in await cur.fetchall()]
    ended = [job for job in jobs if job.terminal]
    return ended, len(jobs) - len(ended)


async def queued_sent_before(db: Pool, seconds: float, limit: int = 1000) -> list[tuple[UUID, str, str]]:
    """Queued jobs whose message was sent over ``seconds`` ago: (id, queue, message id)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """SELECT id, queue, message_id FROM ai_backend.jobs
               WHERE status = 'queued' AND enqueued_at < now() - make_interval(secs => %s)
               ORDER BY enqueued_at LIMIT %s""",
            (seconds, limit),
        )
        rows = await cur.fetchall()
    return [(cast(UUID, row["id"]), str(row["queue"]), str(row["message_id"])) for row in rows]


async def mark_unsent(db: Pool, job_id: UUID, message_id: str) -> None:
    """The message sent for a queued job is gone from Redis: send a new one (next send pass)."""
    async with db.connection() as conn:
        await conn.execute(
            """UPDATE ai_backend.jobs SET enqueued_at = NULL, message_id = NULL
               WHERE id = %s AND status = 'queued' AND message_id = %s""",
            (job_id, message_id),
        )


async def take_due(
    db: Pool, limit: int = 500, *, ids: Sequence[UUID] | None = None
) -> list[tuple[UUID, str, str, str]]:
    """Queued jobs with no message (never sent, retry due, re-queued, follow-ups): give each a message id
    and return (id, kind, queue, message id) for the caller to send; with ``ids``, only among those.
    Concurrent callers get disjoint rows."""
    only = "AND id = ANY(%s::uuid[])" if ids is not None else ""
    params: tuple[Any, ...] = (list(ids), limit) if ids is not None else (limit,)
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""WITH due AS (
                   SELECT id FROM ai_backend.jobs
                   WHERE status = 'queued' AND enqueued_at IS NULL
                     AND (run_after IS NULL OR run_after <= now()) {only}
                   ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)
               UPDATE ai_backend.jobs AS j SET enqueued_at = now(), message_id = gen_random_uuid()::text
               FROM due WHERE j.id = due.id
               RETURNING j.id, j.kind, j.queue, j.message_id""",
            params,
        )
        rows = await cur.fetchall()
    return [
        (cast(UUID, row["id"]), str(row["kind"]), str(row["queue"]), str(row["message_id"])) for row in rows
    ]


async def expired(
    db: Pool, retention_days: float, limit: int = 500, *, now: datetime | None = None
) -> list[tuple[UUID, list[str]]]:
    """Finished jobs past retention at ``now`` (default: the database's clock): (id, blob keys)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """SELECT id, blobs FROM ai_backend.jobs
               WHERE finished_at < coalesce(%s, now()) - make_interval(secs => %s)
               ORDER BY finished_at LIMIT %s""",
            (now, retention_days * 86400.0, limit),
        )
        rows = await cur.fetchall()
    return [(cast(UUID, row["id"]), cast(list[str], row["blobs"])) for row in rows]


async def expire_llm_texts(db: Pool, retention_days: float, *, now: datetime | None = None) -> int:
    """Remove the prompt and answer text (LLM_STORE_CONTENT) of usage rows past retention; the numbers
    stay. Returns how many rows held text."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """UPDATE ai_backend.llm_requests SET prompt = NULL, response = NULL
               WHERE created_at < coalesce(%s, now()) - make_interval(secs => %s)
                 AND (prompt IS NOT NULL OR response IS NOT NULL)""",
            (now, retention_days * 86400.0),
        )
        return cur.rowcount


async def delete(db: Pool, job_ids: Sequence[UUID]) -> int:
    async with db.connection() as conn:
        cur = await conn.execute("DELETE FROM ai_backend.jobs WHERE id = ANY(%s)", (list(job_ids),))
        return cur.rowcount
