"""The job runner in a worker runtime (its own loop thread, PostgreSQL, Redis), driven without Dramatiq.

Each test submits a job of a test kind and calls `execute` as a job actor would, then reads the row.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
import redis

from tests.conftest import make_settings
from tests.support.processes import wait_until
from xenios_ai.errors import InvalidInput, UpstreamUnavailable
from xenios_ai.jobs import runner, store
from xenios_ai.jobs.models import Job, JobKind, RetryPolicy, UploadSpec
from xenios_ai.jobs.queues import broker_namespace
from xenios_ai.jobs.runner import JobContext, execute
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


def test_a_sync_job_deaf_to_checkpoints_is_interrupted_after_a_grace(
    runtime: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "HARD_LIMIT_GRACE_SECONDS", 0.2)

    def deaf(ctx: JobContext, work: Work) -> None:
        while True:
            time.sleep(0.01)

    job = _submit(runtime, QUICK)
    execute(QUICK, deaf, str(job.id))
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
