"""The job row's state machine, the sweep and retention, on a real PostgreSQL and Redis.

Every transition is a conditional UPDATE: these tests race them and replay them and look at the row.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import psycopg
import pytest

from tests.support.config import make_settings
from tests.support.jobs import WebhookReceiver
from tests.support.processes import ROOT
from xenios_ai.db.pool import Pool, open_pool
from xenios_ai.db.redis import open_redis
from xenios_ai.errors import Conflict, NotFound
from xenios_ai.extraction.job import EXTRACTION, ExtractionRequest
from xenios_ai.jobs import maintenance, store, store_maintenance
from xenios_ai.jobs.blob_keys import secret_key
from xenios_ai.jobs.models import Job, JobError, JobKind, RetryPolicy, Upload, UploadSpec
from xenios_ai.jobs.queues import WorkerInfo, broker_namespace, workers_key
from xenios_ai.jobs.service import WEBHOOK_ACTOR, JobService
from xenios_ai.jobs.webhooks import webhook_session
from xenios_ai.settings import Secret
from xenios_ai.storage import open_storage


class Echo(msgspec.Struct):
    text: str = "hi"


ECHO = JobKind(name="echo", queue="default", input_type=Echo, retry=RetryPolicy(max_attempts=2))
FILED = JobKind(
    name="filed",
    queue="default",
    input_type=Echo,
    upload=UploadSpec(sniff=lambda head, _: "text" if head.startswith(b"#") else None),
)
DOCUMENTS = ROOT / "tests" / "data" / "documents"


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


WEBHOOK_AFTER = 60.0
"""When a finished job's webhook becomes due for the sweep (WEBHOOK_RESEND_SECONDS)."""


async def _claim(db: Pool, job_id: uuid.UUID, worker_id: str, stale_seconds: float) -> Job | None:
    return await store.claim(db, job_id, worker_id, stale_seconds, webhook_after=WEBHOOK_AFTER)


async def _finish(db: Pool, job_id: uuid.UUID, attempt: int, status: str, **kwargs: Any) -> Job | None:
    return await store.finish(db, job_id, attempt, status, webhook_after=WEBHOOK_AFTER, **kwargs)


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
    claims = await asyncio.gather(*(_claim(jobs.db, job.id, f"w{i}", 30) for i in range(8)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    assert (won[0].status, won[0].attempts) == ("running", 1)


async def test_only_the_owning_attempt_finishes_and_only_once(jobs: JobService) -> None:
    job = await _submit(jobs)
    claimed = await _claim(jobs.db, job.id, "w", 30)
    assert claimed is not None
    assert await _finish(jobs.db, job.id, attempt=99, status="succeeded", result_json=b"{}") is None
    done = await _finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b'{"n": 1}')
    assert done is not None
    assert done.result == {"n": 1}
    assert done.progress == 1.0
    assert await _finish(jobs.db, job.id, claimed.attempts, "failed", error=JobError("x", "y")) is None
    # A redelivered message finds nothing to claim.
    assert await _claim(jobs.db, job.id, "w2", 30) is None
    assert (await jobs.get(job.id, "owner-a")).status == "succeeded"


async def test_a_stale_running_job_is_taken_over_and_the_old_attempt_is_shut_out(jobs: JobService) -> None:
    job = await _submit(jobs)
    first = await _claim(jobs.db, job.id, "dead-worker", 30)
    assert first is not None
    assert await _claim(jobs.db, job.id, "w2", 30) is None  # heartbeat fresh: not yours
    await _sql(
        jobs, "UPDATE ai_backend.jobs SET heartbeat_at = now() - interval '1 minute' WHERE id = %s", job.id
    )
    second = await _claim(jobs.db, job.id, "w2", 30)
    assert second is not None
    assert second.attempts == 2
    assert await store.report_progress(jobs.db, job.id, first.attempts, 0.5, "late") is None
    assert await store.heartbeat(jobs.db, {job.id: first.attempts}) == {}
    assert await _finish(jobs.db, job.id, first.attempts, "succeeded", result_json=b"1") is None
    assert await _finish(jobs.db, job.id, second.attempts, "succeeded", result_json=b"2") is not None


async def test_cancel_of_a_queued_job_is_final_and_it_never_runs(jobs: JobService) -> None:
    job = await _submit(jobs)
    cancelled = await jobs.cancel(job.id, "owner-a")
    assert cancelled.status == "cancelled"
    assert cancelled.error == JobError("cancelled", "the job was cancelled")
    assert await _claim(jobs.db, job.id, "w", 30) is None
    assert (await jobs.cancel(job.id, "owner-a")).status == "cancelled"  # idempotent


async def test_cancel_of_a_running_job_is_a_request_the_attempt_sees(jobs: JobService) -> None:
    job = await _submit(jobs)
    claimed = await _claim(jobs.db, job.id, "w", 30)
    assert claimed is not None
    requested = await jobs.cancel(job.id, "owner-a")
    assert requested.status == "running"
    assert requested.cancel_requested_at is not None
    assert await store.report_progress(jobs.db, job.id, claimed.attempts, 0.3, None) is True
    assert await store.heartbeat(jobs.db, {job.id: claimed.attempts}) == {job.id: True}
    # Success is refused once a cancel was asked; the attempt records cancelled instead.
    assert await _finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b"1") is None
    done = await _finish(
        jobs.db, job.id, claimed.attempts, "cancelled", error=JobError("cancelled", "the job was cancelled")
    )
    assert done is not None
    assert done.status == "cancelled"


