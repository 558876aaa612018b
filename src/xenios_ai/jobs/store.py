"""SQL for ``ai_backend.jobs``: every state change is one conditional UPDATE, so every transition is race-safe.

The run token of an attempt is the ``attempts`` value its claim returned: progress, heartbeat and the
terminal write all require ``status = 'running' AND attempts = <token>``. A worker that lost its job (taken
over after its heartbeat went stale, or cancelled) changes nothing, and a job succeeds exactly once.

The row is also the outbox of what a job's end sets off: the terminal write inserts the follow-up jobs
(unsent, so the sweep sends them if the worker cannot) and marks the webhook due (``webhook_due_at``) in
the same transaction, so neither is lost when the worker dies or Redis is down right after the commit.
"""

# ruff: noqa: S608 - the only interpolated SQL is this module's constant column lists and fixed clauses
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import msgspec

from xenios_ai.db.pool import Pool
from xenios_ai.jobs.models import Job, JobError, Upload

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

COLUMNS = """id, kind, queue, status, owner, input::text AS input, upload::text AS upload, source::text AS source,
    result::text AS result,
    error::text AS error, progress, progress_message, attempts, max_attempts, idempotency_key, request_hash,
    webhook_url, webhook_include_result, webhook_attempts, webhook_delivered_at, webhook_error, webhook_due_at, source_job_id, blobs,
    message_id, worker_id, cancel_requested_at, run_after, created_at, enqueued_at, started_at, heartbeat_at,
    finished_at"""
J_COLUMNS = ", ".join(f"j.{column.strip()}" for column in COLUMNS.split(","))
"""COLUMNS of the table aliased ``j``."""


def to_job(row: dict[str, Any]) -> Job:
    row = dict(row)
    row["input"] = _decode(row["input"])
    row["upload"] = _decode(row["upload"]) if row["upload"] is not None else None
    row["source"] = _decode(row["source"]) if row["source"] is not None else None
    row["result"] = _decode(row["result"]) if row["result"] is not None else None
    row["error"] = _decode(row["error"]) if row["error"] is not None else None
    return msgspec.convert(row, Job, from_attributes=False)


def encode_error(error: JobError) -> str:
    return _encode(error).decode()


CANCELLED_JSON = encode_error(JobError("cancelled", "the job was cancelled"))
LOST_JSON = encode_error(JobError("worker_lost", "the worker running the job stopped on every attempt"))
# Every terminal transition marks the webhook due (if the job has one), ``webhook_after`` seconds ahead.
_WEBHOOK_DUE = "CASE WHEN webhook_url IS NOT NULL THEN now() + make_interval(secs => %s) END"


@dataclass(frozen=True)
class FollowUpRow:
    """A job to insert, unsent, together with the success of the job that asked for it."""

    id: UUID
    kind: str
    queue: str
    owner: str
    input_json: bytes
    max_attempts: int
    webhook_url: str | None
    source_job_id: UUID
    webhook_include_result: bool = False


async def insert(
    db: Pool,
    *,
    id: UUID,
    kind: str,
    queue: str,
    owner: str,
    input_json: bytes,
    upload_json: bytes | None = None,
    source_json: bytes | None = None,
    max_attempts: int,
    message_id: str,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    webhook_url: str | None = None,
    webhook_include_result: bool = False,
    source_job_id: UUID | None = None,
    blobs: Sequence[str] = (),
) -> Job | None:
    """Insert a queued job whose message (``message_id``) is about to be sent; None if the owner's
    idempotency key is taken."""
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""INSERT INTO ai_backend.jobs (id, kind, queue, owner, input, upload, source, max_attempts,
                    message_id, enqueued_at, idempotency_key, request_hash, webhook_url, webhook_include_result,
                    source_job_id, blobs)
                VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, now(), %s, %s, %s, %s, %s, %s)
                ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING {COLUMNS}""",
            (
                id, kind, queue, owner, input_json.decode(), upload_json.decode() if upload_json else None,
                source_json.decode() if source_json else None, max_attempts, message_id, idempotency_key,
                request_hash, webhook_url, webhook_include_result, source_job_id, list(blobs),
            ),
        )  # fmt: skip
        row = await cur.fetchone()
    return to_job(row) if row else None


async def set_upload(db: Pool, job_id: UUID, attempt: int, upload: Upload) -> Job | None:
    """Record the file a worker made of a job's source (``jobs/<id>/upload``) while its ``attempt`` owns
    the job; the file goes with the job at retention. None: the attempt lost the job."""
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs SET upload = %s::jsonb,
                    blobs = CASE WHEN %s = ANY(blobs) THEN blobs ELSE array_append(blobs, %s) END
                WHERE id = %s AND attempts = %s AND status = 'running'
                RETURNING {COLUMNS}""",
            (_encode(upload).decode(), upload.key, upload.key, job_id, attempt),
        )
        row = await cur.fetchone()
    return to_job(row) if row else None


