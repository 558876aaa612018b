"""The job runner in a worker runtime (its own loop thread, PostgreSQL, Redis), driven without Dramatiq.

Each test submits a job of a test kind and calls `execute` as a job actor would, then reads the row.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
import redis

from tests.support.config import make_settings
from tests.support.jobs import WebhookReceiver
from tests.support.processes import RedisServer, wait_until
from xenios_ai.errors import InvalidInput, NotFound, UpstreamUnavailable
from xenios_ai.jobs import maintenance, runner, store
from xenios_ai.jobs.blob_keys import secret_key
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.models import Job, JobKind, RetryPolicy, UploadSpec
from xenios_ai.jobs.queues import broker_namespace
from xenios_ai.jobs.runner import execute
from xenios_ai.jobs.runtime import WorkerRuntime


class Work(msgspec.Struct, kw_only=True):
    steps: int = 3
    sleep: float = 0.0
    fail: str | None = None


def _kind(name: str, **kwargs: Any) -> JobKind:
    return JobKind(name=name, queue="default", input_type=Work, **kwargs)


STEPS = _kind("steps")
FLAKY = _kind("flaky", retry=RetryPolicy(max_attempts=2, backoff_seconds=0.01))
QUICK = _kind("quick", time_limit_seconds=0.3)
LONG = _kind("long", release_on_shutdown=True)
UPLOADED = _kind(
    "uploaded", upload=UploadSpec(sniff=lambda head, _: "text" if head.startswith(b"#") else None)
)


@pytest.fixture(scope="module")
def runtime(fresh_env: Callable[..., dict[str, str]]) -> Iterator[WorkerRuntime]:
    settings = make_settings(
        fresh_env(), job_sweep_interval_seconds=3600.0, job_progress_interval_seconds=0.0
    )
    worker_runtime = WorkerRuntime(settings)
    worker_runtime.start()
    yield worker_runtime
    worker_runtime.stop()


def _submit(runtime: WorkerRuntime, kind: JobKind, work: Work | None = None) -> Job:
    return runtime.call(runtime.services.jobs.submit(kind, "owner", work or Work())).job


def _row(runtime: WorkerRuntime, job_id: uuid.UUID) -> Job:
    job = runtime.call(store.get(runtime.services.db, job_id))
    assert job is not None
    return job


def _in_background(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def stepping(ctx: JobContext, work: Work) -> dict[str, int]:
    for step in range(1, work.steps + 1):
        ctx.progress_sync(step / work.steps, f"step {step}")
        time.sleep(work.sleep)
    if work.fail == "user":
        raise InvalidInput("the input makes no sense", code="nonsense")
    if work.fail == "bug":
        raise RuntimeError("secret internals: password=hunter2")
    return {"steps": work.steps}


async def sleeping(ctx: JobContext, work: Work) -> dict[str, str]:
    await ctx.progress(0.1, "sleeping")
    await asyncio.sleep(work.sleep)
    return {"slept": "yes"}


def test_a_sync_job_reports_progress_and_succeeds(runtime: WorkerRuntime) -> None:
    job = _submit(runtime, STEPS, Work(steps=4))
    client = redis.Redis.from_url(runtime.settings.redis_url.get())  # type: ignore[union-attr]
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(f"{runtime.settings.redis_namespace}:job:{job.id}")

    execute(STEPS, stepping, str(job.id))

    done = _row(runtime, job.id)
    assert (done.status, done.attempts, done.result, done.progress) == ("succeeded", 1, {"steps": 4}, 1.0)
    assert done.progress_message == "step 4"
    events = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if (message := pubsub.get_message(timeout=0.1)) is not None:
            events.append(msgspec.json.decode(message["data"]))
    client.close()
    assert events[0] == {"type": "state", "status": "running"}
    assert [e["progress"] for e in events if e["type"] == "progress"] == [0.25, 0.5, 0.75, 1.0]
    assert events[-1] == {"type": "state", "status": "succeeded"}


def test_a_second_delivery_of_a_finished_job_does_nothing(runtime: WorkerRuntime) -> None:
    job = _submit(runtime, STEPS)
    execute(STEPS, stepping, str(job.id))
    calls = []
    execute(STEPS, lambda ctx, work: calls.append(1), str(job.id))
    assert calls == []
    assert _row(runtime, job.id).attempts == 1


def test_user_errors_fail_with_their_code_and_bugs_with_a_safe_message(runtime: WorkerRuntime) -> None:
    user = _submit(runtime, STEPS, Work(steps=1, fail="user"))
    bug = _submit(runtime, STEPS, Work(steps=1, fail="bug"))
    execute(STEPS, stepping, str(user.id))
    execute(STEPS, stepping, str(bug.id))
    failed = _row(runtime, user.id)
    assert (failed.status, failed.attempts) == ("failed", 1)  # never retried
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == (
        "nonsense",
        "the input makes no sense",
    )
    crashed = _row(runtime, bug.id)
    assert crashed.status == "failed"
    assert crashed.error is not None
    assert crashed.error.code == "internal_error"
    assert "hunter2" not in crashed.error.message


def test_invalid_stored_input_fails_the_job(runtime: WorkerRuntime) -> None:
    job = _submit(runtime, STEPS)
    runtime.call(
        _sql(runtime, 'UPDATE ai_backend.jobs SET input = \'{"steps": "many"}\' WHERE id = %s', job.id)
    )
    execute(STEPS, stepping, str(job.id))
    failed = _row(runtime, job.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.code == "invalid_input"


async def _sql(runtime: WorkerRuntime, query: str, *params: Any) -> None:
    async with runtime.services.db.connection() as conn:
        await conn.execute(query, params)


def test_transient_errors_are_retried_by_the_policy_then_fail(runtime: WorkerRuntime) -> None:
    def flaky(ctx: JobContext, work: Work) -> str:
        if work.fail == "always" or ctx.job.attempts == 1:
            raise UpstreamUnavailable("every model is down")
        return "recovered"

    recovers, never = _submit(runtime, FLAKY), _submit(runtime, FLAKY, Work(fail="always"))
    for job in (recovers, never):
        execute(FLAKY, flaky, str(job.id))
        waiting = _row(runtime, job.id)
        assert (waiting.status, waiting.attempts, waiting.enqueued_at) == ("queued", 1, None)
        assert waiting.run_after is not None
        assert waiting.error is not None
        assert waiting.error.code == "upstream_unavailable"
        execute(FLAKY, flaky, str(job.id))  # the sweep sends it once due; the next delivery runs it
    ok = _row(runtime, recovers.id)
    assert (ok.status, ok.attempts, ok.result) == ("succeeded", 2, "recovered")
    given_up = _row(runtime, never.id)
    assert (given_up.status, given_up.attempts) == ("failed", 2)
    assert given_up.error is not None
    assert given_up.error.code == "upstream_unavailable"


def test_cancel_stops_a_sync_job_at_its_next_checkpoint(runtime: WorkerRuntime) -> None:
    job = _submit(runtime, STEPS, Work(steps=1000, sleep=0.01))
    thread = _in_background(lambda: execute(STEPS, stepping, str(job.id)))
    wait_until(lambda: _row(runtime, job.id).progress > 0, 10, "progress", interval=0.01)
    runtime.call(runtime.services.jobs.cancel(job.id, "owner"))
    thread.join(5)
    assert not thread.is_alive()
    cancelled = _row(runtime, job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.progress < 0.5
    assert cancelled.result is None


def test_cancel_interrupts_an_async_job_at_once(runtime: WorkerRuntime) -> None:
    job = _submit(runtime, STEPS, Work(sleep=60))
    thread = _in_background(lambda: execute(STEPS, sleeping, str(job.id)))
    wait_until(lambda: _row(runtime, job.id).progress > 0, 10, "progress", interval=0.01)
    started = time.monotonic()
    runtime.call(runtime.services.jobs.cancel(job.id, "owner"))
    thread.join(5)
    assert time.monotonic() - started < 2
    assert _row(runtime, job.id).status == "cancelled"


def test_the_time_limit_fails_async_and_checkpointing_sync_jobs(runtime: WorkerRuntime) -> None:
    slow_async = _submit(runtime, QUICK, Work(sleep=5))
    slow_sync = _submit(runtime, QUICK, Work(steps=100, sleep=0.02))
    execute(QUICK, sleeping, str(slow_async.id))
    execute(QUICK, stepping, str(slow_sync.id))
    for job in (slow_async, slow_sync):
        failed = _row(runtime, job.id)
        assert failed.status == "failed"
        assert failed.error is not None
        assert failed.error.code == "time_limit_exceeded"


def _deaf(ctx: JobContext, work: Work) -> None:
    """A handler that never reaches a checkpoint."""
    while True:
        time.sleep(0.01)


def test_a_sync_job_deaf_to_checkpoints_is_interrupted_after_a_grace(
    runtime: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "HARD_LIMIT_GRACE_SECONDS", 0.2)

    job = _submit(runtime, QUICK)
    execute(QUICK, _deaf, str(job.id))
    failed = _row(runtime, job.id)
    assert failed.error is not None
    assert failed.error.code == "time_limit_exceeded"


def test_an_attempt_that_lost_its_job_changes_nothing(runtime: WorkerRuntime) -> None:
    def overtaken(ctx: JobContext, work: Work) -> str:
        ctx.progress_sync(0.1)
        # Another worker takes the job over (as after a stale heartbeat).
        runtime.call(
            _sql(runtime, "UPDATE ai_backend.jobs SET attempts = attempts + 1 WHERE id = %s", ctx.job.id)
        )
        ctx.progress_sync(0.5)
        return "must not be stored"

    job = _submit(runtime, STEPS)
    execute(STEPS, overtaken, str(job.id))
    row = _row(runtime, job.id)
    assert (row.status, row.attempts, row.result, row.progress) == ("running", 2, None, 0.1)


def test_worker_shutdown_hands_long_jobs_back_to_the_queue(runtime: WorkerRuntime) -> None:
    job = _submit(runtime, LONG, Work(sleep=60))
    thread = _in_background(lambda: execute(LONG, sleeping, str(job.id)))
    wait_until(lambda: _row(runtime, job.id).progress > 0, 10, "progress", interval=0.01)
    runtime.before_worker_shutdown(None, None)
    thread.join(5)
    released = _row(runtime, job.id)
    assert (released.status, released.attempts) == ("queued", 0)
    namespace = broker_namespace(runtime.settings.redis_namespace)

    async def in_queue() -> bool:
        return bool(
            await runtime.services.redis.hexists(f"{namespace}:default.msgs", released.message_id or "")
        )

    assert runtime.call(in_queue())


def test_follow_ups_are_submitted_only_after_success(runtime: WorkerRuntime) -> None:
    def with_follow_up(ctx: JobContext, work: Work) -> dict[str, str]:
        follow_up = ctx.follow_up(STEPS, Work(steps=1))
        if work.fail:
            raise InvalidInput("no")
        return {"follow_up": str(follow_up)}

    good, bad = _submit(runtime, STEPS), _submit(runtime, STEPS, Work(fail="yes"))
    execute(STEPS, with_follow_up, str(good.id))
    execute(STEPS, with_follow_up, str(bad.id))
    result = _row(runtime, good.id).result
    follow_up = _row(runtime, uuid.UUID(result["follow_up"]))
    assert (follow_up.status, follow_up.source_job_id, follow_up.owner) == ("queued", good.id, "owner")
    children = runtime.call(store.list_jobs(runtime.services.db, "owner"))
    assert not [child for child in children if child.source_job_id == bad.id]


def test_a_job_reads_its_upload_and_keeps_large_parts_as_blobs(runtime: WorkerRuntime) -> None:
    async def chunks() -> Any:
        yield b"# Title\n"
        yield b"body " * 1000

    def read_upload(ctx: JobContext, work: Work) -> dict[str, Any]:
        with ctx.upload_file() as path:
            size = path.stat().st_size
        key = runtime.call(ctx.store_blob("result.json", b"{}"))
        return {"size": size, "key": key}

    async def submit() -> Job:
        jobs, job_id = runtime.services.jobs, uuid.uuid4()
        upload = await jobs.store_upload(UPLOADED, job_id, "notes.md", chunks())
        return (await jobs.submit(UPLOADED, "owner", Work(), upload=upload, job_id=job_id)).job

    job = runtime.call(submit())
    assert job.upload is not None
    assert (job.upload.format, job.upload.size) == ("text", 5008)
    execute(UPLOADED, read_upload, str(job.id))
    done = _row(runtime, job.id)
    assert done.result == {"size": 5008, "key": f"jobs/{job.id}/result.json"}
    assert done.blobs == [f"jobs/{job.id}/upload", f"jobs/{job.id}/result.json"]


def test_a_deaf_jobs_pdf_password_is_deleted_when_its_time_limit_ends_it(
    runtime: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "HARD_LIMIT_GRACE_SECONDS", 0.2)

    job = runtime.call(runtime.services.jobs.submit(QUICK, "owner", Work(), secret=b"pdf-password")).job
    execute(QUICK, _deaf, str(job.id))
    assert _row(runtime, job.id).status == "failed"
    with pytest.raises(NotFound):
        runtime.call(runtime.services.storage.read_bytes(secret_key(job.id)))


def test_a_claimed_job_whose_cancel_was_never_settled_ends_cancelled_without_running(
    runtime: WorkerRuntime,
) -> None:
    job = _submit(runtime, STEPS)
    runtime.call(
        _sql(runtime, "UPDATE ai_backend.jobs SET cancel_requested_at = now() WHERE id = %s", job.id)
    )
    calls: list[int] = []
    execute(STEPS, lambda ctx, work: calls.append(1), str(job.id))
    assert calls == []
    cancelled = _row(runtime, job.id)
    assert (cancelled.status, cancelled.attempts) == ("cancelled", 0)
    assert cancelled.error is not None
    assert cancelled.error.code == "cancelled"


# -- database faults: a backend terminated while the statement waits (pg_terminate_backend) ------------


def _database_url(runtime: WorkerRuntime) -> str:
    assert runtime.settings.database_url is not None
    return runtime.settings.database_url.get()


def _terminate_waiting(url: str, statement: str) -> None:
    """Terminate the backend whose ``statement`` waits for a lock in this database (once it waits)."""
    with psycopg.connect(url, autocommit=True) as conn:

        def waiting() -> list[tuple[int]]:
            return conn.execute(
                """SELECT pid FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()
                     AND wait_event_type = 'Lock' AND query LIKE %s""",
                (f"%{statement}%",),
            ).fetchall()

        wait_until(lambda: bool(waiting()), 10, f"a statement like {statement!r} to wait", interval=0.01)
        for (pid,) in waiting():
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_progress_write_that_fails_on_the_database_does_not_fail_the_job(runtime: WorkerRuntime) -> None:
    url = _database_url(runtime)

    def stepping_through_a_fault(ctx: JobContext, work: Work) -> str:
        ctx.progress_sync(0.25, "before")
        with psycopg.connect(url) as locker:  # holds the row's lock until it leaves
            locker.execute("SELECT 1 FROM ai_backend.jobs WHERE id = %s FOR UPDATE", (ctx.job.id,))
            killer = _in_background(lambda: _terminate_waiting(url, "SET progress = "))
            ctx.progress_sync(0.5, "lost with its connection")
            killer.join(10)
            locker.rollback()
        ctx.progress_sync(1.0, "after")
        return "done"

    job = _submit(runtime, STEPS)
    execute(STEPS, stepping_through_a_fault, str(job.id))
    done = _row(runtime, job.id)
    assert (done.status, done.attempts, done.result, done.error) == ("succeeded", 1, "done", None)
    assert done.progress_message == "after"


def test_the_terminal_write_is_tried_again_after_a_database_error(runtime: WorkerRuntime) -> None:
    url = _database_url(runtime)
    unlocked = threading.Event()

    def returning_into_a_fault(ctx: JobContext, work: Work) -> str:
        locker = psycopg.connect(url)
        locker.execute("SELECT 1 FROM ai_backend.jobs WHERE id = %s FOR UPDATE", (ctx.job.id,))

        def kill_then_unlock() -> None:
            _terminate_waiting(url, "SET status = $1, result = ")
            locker.close()  # rolls back: the next try gets the row
            unlocked.set()

        _in_background(kill_then_unlock)
        return "kept"

    job = _submit(runtime, STEPS)
    execute(STEPS, returning_into_a_fault, str(job.id))
    assert unlocked.is_set()
    done = _row(runtime, job.id)
    assert (done.status, done.attempts, done.result) == ("succeeded", 1, "kept")


# -- what a job's end sets off survives a failure right after the commit ---------------------------------


def test_follow_ups_and_the_webhook_survive_redis_failing_right_after_the_commit(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    env = fresh_env(REDIS_URL=redis_server.url, WEBHOOK_ALLOW_PRIVATE="true")
    settings = make_settings(env, job_sweep_interval_seconds=3600.0, webhook_resend_seconds=1.0)
    own = WorkerRuntime(settings)
    own.start()
    try:
        with WebhookReceiver() as receiver:
            jobs = own.services.jobs
            parent = own.call(jobs.submit(STEPS, "owner", Work(), webhook_url=receiver.url)).job

            def succeeding_as_redis_stops(ctx: JobContext, work: Work) -> dict[str, str]:
                child = ctx.follow_up(STEPS, Work(steps=1))
                redis_server.stop()  # the commit lands; sending the follow-up and the webhook fails
                return {"follow_up": str(child)}

            execute(STEPS, succeeding_as_redis_stops, str(parent.id))

            done = _row(own, parent.id)
            child = _row(own, uuid.UUID(done.result["follow_up"]))
            assert done.status == "succeeded"
            assert (done.webhook_attempts, done.webhook_due_at is not None) == (0, True)
            assert (child.status, child.enqueued_at, child.source_job_id) == ("queued", None, parent.id)
            assert child.webhook_url == receiver.url

            redis_server.start()
            time.sleep(1.0)  # the webhook is due WEBHOOK_RESEND_SECONDS after the job ended
            first = own.call(maintenance.sweep(jobs))
            again = own.call(maintenance.sweep(jobs))
            assert (first.sent, first.webhooks, again.sent, again.webhooks) == (1, 1, 0, 0)
            sent = _row(own, child.id)
            assert sent.message_id is not None
            assert own.call(_queued_for(own, "default", "job_steps", child.id)) == [sent.message_id]
            assert len(own.call(_queued_for(own, "default", "deliver_webhook", parent.id))) == 1

            own.call(jobs.deliver_webhook(own.services.webhooks, parent.id))  # what that message runs
            delivered = _row(own, parent.id)
            assert (delivered.webhook_attempts, delivered.webhook_due_at) == (1, None)
            assert delivered.webhook_delivered_at is not None
            time.sleep(1.0)
            assert own.call(maintenance.sweep(jobs)).webhooks == 0
            assert len(receiver.deliveries) == 1
            assert msgspec.json.decode(receiver.deliveries[0][1])["type"] == "job.succeeded"
    finally:
        own.stop()
        redis_server.stop()


async def _queued_for(runtime: WorkerRuntime, queue: str, actor: str, job_id: uuid.UUID) -> list[str]:
    """The Redis ids of the messages for ``actor(job_id)`` waiting in ``queue``."""
    namespace = broker_namespace(runtime.settings.redis_namespace)
    raw = await runtime.services.redis.hgetall(f"{namespace}:{queue}.msgs")
    messages = {
        key if isinstance(key, str) else key.decode(): msgspec.json.decode(value)
        for key, value in raw.items()
    }
    return [key for key, m in messages.items() if m["actor_name"] == actor and m["args"] == [str(job_id)]]