async def test_cancel_of_a_finished_job_is_a_conflict_and_others_jobs_are_not_found(jobs: JobService) -> None:
    job = await _submit(jobs)
    claimed = await _claim(jobs.db, job.id, "w", 30)
    assert claimed is not None
    await _finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b"1")
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
    exhausted = await _submit(jobs, secret=b"pdf-password")
    for job in (stale, cancel_asked, exhausted):
        assert await _claim(jobs.db, job.id, "dead-worker", 30) is not None
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
    with pytest.raises(NotFound):  # the job ended: its secret went with its last attempt
        await jobs.storage.read_bytes(secret_key(exhausted.id))


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
        claimed = await _claim(jobs.db, job.id, "w", 30)
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
        claimed = await _claim(jobs.db, job.id, "w", 30)
        assert claimed is not None
        await _finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b"1")
    await _claim(jobs.db, running.id, "w", 30)
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


async def _make_stale(jobs: JobService, *job_ids: uuid.UUID, age: str = "1 hour") -> None:
    await _sql(
        jobs,
        "UPDATE ai_backend.jobs SET heartbeat_at = now() - %s::interval WHERE id = ANY(%s)",
        age,
        list(job_ids),
    )


async def test_the_sweep_never_puts_back_in_the_queue_a_job_it_should_end(jobs: JobService) -> None:
    cancel_asked, exhausted = await _submit(jobs), await _submit(jobs)
    for job in (cancel_asked, exhausted):
        assert await _claim(jobs.db, job.id, "dead-worker", 30) is not None
    await _sql(jobs, "UPDATE ai_backend.jobs SET cancel_requested_at = now() WHERE id = %s", cancel_asked.id)
    await _sql(jobs, "UPDATE ai_backend.jobs SET attempts = max_attempts WHERE id = %s", exhausted.id)
    # Older than any other test's rows: only these two are this stale. One row per pass: the second is
    # not in the first pass, and must not be re-queued past its cancel or attempt budget meanwhile.
    await _make_stale(jobs, cancel_asked.id, exhausted.id, age="10 days")
    passes = [
        await store_maintenance.sweep_stale(jobs.db, 9 * 86400, webhook_after=WEBHOOK_AFTER, limit=1)
        for _ in range(3)
    ]
    assert [(len(ended), requeued) for ended, requeued in passes] == [(1, 0), (1, 0), (0, 0)]
    assert (await jobs.get(cancel_asked.id, "owner-a")).status == "cancelled"
    assert (await jobs.get(exhausted.id, "owner-a")).status == "failed"


async def test_a_claim_ends_a_queued_job_whose_cancel_was_never_settled(jobs: JobService) -> None:
    job = await _submit(jobs)
    # What a sweep of two statements could leave: queued, a cancel requested, claimable by nobody.
    await _sql(jobs, "UPDATE ai_backend.jobs SET cancel_requested_at = now() WHERE id = %s", job.id)
    ended = await _claim(jobs.db, job.id, "w", 30)
    assert ended is not None
    assert (ended.status, ended.attempts, ended.worker_id, ended.started_at) == ("cancelled", 0, None, None)
    assert ended.error == JobError("cancelled", "the job was cancelled")
    assert ended.finished_at is not None
    assert await _claim(jobs.db, job.id, "w", 30) is None
    assert (await jobs.get(job.id, "owner-a")).status == "cancelled"


