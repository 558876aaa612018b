"""SQL for ``ai_backend.jobs``: every state change is one conditional UPDATE, so every transition is race-safe.

The run token of an attempt is the ``attempts`` value its claim returned: progress, heartbeat and the
terminal write all require ``status = 'running' AND attempts = <token>``. A worker that lost its job (taken
over after its heartbeat went stale, or cancelled) changes nothing, and a job succeeds exactly once.
"""

# ruff: noqa: S608 - the only interpolated SQL is this module's constant column lists and fixed clauses
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import msgspec

from xenios_ai.db.pool import Pool
from xenios_ai.jobs.models import Job, JobError

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

_COLUMNS = """id, kind, queue, status, owner, input::text AS input, upload::text AS upload, result::text AS result,
    error::text AS error, progress, progress_message, attempts, max_attempts, idempotency_key, request_hash,
    webhook_url, webhook_attempts, webhook_delivered_at, webhook_error, source_job_id, blobs, message_id,
    worker_id, cancel_requested_at, run_after, created_at, enqueued_at, started_at, heartbeat_at,
    finished_at"""


def to_job(row: dict[str, Any]) -> Job:
    row = dict(row)
    row["input"] = _decode(row["input"])
    row["upload"] = _decode(row["upload"]) if row["upload"] is not None else None
    row["result"] = _decode(row["result"]) if row["result"] is not None else None
    row["error"] = _decode(row["error"]) if row["error"] is not None else None
    return msgspec.convert(row, Job, from_attributes=False)


def encode_error(error: JobError) -> str:
    return _encode(error).decode()


