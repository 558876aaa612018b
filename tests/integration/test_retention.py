"""Retention, proven with a clock the test moves: finished jobs, their files and log lines, and stored LLM
text go at JOB_RETENTION_DAYS, not a minute before; uploads go when the job ends with
DELETE_UPLOADS_ON_FINISH. Real PostgreSQL, Redis and storage directory (an isolated environment)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.support.clock import FakeClock
from tests.support.config import make_settings
from xenios_ai.analysis import ANALYSIS, AnalysisInput
from xenios_ai.db.pool import open_pool
from xenios_ai.db.redis import open_redis
from xenios_ai.jobs import maintenance, store
from xenios_ai.jobs.blob_keys import upload_key
from xenios_ai.jobs.models import Upload
from xenios_ai.jobs.service import JobService
from xenios_ai.llm.usage import UsageRecord, UsageWriter
from xenios_ai.observability import joblog
from xenios_ai.storage import open_storage

DAY = 86400.0
FILE = b"Sarah Lee's session notes"


@pytest.fixture(scope="module")
async def services(fresh_env: Callable[..., dict[str, str]]) -> AsyncIterator[tuple[JobService, JobService]]:
    """Two job services on one isolated environment: the default one, and one deleting uploads at the end."""
    env = fresh_env(JOB_RETENTION_DAYS="7")
    db = await open_pool(make_settings(env), wait=True)
    redis = open_redis(make_settings(env))
    built = []
    for delete_uploads in (False, True):
        settings = make_settings(env, delete_uploads_on_finish=delete_uploads)
        built.append(JobService(settings, db, redis, open_storage(settings)))
    yield built[0], built[1]
    for service in built:
        await service.hub.aclose()
    await redis.aclose()
    await db.close()


async def _job(jobs: JobService, owner: str, *, end: bool) -> tuple[uuid.UUID, list[Path]]:
    """A job with an upload and a result file (and a log line), ended (cancelled) when ``end``."""
    job_id = uuid.uuid4()
    blob = await jobs.storage.put_bytes(upload_key(job_id), FILE)
    result = await jobs.storage.put_bytes(f"jobs/{job_id}/document.json", FILE)
    upload = Upload(blob.key, "notes.txt", "text", blob.size, hashlib.sha256(FILE).hexdigest())
    await jobs.submit(
        ANALYSIS, owner, AnalysisInput(task="session_summary", text="x"), upload=upload, job_id=job_id,
        blobs=[result.key],
    )  # fmt: skip
    await joblog.append(jobs.redis, jobs.settings, job_id, "INFO", "started")
    if end:
        await jobs.cancel(job_id, owner)
    root = jobs.settings.storage_path
    return job_id, [root / blob.key, root / result.key]


async def test_finished_jobs_files_logs_and_llm_text_go_at_the_retention_age(
    services: tuple[JobService, JobService],
) -> None:
    jobs, _ = services
    owner = f"keep-{uuid.uuid4().hex[:8]}"
    finished = [await _job(jobs, owner, end=True) for _ in range(2)]
    waiting_id, waiting_files = await _job(jobs, owner, end=False)
    usage = UsageWriter(jobs.db, jobs.settings)
    usage.record(
        UsageRecord(
            created_at=time.time(), request_id="r", owner=owner, task="session_summary", mode="complete",
            status="succeeded", model="m", fallback_used=False, attempts=[], prompt_tokens=7,
            completion_tokens=1, cost_usd=0.5, latency_ms=1.0, prompt=[{"role": "user", "content": "x"}],
            response="y",
        )
    )  # fmt: skip
    await usage.flush()
    clock = FakeClock()

    async def held() -> tuple[int, int, int, tuple[int, int]]:
        ids = [job_id for job_id, _ in finished]
        rows = sum([await store.get(jobs.db, job_id) is not None for job_id in ids])
        files = sum(path.exists() for _, paths in finished for path in paths)
        logs = sum([await jobs.redis.exists(joblog.log_key(jobs.settings.redis_namespace, i)) for i in ids])
        async with jobs.db.connection() as conn:
            cur = await conn.execute(
                """SELECT count(prompt) + count(response) AS texts, sum(prompt_tokens) AS tokens
                   FROM ai_backend.llm_requests WHERE owner = %s""",
                (owner,),
            )
            row: dict[str, Any] = await cur.fetchone() or {}
        return rows, files, logs, (row["texts"], row["tokens"])

    assert await held() == (2, 4, 2, (2, 7))
    assert await maintenance.expire(jobs, clock=clock.time) == 0
    clock.advance(7 * DAY - 60)  # a minute short of the retention age
    assert await maintenance.expire(jobs, clock=clock.time) == 0
    assert await held() == (2, 4, 2, (2, 7))

    clock.advance(120)  # a minute past it
    assert await maintenance.expire(jobs, clock=clock.time) >= 2
    assert await held() == (0, 0, 0, (0, 7))  # the LLM request's numbers stay, its text went
    # a job that has not ended is never expired, whatever its age
    assert await store.get(jobs.db, waiting_id) is not None
    assert all(path.exists() for path in waiting_files)


async def test_uploads_go_when_the_job_ends_with_delete_uploads_on_finish(
    services: tuple[JobService, JobService],
) -> None:
    keeping, deleting = services
    owner = f"keep-{uuid.uuid4().hex[:8]}"
    _, (kept_upload, kept_result) = await _job(keeping, owner, end=True)
    job_id, (upload, result) = await _job(deleting, owner, end=False)
    assert upload.exists()  # while the job waits or runs, its file is there

    await deleting.cancel(job_id, owner)

    assert not upload.exists()
    assert result.exists()  # results stay until retention
    job = await store.get(deleting.db, job_id)
    assert job is not None
    assert job.upload is not None  # what was uploaded (name, size, digest) stays on the row
    assert (kept_upload.exists(), kept_result.exists()) == (True, True)  # default: kept until retention


async def test_every_track_of_a_several_file_job_goes_when_it_ends(
    services: tuple[JobService, JobService],
) -> None:
    _, deleting = services
    owner = f"keep-{uuid.uuid4().hex[:8]}"
    job_id = uuid.uuid4()
    files = [await deleting.storage.put_bytes(upload_key(job_id, i), FILE) for i in range(2)]
    first, second = (
        Upload(b.key, f"track-{i}.wav", "wav", b.size, hashlib.sha256(FILE).hexdigest())
        for i, b in enumerate(files)
    )
    upload = msgspec.structs.replace(first, more=(second,))
    await deleting.submit(
        ANALYSIS, owner, AnalysisInput(task="session_summary", text="x"), upload=upload, job_id=job_id
    )
    paths = [deleting.settings.storage_path / b.key for b in files]
    assert all(path.exists() for path in paths)
    await deleting.cancel(job_id, owner)
    assert not any(path.exists() for path in paths)