async def test_the_sweep_leaves_the_jobs_of_live_workers_alone(jobs: JobService) -> None:
    """After a database outage longer than STALE_JOB_SECONDS every running job's heartbeat is stale, but a
    worker that kept its registry entry fresh (Redis) is still running its jobs."""
    live, dead, orphan = await _submit(jobs), await _submit(jobs), await _submit(jobs)
    for job, worker in ((live, "live-worker"), (dead, "dead-worker"), (orphan, "live-worker")):
        assert await _claim(jobs.db, job.id, worker, 30) is not None
    await _make_stale(jobs, live.id, dead.id, orphan.id)
    now = time.time()
    registry = {
        "live-worker": WorkerInfo("live-worker", "h", 1, ["default"], now - 60, now, [str(live.id)]),
        "dead-worker": WorkerInfo("dead-worker", "h", 2, ["default"], now - 7200, now - 3600, [str(dead.id)]),
    }
    key = workers_key(jobs.settings.redis_namespace)
    await jobs.redis.hset(key, mapping={k: msgspec.json.encode(v) for k, v in registry.items()})
    try:
        await maintenance.sweep(jobs)
    finally:
        await jobs.redis.hdel(key, *registry)

    kept = await jobs.get(live.id, "owner-a")
    assert (kept.status, kept.attempts, kept.worker_id) == ("running", 1, "live-worker")
    for job in (dead, orphan):  # its worker is gone, or no longer runs it
        requeued = await jobs.get(job.id, "owner-a")
        assert (requeued.status, requeued.worker_id) == ("queued", None)


async def _messages(jobs: JobService, queue: str, actor: str, job_id: uuid.UUID) -> list[str]:
    """The Redis ids of the messages for ``actor(job_id)`` waiting in ``queue``."""
    namespace = broker_namespace(jobs.settings.redis_namespace)
    raw = await jobs.redis.hgetall(f"{namespace}:{queue}.msgs")
    found = {
        key if isinstance(key, str) else key.decode(): msgspec.json.decode(value)
        for key, value in raw.items()
    }
    return [key for key, m in found.items() if m["actor_name"] == actor and m["args"] == [str(job_id)]]


async def test_a_success_commits_its_follow_ups_and_webhook_with_it(jobs: JobService) -> None:
    """The worker dies right after the commit: the sweep sends the follow-up and queues the webhook,
    each once."""
    service = JobService(
        msgspec.structs.replace(jobs.settings, webhook_resend_seconds=60.0), jobs.db, jobs.redis, jobs.storage
    )
    parent = await _submit(service, webhook_url="https://hooks.example.com/xenios")
    claimed = await _claim(jobs.db, parent.id, "w", 30)
    assert claimed is not None
    child = store.FollowUpRow(
        id=uuid.uuid4(), kind=ECHO.name, queue=ECHO.queue, owner="owner-a", input_json=b'{"text": "next"}',
        max_attempts=2, webhook_url=parent.webhook_url, source_job_id=parent.id,
    )  # fmt: skip
    # A refused terminal write inserts nothing.
    assert (
        await store.finish(jobs.db, parent.id, 99, "succeeded", follow_ups=[child], webhook_after=0) is None
    )
    assert await store.get(jobs.db, child.id) is None

    done = await store.finish(
        jobs.db,
        parent.id,
        claimed.attempts,
        "succeeded",
        result_json=b"{}",
        follow_ups=[child],
        webhook_after=0,
    )
    assert done is not None
    assert done.webhook_due_at is not None
    waiting = await service.get(child.id, "owner-a")
    assert (waiting.status, waiting.enqueued_at, waiting.message_id) == ("queued", None, None)
    assert (waiting.source_job_id, waiting.webhook_url, waiting.input) == (
        parent.id,
        parent.webhook_url,
        {"text": "next"},
    )

    first = await maintenance.sweep(service)
    await maintenance.sweep(service)

    assert first.sent >= 1
    assert first.webhooks >= 1
    sent = await service.get(child.id, "owner-a")
    assert sent.enqueued_at is not None
    assert await _in_queue(jobs, sent)
    assert await _messages(jobs, "default", "job_echo", child.id) == [sent.message_id]
    assert len(await _messages(jobs, "default", WEBHOOK_ACTOR, parent.id)) == 1
    leased = await service.get(parent.id, "owner-a")
    assert leased.webhook_due_at is not None
    assert done.webhook_due_at < leased.webhook_due_at  # due again only if this delivery is lost too