async def insert(
    db: Pool,
    *,
    id: UUID,
    kind: str,
    queue: str,
    owner: str,
    input_json: bytes,
    upload_json: bytes | None = None,
    max_attempts: int,
    message_id: str,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    webhook_url: str | None = None,
    source_job_id: UUID | None = None,
    blobs: Sequence[str] = (),
) -> Job | None:
    """Insert a queued job whose message (``message_id``) is about to be sent; None if the owner's
    idempotency key is taken."""
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""INSERT INTO ai_backend.jobs (id, kind, queue, owner, input, upload, max_attempts, message_id,
                    enqueued_at, idempotency_key, request_hash, webhook_url, source_job_id, blobs)
                VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, now(), %s, %s, %s, %s, %s)
                ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING {_COLUMNS}""",
            (
                id, kind, queue, owner, input_json.decode(), upload_json.decode() if upload_json else None,
                max_attempts, message_id, idempotency_key,
                request_hash, webhook_url, source_job_id, list(blobs),
            ),
        )  # fmt: skip
        row = await cur.fetchone()
    return to_job(row) if row else None


async def get(db: Pool, job_id: UUID, owner: str | None = None) -> Job | None:
    """The job; with ``owner``, only if it is theirs."""
    async with db.connection() as conn:
        if owner is None:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM ai_backend.jobs WHERE id = %s", (job_id,))
        else:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM ai_backend.jobs WHERE id = %s AND owner = %s", (job_id, owner)
            )
        row = await cur.fetchone()
    return to_job(row) if row else None


async def get_by_idempotency_key(db: Pool, owner: str, key: str) -> Job | None:
    async with db.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM ai_backend.jobs WHERE owner = %s AND idempotency_key = %s", (owner, key)
        )
        row = await cur.fetchone()
    return to_job(row) if row else None


async def list_jobs(
    db: Pool,
    owner: str,
    *,
    statuses: Sequence[str] = (),
    kind: str | None = None,
    before: tuple[datetime, UUID] | None = None,
    limit: int = 20,
) -> list[Job]:
    """The owner's jobs, newest first, strictly older than ``before`` (created_at, id) when given."""
    where = ["owner = %s"]
    params: list[Any] = [owner]
    if statuses:
        where.append("status = ANY(%s)")
        params.append(list(statuses))
    if kind:
        where.append("kind = %s")
        params.append(kind)
    if before:
        where.append("(created_at, id) < (%s, %s)")
        params.extend(before)
    params.append(limit)
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""SELECT {_COLUMNS} FROM ai_backend.jobs WHERE {" AND ".join(where)}
                ORDER BY created_at DESC, id DESC LIMIT %s""",
            params,
        )
        rows = await cur.fetchall()
    return [to_job(row) for row in rows]


async def set_message(db: Pool, job_id: UUID, message_id: str | None) -> None:
    """Record the message sent for a queued job (None: not sent; the sweep sends it)."""
    async with db.connection() as conn:
        await conn.execute(
            """UPDATE ai_backend.jobs SET message_id = %s, enqueued_at = CASE WHEN %s THEN now() END
               WHERE id = %s AND status = 'queued'""",
            (message_id, message_id is not None, job_id),
        )


async def claim(db: Pool, job_id: UUID, worker_id: str, stale_seconds: float) -> Job | None:
    """queued -> running (or take over a running job whose heartbeat is stale); the new attempt's row."""
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs
                SET status = 'running', attempts = attempts + 1, worker_id = %s, heartbeat_at = now(),
                    started_at = coalesce(started_at, now()), run_after = NULL
                WHERE id = %s AND cancel_requested_at IS NULL
                  AND (status = 'queued' OR (status = 'running'
                       AND heartbeat_at < now() - make_interval(secs => %s)))
                RETURNING {_COLUMNS}""",
            (worker_id, job_id, stale_seconds),
        )
        row = await cur.fetchone()
    return to_job(row) if row else None


async def report_progress(
    db: Pool, job_id: UUID, attempt: int, progress: float, message: str | None
) -> bool | None:
    """Write progress; True when a cancel was requested, None when the attempt no longer owns the job."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """UPDATE ai_backend.jobs SET progress = %s, progress_message = %s, heartbeat_at = now()
               WHERE id = %s AND attempts = %s AND status = 'running'
               RETURNING cancel_requested_at IS NOT NULL AS cancel""",
            (progress, message, job_id, attempt),
        )
        row = await cur.fetchone()
    return bool(row["cancel"]) if row else None


async def heartbeat(db: Pool, attempts: dict[UUID, int]) -> dict[UUID, bool]:
    """Refresh the heartbeat of running attempts: {job id: cancel requested} for those still owned."""
    if not attempts:
        return {}
    async with db.connection() as conn:
        cur = await conn.execute(
            """UPDATE ai_backend.jobs AS j SET heartbeat_at = now()
               FROM unnest(%s::uuid[], %s::int[]) AS t(id, attempt)
               WHERE j.id = t.id AND j.attempts = t.attempt AND j.status = 'running'
               RETURNING j.id, j.cancel_requested_at IS NOT NULL AS cancel""",
            (list(attempts), list(attempts.values())),
        )
        rows = await cur.fetchall()
    return {cast(UUID, row["id"]): bool(row["cancel"]) for row in rows}


async def finish(
    db: Pool,
    job_id: UUID,
    attempt: int,
    status: str,
    *,
    result_json: bytes | None = None,
    error: JobError | None = None,
    blobs: Sequence[str] = (),
) -> Job | None:
    """running -> succeeded | failed | cancelled for the attempt that owns the job; None otherwise.

    Success requires that no cancel was requested meanwhile: a cancelled job never turns succeeded.
    """
    cancel_guard = "AND cancel_requested_at IS NULL" if status == "succeeded" else ""
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs
                SET status = %s, result = %s::jsonb, error = %s::jsonb, finished_at = now(),
                    progress = CASE WHEN %s = 'succeeded' THEN 1 ELSE progress END,
                    blobs = blobs || %s::text[]
                WHERE id = %s AND attempts = %s AND status = 'running' {cancel_guard}
                RETURNING {_COLUMNS}""",
            (
                status, result_json.decode() if result_json is not None else None,
                encode_error(error) if error else None, status, list(blobs), job_id, attempt,
            ),
        )  # fmt: skip
        row = await cur.fetchone()
    return to_job(row) if row else None


