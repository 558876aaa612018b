"""How a job attempt's outcome is written: the terminal state, a retry's re-queue, a release at shutdown.

The runner (`jobs.runner`) calls `settle`, `fail` or `release` once its handler has ended. Database
trouble: the attempt keeps its claim (it stays in the worker's ``running`` set, which the worker registry
lists and the sweep spares) until its outcome is written: the job's LLM usage rows first, then the
terminal write (or the retry's re-queue), each tried again with backoff for as long as the database is
away (capped at RECORD_BACKOFF_MAX_SECONDS between tries). So finished work is never run again because of
an outage; only a worker that shuts down gives up after FINISH_TRIES and leaves the job to the sweep. The
follow-up jobs and the webhook go into the same transaction as the terminal state (see `jobs.store`); the
follow-ups' messages are sent right after it (the sweep sends what is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.backoff import exponential
from xenios_ai.errors import XeniosError
from xenios_ai.jobs import events, store, store_maintenance
from xenios_ai.jobs.attempt import DB_ERRORS, AttemptContext
from xenios_ai.jobs.events import StateChanged
from xenios_ai.jobs.models import Job, JobError, actor_name
from xenios_ai.jobs.runtime import Attempt, WorkerRuntime
from xenios_ai.jobs.stewardship import delete_blobs
from xenios_ai.observability import joblog
from xenios_ai.observability.metrics import observe_job_attempt
from xenios_ai.throttle import OncePer

__all__ = ["CANCELLED", "count", "fail", "forget_if_erased", "publish_state", "release", "settle"]

T = TypeVar("T")
FINISH_TRIES = 5
"""Tries of a terminal write on database errors once the worker is shutting down (before that: until it
is written)."""
FINISH_BACKOFF_SECONDS = 0.2
"""The first wait before trying a failed write again; it doubles up to RECORD_BACKOFF_MAX_SECONDS."""
RECORD_BACKOFF_MAX_SECONDS = 2.0
_RECORD_ERRORS = (*DB_ERRORS, TimeoutError)
CANCELLED = JobError("cancelled", "the job was cancelled")

_record_failures = OncePer(10.0)
"""At most one warning every 10 s about outcomes waiting for the database."""


class _NotRecorded(Exception):
    """The terminal write kept failing on database errors."""


def fail(runtime: WorkerRuntime, attempt: Attempt, exc: XeniosError) -> None:
    job, policy = attempt.job, attempt.kind.retry
    error = JobError(exc.code, exc.detail)
    if attempt.cancel:
        settle(runtime, attempt, "cancelled", error=CANCELLED)
    elif policy.retries(exc, job.attempts):
        delay = policy.backoff(job.attempts)

        async def retry_later() -> bool:
            await _store_usage(runtime, attempt)
            return await _recorded(
                runtime, attempt, "its retry",
                lambda: store.retry_later(runtime.services.db, job.id, job.attempts, error, delay),
            )  # fmt: skip

        try:
            queued = runtime.call(retry_later())
        except _NotRecorded as why:
            logger.error(
                "job {} attempt {} could not record its retry ({}); the worker is stopping: the sweep "
                "puts the job back in the queue", job.id, job.attempts, why,
            )  # fmt: skip
            return
        if queued:
            logger.warning(
                "job {} attempt {} failed ({}); retrying in {:.1f} s", job.id, job.attempts, exc.code, delay
            )
            runtime.call(publish_state(runtime, job.id, "queued"))
            count(attempt, "retried")
        else:
            settle(runtime, attempt, "cancelled", error=CANCELLED)
    else:
        settle(runtime, attempt, "failed", error=error)


def settle(
    runtime: WorkerRuntime,
    attempt: Attempt,
    status: str,
    *,
    result_json: bytes | None = None,
    error: JobError | None = None,
    context: AttemptContext | None = None,
) -> None:
    runtime.call(_settle_async(runtime, attempt, status, result_json, error, context))


async def _settle_async(
    runtime: WorkerRuntime,
    attempt: Attempt,
    status: str,
    result_json: bytes | None,
    error: JobError | None,
    context: AttemptContext | None,
) -> None:
    services, job = runtime.services, attempt.job
    follow_ups = context.follow_up_rows() if context is not None and status == "succeeded" else []
    try:
        await _store_usage(runtime, attempt)  # before the result: a job that ended has its usage stored
        done = await _finish(runtime, attempt, status, result_json, error, follow_ups)
        if done is None and status == "succeeded":
            # A cancel arrived after the last checkpoint: the job ends cancelled, the result is dropped.
            status, error = "cancelled", CANCELLED
            done = await _finish(runtime, attempt, status, None, error, [])
    except _NotRecorded as exc:
        logger.error(
            "job {} attempt {} could not record {} ({}); the worker is stopping: the sweep puts the job "
            "back in the queue",
            job.id, job.attempts, status, exc,
        )  # fmt: skip
        return
    if done is None:
        logger.warning(
            "job {} attempt {} could not record {}: it no longer owns the job", job.id, job.attempts, status
        )
        await forget_if_erased(runtime, attempt)
        return
    status, error = done.status, done.error
    ms = (time.perf_counter() - attempt.started) * 1000
    outcome = f"{status} ({error.code}: {error.message})" if status == "failed" and error else status
    logger.bind(status=status, attempt=job.attempts, duration_ms=round(ms, 2)).log(
        "WARNING" if status == "failed" else "INFO",
        "job {} {} after {:.1f} ms, attempt {}/{}",
        job.id, outcome, ms, job.attempts, job.max_attempts,
    )  # fmt: skip
    count(attempt, status)
    if follow_ups and status == "succeeded":
        await _send_follow_ups(runtime, job.id, [row.id for row in follow_ups])
    await services.jobs.after_terminal(done)


async def _finish(
    runtime: WorkerRuntime,
    attempt: Attempt,
    status: str,
    result_json: bytes | None,
    error: JobError | None,
    follow_ups: list[store.FollowUpRow],
) -> Job | None:
    """The terminal write, tried until it is written (see `_recorded`). After a failed try, a refusal may
    mean that the failed try did commit (its answer was lost): the row tells."""
    db, job = runtime.services.db, attempt.job
    tried = False

    async def write() -> Job | None:
        nonlocal tried
        retry, tried = tried, True
        done = await store.finish(
            db, job.id, job.attempts, status, result_json=result_json, error=error, blobs=attempt.blobs,
            follow_ups=follow_ups, webhook_after=runtime.settings.webhook_resend_seconds,
        )  # fmt: skip
        if done is None and retry:
            row = await store.get(db, job.id)
            if row is not None and row.terminal and row.attempts == job.attempts:
                return row
        return done

    return await _recorded(runtime, attempt, status, write)


async def _store_usage(runtime: WorkerRuntime, attempt: Attempt) -> None:
    """Write the LLM usage rows waiting in this process (the attempt's among them) before its outcome: a
    worker killed after the outcome is written must not take the job's usage with it."""
    services = runtime.services

    async def flush() -> None:
        await services.flush_usage()

    await _recorded(runtime, attempt, "its LLM usage", flush)


async def _recorded(
    runtime: WorkerRuntime, attempt: Attempt, what: str, write: Callable[[], Awaitable[T]]
) -> T:
    """``write()``, tried again on database errors with backoff (FINISH_BACKOFF_SECONDS doubling up to
    RECORD_BACKOFF_MAX_SECONDS) for as long as the database is away, while the attempt keeps its claim:
    the worker registry lists the job, so the sweep leaves it alone. Raises _NotRecorded only when the
    worker is shutting down and FINISH_TRIES tries have failed."""
    job = attempt.job
    waited_since: float | None = None
    n = 0
    while True:
        try:
            value = await write()
        except _RECORD_ERRORS as exc:
            n += 1
            if runtime.stopping and n >= FINISH_TRIES:
                raise _NotRecorded(f"{type(exc).__name__}, {n} tries") from None
            if waited_since is None:
                waited_since = time.monotonic()
                logger.warning(
                    "job {} attempt {}: recording {} failed ({}); keeping the job and trying again",
                    job.id, job.attempts, what, type(exc).__name__,
                )  # fmt: skip
            elif _record_failures.ready():
                logger.warning(
                    "job {} attempt {}: still waiting for the database to record {} ({}, {:.0f} s)",
                    job.id, job.attempts, what, type(exc).__name__, time.monotonic() - waited_since,
                )  # fmt: skip
            await asyncio.sleep(exponential(FINISH_BACKOFF_SECONDS, n - 1, cap=RECORD_BACKOFF_MAX_SECONDS))
            continue
        if waited_since is not None:
            logger.info(
                "job {} attempt {}: recorded {} after waiting {:.1f} s for the database",
                job.id, job.attempts, what, time.monotonic() - waited_since,
            )  # fmt: skip
        return value


async def forget_if_erased(runtime: WorkerRuntime, attempt: Attempt) -> None:
    """When the job's row is gone (its owner's data was erased while it ran), delete what this attempt
    left behind: the files it stored and its log lines (`jobs.stewardship`)."""
    services, job = runtime.services, attempt.job
    try:
        if await store.get(services.db, job.id) is not None:
            return
        joblog.forget(job.id)
        await delete_blobs(services.storage, attempt.blobs)
    except Exception as exc:  # retention removes them at the latest
        logger.warning("files of erased job {} not deleted ({})", job.id, type(exc).__name__)
        return
    logger.info("job {} was erased while it ran; its work and files are dropped", job.id)


async def _send_follow_ups(runtime: WorkerRuntime, job_id: UUID, ids: list[UUID]) -> None:
    """Send the messages of the follow-up jobs committed with ``job_id``'s success; what is not sent here
    (Redis or the database down, or this process dies) the sweep sends."""
    services = runtime.services
    try:
        taken = await store_maintenance.take_due(services.db, ids=ids)
    except DB_ERRORS as exc:
        logger.warning("follow-ups of job {} left to the sweep ({})", job_id, type(exc).__name__)
        return
    for follow_up, kind, queue, message_id in taken:
        try:
            await services.jobs.enqueuer.send(
                queue, actor_name(kind), (str(follow_up),), message_id=message_id
            )
        except (RedisError, OSError, RuntimeError) as exc:
            logger.warning(
                "follow-up job {} not sent ({}); the sweep sends it", follow_up, type(exc).__name__
            )
            with contextlib.suppress(*DB_ERRORS):
                await store.set_message(services.db, follow_up, None)


async def publish_state(runtime: WorkerRuntime, job_id: UUID, status: str) -> None:
    await events.publish(
        runtime.services.redis, runtime.settings.redis_namespace, job_id, StateChanged(status)
    )


def release(runtime: WorkerRuntime, attempt: Attempt) -> None:
    job, services = attempt.job, runtime.services
    message_id = str(uuid.uuid4())

    async def release() -> None:
        if await store.release(services.db, job.id, job.attempts, message_id):
            await services.jobs.enqueuer.send(
                attempt.kind.queue, attempt.kind.actor_name, (str(job.id),), message_id=message_id
            )
            await publish_state(runtime, job.id, "queued")
            logger.info("job {} handed back to the queue at shutdown", job.id)
            count(attempt, "released")

    runtime.call(release())


def count(attempt: Attempt, outcome: str) -> None:
    """The attempt's outcome and duration in the job metrics (``xenios_job_attempts_total``)."""
    observe_job_attempt(attempt.kind.name, attempt.kind.queue, outcome, time.perf_counter() - attempt.started)