async def test_webhook_delivery_ends_when_delivered_refused_or_out_of_attempts(jobs: JobService) -> None:
    settings = msgspec.structs.replace(jobs.settings, webhook_allow_private=True, webhook_max_attempts=2)
    service = JobService(settings, jobs.db, jobs.redis, jobs.storage)
    session = webhook_session(allow_private=True, timeout=5)
    try:
        with WebhookReceiver() as receiver:
            receiver.statuses = [410, 503, 503]
            refused = await _submit(service, webhook_url=receiver.url)
            flaky = await _submit(service, webhook_url=receiver.url)
            for job in (refused, flaky):
                claimed = await _claim(jobs.db, job.id, "w", 30)
                assert claimed is not None
                await _finish(jobs.db, job.id, claimed.attempts, "succeeded", result_json=b"1")

            await service.deliver_webhook(session, refused.id)
            gone = await service.get(refused.id, "owner-a")
            assert (gone.webhook_attempts, gone.webhook_delivered_at, gone.webhook_due_at) == (1, None, None)
            assert gone.webhook_error is not None
            assert "410" in gone.webhook_error

            await service.deliver_webhook(session, flaky.id)
            retrying = await service.get(flaky.id, "owner-a")
            assert retrying.webhook_attempts == 1
            assert retrying.webhook_due_at is not None  # the sweep queues the next try then
            await service.deliver_webhook(session, flaky.id)
            given_up = await service.get(flaky.id, "owner-a")
            assert (given_up.webhook_attempts, given_up.webhook_due_at) == (2, None)
            assert len(receiver.deliveries) == 3
    finally:
        await session.close()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_submit_cancelled_after_its_row_was_written_keeps_the_jobs_files(jobs: JobService) -> None:
    """Redis answers nothing: the message send hangs and the submit is cancelled (a client that went
    away) after the row was committed. The job is accepted, so its upload and secret stay."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mute = open_redis(msgspec.structs.replace(jobs.settings, redis_url=Secret(f"redis://127.0.0.1:{port}/0")))
    service = JobService(jobs.settings, jobs.db, mute, jobs.storage)
    job_id = uuid.uuid4()
    upload = await service.store_upload(FILED, job_id, "notes.md", _chunks(b"# notes\n"))
    try:
        submit = asyncio.create_task(
            service.submit(FILED, "owner-a", Echo(), upload=upload, job_id=job_id, secret=b"pw")
        )
        while await store.get(jobs.db, job_id) is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # now in the send
        submit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submit
    finally:
        await mute.aclose()
        server.close()
        await server.wait_closed()

    row = await jobs.get(job_id, "owner-a")
    assert row.status == "queued"
    assert await jobs.storage.read_bytes(upload.key) == b"# notes\n"
    assert await jobs.storage.read_bytes(secret_key(job_id)) == b"pw"
    assert sorted(row.blobs) == sorted([upload.key, secret_key(job_id)])


async def test_a_submit_whose_row_was_never_written_removes_its_files(jobs: JobService) -> None:
    job_id = uuid.uuid4()
    upload = await jobs.store_upload(FILED, job_id, "notes.md", _chunks(b"# notes\n"))
    with pytest.raises(psycopg.DataError):  # PostgreSQL text cannot hold NUL: the INSERT fails
        await jobs.submit(FILED, "owner\x00a", Echo(), upload=upload, job_id=job_id, secret=b"pw")
    assert await store.get(jobs.db, job_id) is None
    for key in (upload.key, secret_key(job_id)):
        with pytest.raises(NotFound):
            await jobs.storage.read_bytes(key)


async def test_cancelling_a_queued_extraction_deletes_its_pdf_password(jobs: JobService) -> None:
    job_id = uuid.uuid4()
    pdf = (DOCUMENTS / "encrypted.pdf").read_bytes()
    upload: Upload = await jobs.store_upload(EXTRACTION, job_id, "locked.pdf", _chunks(pdf))
    spec = EXTRACTION.upload
    assert spec is not None
    assert spec.split_secret is not None
    request, password = spec.split_secret(ExtractionRequest(password="open sesame"))
    submitted = await jobs.submit(
        EXTRACTION, "owner-a", request, upload=upload, job_id=job_id, secret=password
    )
    assert "open sesame" not in msgspec.json.encode(submitted.job.input).decode()
    assert await jobs.storage.read_bytes(secret_key(job_id)) == b"open sesame"

    cancelled = await jobs.cancel(job_id, "owner-a")

    assert cancelled.status == "cancelled"
    with pytest.raises(NotFound):
        await jobs.storage.read_bytes(secret_key(job_id))
    assert await jobs.storage.read_bytes(upload.key) == pdf  # the upload stays until retention