async def retry_later(db: Pool, job_id: UUID, attempt: int, error: JobError, delay: float) -> bool:
    """running -> queued with the error kept and ``run_after`` set; the sweep sends it when due."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """UPDATE ai_backend.jobs
               SET status = 'queued', error = %s::jsonb, run_after = now() + make_interval(secs => %s),
                   enqueued_at = NULL, message_id = NULL, worker_id = NULL, heartbeat_at = NULL
               WHERE id = %s AND attempts = %s AND status = 'running' AND cancel_requested_at IS NULL
               RETURNING id""",
            (encode_error(error), delay, job_id, attempt),
        )
        return await cur.fetchone() is not None


async def release(db: Pool, job_id: UUID, attempt: int, message_id: str) -> bool:
    """running -> queued at worker shutdown, not counted as an attempt; the caller sends ``message_id``."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """UPDATE ai_backend.jobs
               SET status = 'queued', attempts = attempts - 1, message_id = %s, enqueued_at = now(),
                   worker_id = NULL, heartbeat_at = NULL
               WHERE id = %s AND attempts = %s AND status = 'running' AND cancel_requested_at IS NULL
               RETURNING id""",
            (message_id, job_id, attempt),
        )
        return await cur.fetchone() is not None


async def cancel(db: Pool, job_id: UUID, owner: str) -> tuple[Job, str] | None:
    """Cancel for the owner: queued -> cancelled at once; running -> cancel requested (the worker stops
    at its next progress checkpoint). Returns (job, status before); None when nothing changed."""
    cancelled = encode_error(JobError("cancelled", "the job was cancelled"))
    async with db.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT status FROM ai_backend.jobs WHERE id = %s AND owner = %s FOR UPDATE", (job_id, owner)
        )
        before = await cur.fetchone()
        if before is None or before["status"] not in ("queued", "running"):
            return None
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs
                SET cancel_requested_at = coalesce(cancel_requested_at, now()),
                    status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                    error = CASE WHEN status = 'queued' THEN %s::jsonb ELSE error END,
                    finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END
                WHERE id = %s
                RETURNING {_COLUMNS}""",
            (cancelled, job_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return to_job(row), str(before["status"])


async def sweep_stale(db: Pool, stale_seconds: float, limit: int = 500) -> tuple[list[Job], int]:
    """Running jobs whose heartbeat stopped: cancelled if that was asked, failed when out of attempts,
    otherwise back to queued (unsent, so the next send pass picks them up).

    Returns the jobs that reached a terminal state here and the number re-queued.
    """
    lost = encode_error(JobError("worker_lost", "the worker running the job stopped on every attempt"))
    cancelled = encode_error(JobError("cancelled", "the job was cancelled"))
    stale = "status = 'running' AND heartbeat_at < now() - make_interval(secs => %s)"
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs
                SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'failed' END,
                    error = CASE WHEN cancel_requested_at IS NOT NULL THEN %s::jsonb ELSE %s::jsonb END,
                    finished_at = now()
                WHERE id IN (SELECT id FROM ai_backend.jobs WHERE {stale}
                             AND (cancel_requested_at IS NOT NULL OR attempts >= max_attempts)
                             LIMIT %s FOR UPDATE SKIP LOCKED)
                RETURNING {_COLUMNS}""",
            (cancelled, lost, stale_seconds, limit),
        )
        ended = [to_job(row) for row in await cur.fetchall()]
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs
                SET status = 'queued', enqueued_at = NULL, message_id = NULL, worker_id = NULL,
                    heartbeat_at = NULL
                WHERE id IN (SELECT id FROM ai_backend.jobs WHERE {stale} LIMIT %s FOR UPDATE SKIP LOCKED)
                RETURNING id""",
            (stale_seconds, limit),
        )
        requeued = len(await cur.fetchall())
    return ended, requeued


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


async def take_due(db: Pool, limit: int = 500) -> list[tuple[UUID, str, str, str]]:
    """Queued jobs with no message (never sent, retry due, re-queued): give each a message id and return
    (id, kind, queue, message id) for the caller to send. Concurrent callers get disjoint rows."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """WITH due AS (
                   SELECT id FROM ai_backend.jobs
                   WHERE status = 'queued' AND enqueued_at IS NULL
                     AND (run_after IS NULL OR run_after <= now())
                   ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)
               UPDATE ai_backend.jobs AS j SET enqueued_at = now(), message_id = gen_random_uuid()::text
               FROM due WHERE j.id = due.id
               RETURNING j.id, j.kind, j.queue, j.message_id""",
            (limit,),
        )
        rows = await cur.fetchall()
    return [
        (cast(UUID, row["id"]), str(row["kind"]), str(row["queue"]), str(row["message_id"])) for row in rows
    ]


async def expired(db: Pool, retention_days: float, limit: int = 500) -> list[tuple[UUID, list[str]]]:
    """Finished jobs past retention: (id, blob keys)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """SELECT id, blobs FROM ai_backend.jobs
               WHERE finished_at < now() - make_interval(secs => %s)
               ORDER BY finished_at LIMIT %s""",
            (retention_days * 86400.0, limit),
        )
        rows = await cur.fetchall()
    return [(cast(UUID, row["id"]), cast(list[str], row["blobs"])) for row in rows]


async def delete(db: Pool, job_ids: Sequence[UUID]) -> int:
    async with db.connection() as conn:
        cur = await conn.execute("DELETE FROM ai_backend.jobs WHERE id = ANY(%s)", (list(job_ids),))
        return cur.rowcount


async def record_webhook(db: Pool, job_id: UUID, *, delivered: bool, error: str | None) -> None:
    async with db.connection() as conn:
        await conn.execute(
            """UPDATE ai_backend.jobs
               SET webhook_attempts = webhook_attempts + 1, webhook_error = %s,
                   webhook_delivered_at = CASE WHEN %s THEN now() ELSE webhook_delivered_at END
               WHERE id = %s""",
            (error, delivered, job_id),
        )
