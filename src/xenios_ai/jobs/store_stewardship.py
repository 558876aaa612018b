"""SQL of data stewardship: erasing a user's rows (jobs, usage text) and the erasure audit trail.

A user is never stored here by their id: ``erased_subjects`` and ``erasures`` key them by the sha256 of
the id (`subject_hash`), and their usage rows move to a random pseudonym (see migration 0006).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast
from uuid import UUID

import msgspec

from xenios_ai.db.pool import Pool


def subject_hash(user_id: str) -> str:
    """How an erased user is known afterwards: the hex sha256 of their id (PostgreSQL computes the same
    with ``encode(sha256(convert_to(owner, 'UTF8')), 'hex')``)."""
    return hashlib.sha256(user_id.encode()).hexdigest()


@dataclass(frozen=True)
class OwnedJob:
    id: UUID
    status: str
    blobs: tuple[str, ...]
    has_webhook: bool


@dataclass(frozen=True)
class ErasedRows:
    jobs: list[OwnedJob]
    """The job rows deleted (follow-ups included: they are the user's jobs too)."""
    llm_requests: int
    """Usage rows moved to the pseudonym."""
    llm_texts: int
    """Of those, rows that held prompt or answer text (LLM_STORE_CONTENT), now removed."""


def _owned(row: dict[str, object]) -> OwnedJob:
    return OwnedJob(
        id=cast(UUID, row["id"]),
        status=str(row["status"]),
        blobs=tuple(cast(list[str], row["blobs"])),
        has_webhook=bool(row["has_webhook"]),
    )


_OWNED = "id, status, blobs, webhook_url IS NOT NULL AS has_webhook"


async def owned_jobs(db: Pool, owner: str) -> list[OwnedJob]:
    """Every job of ``owner`` (any state)."""
    async with db.connection() as conn:
        cur = await conn.execute(f"SELECT {_OWNED} FROM ai_backend.jobs WHERE owner = %s", (owner,))  # noqa: S608
        return [_owned(row) for row in await cur.fetchall()]


async def erase_rows(db: Pool, owner: str) -> ErasedRows:
    """In one transaction: delete every job row of ``owner`` (a worker still running one can then write
    nothing back: every write of an attempt is an UPDATE of its row), and move their usage rows to the
    subject's pseudonym without text, request or job ids (numbers only: tokens, cost, model, task)."""
    async with db.connection() as conn, conn.transaction():
        cur = await conn.execute(
            f"DELETE FROM ai_backend.jobs WHERE owner = %s RETURNING {_OWNED}",  # noqa: S608
            (owner,),
        )
        jobs = [_owned(row) for row in await cur.fetchall()]
        cur = await conn.execute(
            """INSERT INTO ai_backend.erased_subjects (subject_hash, pseudonym, erased_at)
               VALUES (%s, %s, now())
               ON CONFLICT (subject_hash) DO UPDATE SET erased_at = now()
               RETURNING pseudonym""",
            (subject_hash(owner), f"erased-{uuid.uuid4().hex}"),
        )
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(
            """WITH old AS (
                   SELECT id, (prompt IS NOT NULL OR response IS NOT NULL) AS had_text
                   FROM ai_backend.llm_requests WHERE owner = %s FOR UPDATE)
               UPDATE ai_backend.llm_requests AS r
               SET owner = %s, prompt = NULL, response = NULL, request_id = NULL, job_id = NULL,
                   attempts = '[]'::jsonb
               FROM old WHERE r.id = old.id
               RETURNING old.had_text""",
            (owner, row["pseudonym"]),
        )
        usage = await cur.fetchall()
    return ErasedRows(jobs, len(usage), sum(1 for u in usage if u["had_text"]))


async def record_erasure(
    db: Pool, owner: str, *, requested_by: str, counts: msgspec.Struct, started_at: datetime
) -> tuple[UUID, datetime]:
    """The audit row of one erasure (counts only); its id and time."""
    erasure_id = uuid.uuid4()
    async with db.connection() as conn:
        cur = await conn.execute(
            """INSERT INTO ai_backend.erasures (id, subject_hash, requested_by, counts, started_at)
               VALUES (%s, %s, %s, %s::jsonb, %s) RETURNING finished_at""",
            (erasure_id, subject_hash(owner), requested_by, msgspec.json.encode(counts).decode(), started_at),
        )
        row = await cur.fetchone()
    assert row is not None
    return erasure_id, cast(datetime, row["finished_at"])


async def erasures_of(db: Pool, owner: str) -> Sequence[dict[str, object]]:
    """The audit rows of ``owner``'s erasures, newest first (what an operator can show)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            """SELECT id, requested_by, counts, started_at, finished_at FROM ai_backend.erasures
               WHERE subject_hash = %s ORDER BY finished_at DESC""",
            (subject_hash(owner),),
        )
        return await cur.fetchall()
