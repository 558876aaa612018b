"""Data stewardship: erase everything the service holds about a user, and show that it did.

`erase_user` (the body of ``DELETE /api/v1/users/{id}/data`` and ``DELETE /api/v1/me/data``):

1. deletes the files (uploads, results, secrets) and Redis log lines of the user's jobs that no worker
   runs;
2. in one transaction deletes every job row of the user (follow-ups and webhook delivery records are
   part of the rows) and moves their LLM usage rows to a random pseudonym, without prompt, answer,
   request or job ids: billing totals survive, the person does not. Deleting a running job's row is
   what cancels it: its attempt can write nothing more;
3. tells the workers running any of them to stop now (the cancel channel), deletes those jobs' files and
   logs and whatever appeared meanwhile (a follow-up inserted by a finishing job), and any other Redis
   keys named by the caller (the API's rate-limit counters of the user);
4. writes the audit row (``ai_backend.erasures``: counts only) and one log line without content.

Why nothing comes back: a queued job's message finds no row to claim, and every write of a running
attempt (progress, heartbeat, its end, its follow-ups) is an UPDATE of its row, which is gone; the
attempt's heartbeat then reports the job lost and the runner deletes the files it wrote
(`jobs.runner`). A usage row recorded by such an attempt after the erasure is stored under the
pseudonym without text (`llm.usage`). Running it again is harmless: the counts are then zeros.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

import msgspec
from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.jobs import events, store_stewardship
from xenios_ai.jobs.service import JobService
from xenios_ai.observability.joblog import log_key
from xenios_ai.storage import BlobStorage

_DELETE_CONCURRENCY = 32
"""Blob deletions in flight at once (an S3 delete is a round trip; local ones are quick anyway)."""
_REDIS_BATCH = 500


class ErasureCounts(msgspec.Struct, kw_only=True):
    """What one erasure removed; zeros when there was nothing (left)."""

    jobs: int
    """Job rows deleted, any state (results, errors, inputs with them)."""
    running_jobs_cancelled: int
    """Of those, jobs a worker was running: told to stop, and nothing of them is written back."""
    queued_jobs_dropped: int
    """Of those, jobs still waiting in a queue: they never run."""
    files: int
    """Stored objects deleted (uploads, result files, secrets)."""
    job_logs: int
    """Job log lists deleted from Redis."""
    webhooks: int
    """Jobs whose webhook (delivery records, pending deliveries) went with them."""
    llm_requests_pseudonymised: int
    """LLM usage rows kept for billing under an irreversible pseudonym, numbers only."""
    llm_texts_removed: int
    """Of those, rows whose stored prompt and answer text (LLM_STORE_CONTENT) was removed."""
    other_keys: int
    """Other Redis keys of the user (rate-limit counters)."""


class Erasure(msgspec.Struct, kw_only=True):
    erasure_id: UUID
    erased_at: datetime
    counts: ErasureCounts


async def delete_blobs(storage: BlobStorage, keys: Iterable[str]) -> int:
    """Delete ``keys`` (absent ones are no error); how many were asked for."""
    todo = sorted(set(keys))
    for start in range(0, len(todo), _DELETE_CONCURRENCY):
        await asyncio.gather(*(storage.delete(key) for key in todo[start : start + _DELETE_CONCURRENCY]))
    return len(todo)


async def _delete_keys(jobs: JobService, keys: Sequence[str]) -> int:
    deleted = 0
    for start in range(0, len(keys), _REDIS_BATCH):
        deleted += int(await jobs.redis.delete(*keys[start : start + _REDIS_BATCH]))
    return deleted


async def _tell_to_stop(jobs: JobService, job_ids: Iterable[UUID]) -> None:
    """Without Redis the workers still find out: their next heartbeat finds the row gone."""
    channel = events.cancel_channel(jobs.settings.redis_namespace)
    with contextlib.suppress(RedisError, OSError):
        for job_id in job_ids:
            await jobs.redis.publish(channel, str(job_id))


async def erase_user(
    jobs: JobService,
    owner: str,
    *,
    requested_by: Literal["service", "user"],
    other_keys: Sequence[str] = (),
) -> Erasure:
    """Erase ``owner``'s data (see the module). Raises when a store fails before the rows are deleted
    (nothing is lost by calling again); counts what it removed."""
    started_at = datetime.now(UTC)
    prefix = jobs.settings.redis_namespace
    # Files and logs of jobs no worker runs first: should this process die after the rows are gone,
    # nothing but a running job's files could be left behind.
    before = [job for job in await store_stewardship.owned_jobs(jobs.db, owner) if job.status != "running"]
    files_done = {key for job in before for key in job.blobs}
    files = await delete_blobs(jobs.storage, files_done)
    logs_done = {log_key(prefix, job.id) for job in before}
    job_logs = await _delete_keys(jobs, sorted(logs_done))

    rows = await store_stewardship.erase_rows(jobs.db, owner)

    # Deleting a running job's row is what cancels it: its attempt can write nothing more. Tell its
    # worker to stop now (else its next heartbeat finds the row gone), then remove what it left.
    try:
        await _tell_to_stop(jobs, [job.id for job in rows.jobs if job.status == "running"])
        files += await delete_blobs(
            jobs.storage, {key for job in rows.jobs for key in job.blobs} - files_done
        )
        job_logs += await _delete_keys(
            jobs, sorted({log_key(prefix, job.id) for job in rows.jobs} - logs_done)
        )
        other = await _delete_keys(jobs, list(other_keys))
    except Exception as exc:  # the rows are gone: what is left here expires with retention
        logger.warning("erasure: some files or Redis keys not deleted ({})", type(exc).__name__)
        other = 0
    counts = ErasureCounts(
        jobs=len(rows.jobs),
        running_jobs_cancelled=sum(1 for job in rows.jobs if job.status == "running"),
        queued_jobs_dropped=sum(1 for job in rows.jobs if job.status == "queued"),
        files=files,
        job_logs=job_logs,
        webhooks=sum(1 for job in rows.jobs if job.has_webhook),
        llm_requests_pseudonymised=rows.llm_requests,
        llm_texts_removed=rows.llm_texts,
        other_keys=other,
    )
    erasure_id, erased_at = await store_stewardship.record_erasure(
        jobs.db, owner, requested_by=requested_by, counts=counts, started_at=started_at
    )
    logger.bind(erasure_id=str(erasure_id), requested_by=requested_by).info(
        "erasure {} of subject {} ({}) in {:.0f} ms: {}",
        erasure_id,
        store_stewardship.subject_hash(owner)[:16],
        requested_by,
        (erased_at - started_at).total_seconds() * 1000,
        msgspec.json.encode(counts).decode(),
    )
    return Erasure(erasure_id=erasure_id, erased_at=erased_at, counts=counts)