async def get(db: Pool, job_id: UUID, owner: str | None = None) -> Job | None:
    """The job; with ``owner``, only if it is theirs."""
    async with db.connection() as conn:
        if owner is None:
            cur = await conn.execute(f"SELECT {COLUMNS} FROM ai_backend.jobs WHERE id = %s", (job_id,))
        else:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM ai_backend.jobs WHERE id = %s AND owner = %s", (job_id, owner)
            )
        row = await cur.fetchone()
    return to_job(row) if row else None


async def get_by_idempotency_key(db: Pool, owner: str, key: str) -> Job | None:
    async with db.connection() as conn:
        cur = await conn.execute(
            f"SELECT {COLUMNS} FROM ai_backend.jobs WHERE owner = %s AND idempotency_key = %s", (owner, key)
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
            f"""SELECT {COLUMNS} FROM ai_backend.jobs WHERE {" AND ".join(where)}
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


async def claim(
    db: Pool,
    job_id: UUID,
    worker_id: str,
    stale_seconds: float,
    *,
    webhook_after: float,
    take_over: bool = True,
) -> Job | None:
    """queued -> running (or take over a running job whose heartbeat is stale); the new attempt's row.

    A job whose cancel was asked but never settled (queued, or running on a dead worker) ends
    ``cancelled`` here instead: the returned row is then terminal and the caller runs nothing.
    """
    async with db.connection() as conn:
        cur = await conn.execute(
            f"""UPDATE ai_backend.jobs
                SET status = CASE WHEN cancel_requested_at IS NULL THEN 'running' ELSE 'cancelled' END,
                    attempts = CASE WHEN cancel_requested_at IS NULL THEN attempts + 1 ELSE attempts END,
                    worker_id = CASE WHEN cancel_requested_at IS NULL THEN %s ELSE worker_id END,
                    heartbeat_at = CASE WHEN cancel_requested_at IS NULL THEN now() END,
                    started_at = CASE WHEN cancel_requested_at IS NULL THEN coalesce(started_at, now())
                                      ELSE started_at END,
                    run_after = NULL,
                    error = CASE WHEN cancel_requested_at IS NULL THEN error ELSE %s::jsonb END,
                    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
                    webhook_due_at = CASE WHEN cancel_requested_at IS NOT NULL AND webhook_url IS NOT NULL
                                          THEN now() + make_interval(secs => %s) END
                WHERE id = %s
                  AND (status = 'queued' OR (%s AND status = 'running'
                       AND heartbeat_at < now() - make_interval(secs => %s)))
                RETURNING {COLUMNS}""",
            (worker_id, CANCELLED_JSON, webhook_after, job_id, take_over, stale_seconds),
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
    follow_ups: Sequence[FollowUpRow] = (),
    webhook_after: float,
) -> Job | None:
    """running -> succeeded | failed | cancelled for the attempt that owns the job; None otherwise.

    Success requires that no cancel was requested meanwhile: a cancelled job never turns succeeded.
    ``follow_ups`` are inserted (queued, unsent) in the same transaction, only when the job ends here;
    the webhook, if any, becomes due ``webhook_after`` seconds from now (see the module).
    """
    cancel_guard = "AND cancel_requested_at IS NULL" if status == "succeeded" else ""
    query = f"""UPDATE ai_backend.jobs
                SET status = %s, result = %s::jsonb, error = %s::jsonb, finished_at = now(),
                    progress = CASE WHEN %s = 'succeeded' THEN 1 ELSE progress END,
                    blobs = blobs || %s::text[], webhook_due_at = {_WEBHOOK_DUE}
                WHERE id = %s AND attempts = %s AND status = 'running' {cancel_guard}
                RETURNING {COLUMNS}"""
    params = (
        status, result_json.decode() if result_json is not None else None,
        encode_error(error) if error else None, status, list(blobs), webhook_after, job_id, attempt,
    )  # fmt: skip
    async with db.connection() as conn:
        if not follow_ups:  # one statement: atomic without a transaction block (no extra round trips)
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        else:
            async with conn.transaction():
                cur = await conn.execute(query, params)
                row = await cur.fetchone()
                if row is not None:
                    async with conn.cursor() as insert:
                        await insert.executemany(
                            """INSERT INTO ai_backend.jobs (id, kind, queue, owner, input, max_attempts,
                                   webhook_url, webhook_include_result, source_job_id)
                               VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)""",
                            [
                                (f.id, f.kind, f.queue, f.owner, f.input_json.decode(), f.max_attempts,
                                 f.webhook_url, f.webhook_include_result, f.source_job_id)
                                for f in follow_ups
                            ],
                        )  # fmt: skip
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


async def cancel(db: Pool, job_id: UUID, owner: str, *, webhook_after: float) -> tuple[Job, str] | None:
    """Cancel for the owner: queued -> cancelled at once; running -> cancel requested (the worker stops
    at its next progress checkpoint). Returns (job, status before); None when nothing changed."""
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
                    finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
                    webhook_due_at = CASE WHEN status = 'queued' THEN {_WEBHOOK_DUE} END
                WHERE id = %s
                RETURNING {COLUMNS}""",
            (CANCELLED_JSON, webhook_after, job_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return to_job(row), str(before["status"])
