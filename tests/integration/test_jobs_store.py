"""The job row's state machine, the sweep and retention, on a real PostgreSQL and Redis.

Every transition is a conditional UPDATE: these tests race them and replay them and look at the row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from tests.conftest import make_settings
from xenios_ai.db.pool import open_pool
from xenios_ai.db.redis import open_redis
from xenios_ai.errors import Conflict, NotFound
from xenios_ai.jobs import maintenance, store
from xenios_ai.jobs.models import Job, JobError, JobKind, RetryPolicy
from xenios_ai.jobs.queues import broker_namespace
from xenios_ai.jobs.service import JobService
from xenios_ai.storage import open_storage


class Echo(msgspec.Struct):
    text: str = "hi"


ECHO = JobKind(name="echo", queue="default", input_type=Echo, retry=RetryPolicy(max_attempts=2))


@pytest.fixture(scope="module")
async def jobs(fresh_env: Callable[..., dict[str, str]]) -> AsyncIterator[JobService]:
    settings = make_settings(fresh_env())
    db = await open_pool(settings, wait=True)
    redis = open_redis(settings)
    service = JobService(settings, db, redis, open_storage(settings))
    yield service
    await service.hub.aclose()
    await redis.aclose()
    await db.close()


async def _sql(jobs: JobService, query: str, *params: Any) -> None:
    async with jobs.db.connection() as conn:
        await conn.execute(query, params)


async def _in_queue(jobs: JobService, job: Job) -> bool:
    namespace = broker_namespace(jobs.settings.redis_namespace)
    return bool(await jobs.redis.hexists(f"{namespace}:{job.queue}.msgs", job.message_id or ""))


async def _submit(jobs: JobService, owner: str = "owner-a", **kwargs: Any) -> Job:
    return (await jobs.submit(ECHO, owner, Echo(), **kwargs)).job


async def test_submit_commits_the_row_then_sends_its_message(jobs: JobService) -> None:
    job = await _submit(jobs)
    assert (job.status, job.attempts, job.max_attempts) == ("queued", 0, 2)
    assert job.enqueued_at is not None
    assert await _in_queue(jobs, job)


async def test_concurrent_claims_give_the_job_to_exactly_one(jobs: JobService) -> None:
    job = await _submit(jobs)
    claims = await asyncio.gather(*(store.claim(jobs.db, job.id, f"w{i}", 30) for i in range(8)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    assert (won[0].status, won[0].attempts) == ("running", 1)


async def test_only_the_owning_attempt_finishes_and_only_once(jobs: JobService) -> None:
    job = await _submit(jobs)
    claimed = await store.claim(jobs.db, job.id, "w", 30)
    assert claimed is not None
    assert await store.finish(jobs.db, job.id, attempt=99, status="succeeded", result_json=b"{}") is None
    done = await store.finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b'{"n": 1}')
    assert done is not None
    assert done.result == {"n": 1}
    assert done.progress == 1.0
    assert await store.finish(jobs.db, job.id, claimed.attempts, "failed", error=JobError("x", "y")) is None
    # A redelivered message finds nothing to claim.
    assert await store.claim(jobs.db, job.id, "w2", 30) is None
    assert (await jobs.get(job.id, "owner-a")).status == "succeeded"


async def test_a_stale_running_job_is_taken_over_and_the_old_attempt_is_shut_out(jobs: JobService) -> None:
    job = await _submit(jobs)
    first = await store.claim(jobs.db, job.id, "dead-worker", 30)
    assert first is not None
    assert await store.claim(jobs.db, job.id, "w2", 30) is None  # heartbeat fresh: not yours
    await _sql(
        jobs, "UPDATE ai_backend.jobs SET heartbeat_at = now() - interval '1 minute' WHERE id = %s", job.id
    )
    second = await store.claim(jobs.db, job.id, "w2", 30)
    assert second is not None
    assert second.attempts == 2
    assert await store.report_progress(jobs.db, job.id, first.attempts, 0.5, "late") is None
    assert await store.heartbeat(jobs.db, {job.id: first.attempts}) == {}
    assert await store.finish(jobs.db, job.id, first.attempts, "succeeded", result_json=b"1") is None
    assert await store.finish(jobs.db, job.id, second.attempts, "succeeded", result_json=b"2") is not None


async def test_cancel_of_a_queued_job_is_final_and_it_never_runs(jobs: JobService) -> None:
    job = await _submit(jobs)
    cancelled = await jobs.cancel(job.id, "owner-a")
    assert cancelled.status == "cancelled"
    assert cancelled.error == JobError("cancelled", "the job was cancelled")
    assert await store.claim(jobs.db, job.id, "w", 30) is None
    assert (await jobs.cancel(job.id, "owner-a")).status == "cancelled"  # idempotent


async def test_cancel_of_a_running_job_is_a_request_the_attempt_sees(jobs: JobService) -> None:
    job = await _submit(jobs)
    claimed = await store.claim(jobs.db, job.id, "w", 30)
    assert claimed is not None
    requested = await jobs.cancel(job.id, "owner-a")
    assert requested.status == "running"
    assert requested.cancel_requested_at is not None
    assert await store.report_progress(jobs.db, job.id, claimed.attempts, 0.3, None) is True
    assert await store.heartbeat(jobs.db, {job.id: claimed.attempts}) == {job.id: True}
    # Success is refused once a cancel was asked; the attempt records cancelled instead.
    assert await store.finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b"1") is None
    done = await store.finish(
        jobs.db, job.id, claimed.attempts, "cancelled", error=JobError("cancelled", "the job was cancelled")
    )
    assert done is not None
    assert done.status == "cancelled"


async def test_cancel_of_a_finished_job_is_a_conflict_and_others_jobs_are_not_found(jobs: JobService) -> None:
    job = await _submit(jobs)
    claimed = await store.claim(jobs.db, job.id, "w", 30)
    assert claimed is not None
    await store.finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b"1")
    with pytest.raises(Conflict):
        await jobs.cancel(job.id, "owner-a")
    with pytest.raises(NotFound):
        await jobs.cancel(job.id, "owner-b")
    with pytest.raises(NotFound):
        await jobs.get(job.id, "owner-b")


async def test_idempotency_key_replays_for_the_same_request_only(jobs: JobService) -> None:
    key = f"key-{uuid.uuid4()}"
    first = await jobs.submit(ECHO, "owner-a", Echo("same"), idempotency_key=key)
    again = await jobs.submit(ECHO, "owner-a", Echo("same"), idempotency_key=key)
    assert (first.replayed, again.replayed) == (False, True)
    assert again.job.id == first.job.id
    with pytest.raises(Conflict) as caught:
        await jobs.submit(ECHO, "owner-a", Echo("different"), idempotency_key=key)
    assert caught.value.code == "idempotency_key_reused"
    other_owner = await jobs.submit(ECHO, "owner-b", Echo("same"), idempotency_key=key)
    assert other_owner.job.id != first.job.id
    assert not other_owner.replayed


async def test_list_pages_newest_first_with_filters(jobs: JobService) -> None:
    owner = f"lister-{uuid.uuid4()}"
    created = [await _submit(jobs, owner) for _ in range(5)]
    await jobs.cancel(created[0].id, owner)
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page, cursor = await jobs.list(owner, cursor=cursor, limit=2)
        seen += [job.id for job in page]
        if cursor is None:
            break
    assert seen == [job.id for job in reversed(created)]
    cancelled, _ = await jobs.list(owner, statuses=["cancelled"])
    assert [job.id for job in cancelled] == [created[0].id]
    assert (await jobs.list(owner, kind="other"))[0] == []


async def test_sweep_requeues_stale_jobs_and_ends_hopeless_ones(jobs: JobService) -> None:
    stale = await _submit(jobs)
    cancel_asked = await _submit(jobs)
    exhausted = await _submit(jobs)
    for job in (stale, cancel_asked, exhausted):
        assert await store.claim(jobs.db, job.id, "dead-worker", 30) is not None
    await _sql(jobs, "UPDATE ai_backend.jobs SET cancel_requested_at = now() WHERE id = %s", cancel_asked.id)
    await _sql(jobs, "UPDATE ai_backend.jobs SET attempts = max_attempts WHERE id = %s", exhausted.id)
    await _sql(
        jobs,
        "UPDATE ai_backend.jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = ANY(%s)",
        [stale.id, cancel_asked.id, exhausted.id],
    )

    report = await maintenance.sweep(jobs)

    assert report.ended >= 2
    assert report.requeued >= 1
    assert report.sent >= 1
    requeued = await jobs.get(stale.id, "owner-a")
    assert (requeued.status, requeued.attempts, requeued.worker_id) == ("queued", 1, None)
    assert requeued.message_id != stale.message_id
    assert await _in_queue(jobs, requeued)
    assert (await jobs.get(cancel_asked.id, "owner-a")).status == "cancelled"
    lost = await jobs.get(exhausted.id, "owner-a")
    assert lost.status == "failed"
    assert lost.error is not None
    assert lost.error.code == "worker_lost"


async def test_sweep_resends_jobs_whose_message_redis_lost_or_never_got(jobs: JobService) -> None:
    lost = await _submit(jobs)
    namespace = broker_namespace(jobs.settings.redis_namespace)
    await jobs.redis.hdel(f"{namespace}:{lost.queue}.msgs", lost.message_id or "")
    await _sql(
        jobs, "UPDATE ai_backend.jobs SET enqueued_at = now() - interval '1 hour' WHERE id = %s", lost.id
    )
    unsent = await _submit(jobs)
    await store.set_message(jobs.db, unsent.id, None)
    present = await _submit(jobs)
    await _sql(
        jobs, "UPDATE ai_backend.jobs SET enqueued_at = now() - interval '1 hour' WHERE id = %s", present.id
    )

    await maintenance.sweep(jobs)

    for job in (lost, unsent):
        resent = await jobs.get(job.id, "owner-a")
        assert resent.message_id not in (None, job.message_id)
        assert await _in_queue(jobs, resent)
    assert (await jobs.get(present.id, "owner-a")).message_id == present.message_id


async def test_retries_are_sent_when_their_backoff_is_over(jobs: JobService) -> None:
    due = await _submit(jobs)
    later = await _submit(jobs)
    for job, delay in ((due, 0.0), (later, 3600.0)):
        claimed = await store.claim(jobs.db, job.id, "w", 30)
        assert claimed is not None
        assert await store.retry_later(
            jobs.db, job.id, claimed.attempts, JobError("upstream_unavailable", "x"), delay
        )
    await maintenance.sweep(jobs)
    sent = await jobs.get(due.id, "owner-a")
    assert sent.status == "queued"
    assert sent.enqueued_at is not None
    assert await _in_queue(jobs, sent)
    assert sent.error == JobError("upstream_unavailable", "x")
    waiting = await jobs.get(later.id, "owner-a")
    assert waiting.enqueued_at is None
    assert waiting.message_id is None


async def test_retention_deletes_old_finished_jobs_with_their_files(jobs: JobService) -> None:
    old = await _submit(jobs)
    recent = await _submit(jobs)
    running = await _submit(jobs)
    blob = await jobs.storage.put_bytes(f"jobs/{old.id}/upload", b"data")
    await _sql(jobs, "UPDATE ai_backend.jobs SET blobs = %s WHERE id = %s", [blob.key], old.id)
    for job in (old, recent):
        claimed = await store.claim(jobs.db, job.id, "w", 30)
        assert claimed is not None
        await store.finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b"1")
    await store.claim(jobs.db, running.id, "w", 30)
    days = jobs.settings.job_retention_days
    await _sql(
        jobs,
        "UPDATE ai_backend.jobs SET finished_at = now() - make_interval(days => %s) WHERE id = %s",
        int(days) + 1,
        old.id,
    )

    assert await maintenance.expire(jobs) >= 1

    assert await store.get(jobs.db, old.id) is None
    with pytest.raises(NotFound):
        await jobs.storage.read_bytes(blob.key)
    assert await store.get(jobs.db, recent.id) is not None
    assert await store.get(jobs.db, running.id) is not None
