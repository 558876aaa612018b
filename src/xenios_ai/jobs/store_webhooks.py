"""SQL of the webhook outbox on ``ai_backend.jobs``: the terminal write marks a job's webhook due
(`jobs.store.finish`); these record deliveries, lease due ones to a sender and schedule retries.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast
from uuid import UUID

from xenios_ai.db.pool import Pool


async def record_webhook(db: Pool, job_id: UUID, *, delivered: bool, error: str | None) -> None:
    """One delivery attempt of the job's webhook; a delivered one is no longer due."""
    async with db.connection() as conn:
        await conn.execute(
            """UPDATE ai_backend.jobs
               SET webhook_attempts = webhook_attempts + 1, webhook_error = %s,
                   webhook_delivered_at = CASE WHEN %s THEN now() ELSE webhook_delivered_at END,
                   webhook_due_at = CASE WHEN %s THEN NULL ELSE webhook_due_at END
               WHERE id = %s""",
            (error, delivered, delivered, job_id),
        )


async def webhooks_due(db: Pool, lease_seconds: float, limit: int = 500) -> list[UUID]:
    """Finished jobs whose webhook is due: each becomes due again ``lease_seconds`` from now (should the
    delivery handed to the queue now be lost too) and is returned for the caller to hand to the queue."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """WITH due AS (
                   SELECT id FROM ai_backend.jobs
                   WHERE webhook_due_at <= now() AND status IN ('succeeded', 'failed', 'cancelled')
                   ORDER BY webhook_due_at LIMIT %s FOR UPDATE SKIP LOCKED)
               UPDATE ai_backend.jobs AS j SET webhook_due_at = now() + make_interval(secs => %s)
               FROM due WHERE j.id = due.id
               RETURNING j.id""",
            (limit, lease_seconds),
        )
        rows = await cur.fetchall()
    return [cast(UUID, row["id"]) for row in rows]


async def webhook_settled(db: Pool, job_id: UUID) -> None:
    """Nothing more to deliver for the job (delivered, refused by the receiver, or not deliverable)."""
    async with db.connection() as conn:
        await conn.execute("UPDATE ai_backend.jobs SET webhook_due_at = NULL WHERE id = %s", (job_id,))


async def webhook_retry_later(
    db: Pool, job_id: UUID, *, max_attempts: int, backoff_seconds: float, max_backoff_seconds: float
) -> datetime | None:
    """After a failed delivery attempt: when the next one is due (jittered exponential backoff over the
    attempts so far), or None when ``max_attempts`` were made (given up: no longer due)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """UPDATE ai_backend.jobs
               SET webhook_due_at = CASE WHEN webhook_attempts < %s THEN now() + make_interval(secs =>
                       least(%s, %s * 2 ^ greatest(0, webhook_attempts - 1)) * (0.5 + random() / 2)) END
               WHERE id = %s
               RETURNING webhook_due_at""",
            (max_attempts, max_backoff_seconds, backoff_seconds, job_id),
        )
        row = await cur.fetchone()
    return cast(datetime | None, row["webhook_due_at"]) if row else None
