"""The job runner: what every job actor does around its handler (the handler's context: `jobs.attempt`).

`execute` claims the job (a conditional UPDATE: a redelivered message for a finished, cancelled or
running job does nothing), runs the handler under the kind's time limit, and writes the outcome:

==========================================  =================================================
handler outcome                             job
==========================================  =================================================
returns a result                            succeeded (cancelled instead if a cancel came)
raises JobCancelled / cancel while awaiting cancelled
raises a retryable XeniosError              queued again after the policy's backoff, until
                                            attempts run out, then failed with its code
raises another XeniosError                  failed with its code and message
raises anything else                        failed ``internal_error``; traceback in the log only
runs past the time limit                    failed ``time_limit_exceeded``
the worker shuts down (release_on_shutdown) queued again, attempt not counted
the attempt lost the job (heartbeat stale)  nothing: the attempt that took over decides
==========================================  =================================================

Handlers are ``async def handler(ctx, input)`` (run on the runtime's loop) or plain ``def`` (run on the
actor's own thread: blocking engines), returning a msgspec-encodable result.

A sync handler that ignores its time limit gets an exception raised into its thread
HARD_LIMIT_GRACE_SECONDS after the limit. That only lands when the thread runs Python again: one stuck
in native code (a conversion inside a C library) cannot be stopped, so HARD_LIMIT_EXIT_SECONDS later the
worker process exits (Dramatiq, then compose or systemd, restart the worker; the job comes back through
the sweep, and its attempt cap ends it).

Database trouble: a progress write that fails is logged (throttled) and skipped, the heartbeat tells
the attempt about a cancel or a lost job. The attempt keeps its claim (it stays in the worker's
``running`` set, which the worker registry lists and the sweep spares) until its outcome is written:
the job's LLM usage rows first, then the terminal write (or the retry's re-queue), each tried again
with backoff for as long as the database is away (capped at RECORD_BACKOFF_MAX_SECONDS between tries).
So finished work is never run again because of an outage; only a worker that shuts down gives up after
FINISH_TRIES and leaves the job to the sweep. The follow-up jobs and the webhook go into the same
transaction as the terminal state (see `jobs.store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import msgspec
from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.backoff import exponential
from xenios_ai.errors import InvalidInput, JobCancelled, XeniosError
from xenios_ai.jobs import events, store, store_maintenance
from xenios_ai.jobs.attempt import (
    DB_ERRORS,
    AttemptContext,
    AttemptLost,
    AttemptReleased,
    time_limit_error,
)
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.events import StateChanged
from xenios_ai.jobs.maintenance import running_on_live_workers
from xenios_ai.jobs.models import Job, JobError, JobKind, actor_name
from xenios_ai.jobs.runtime import Attempt, WorkerRuntime
from xenios_ai.jobs.sources import materialize
from xenios_ai.jobs.stewardship import delete_blobs
from xenios_ai.observability import joblog
from xenios_ai.observability.metrics import observe_job_attempt, observe_job_claimed
from xenios_ai.threads import raise_in_thread
from xenios_ai.throttle import OncePer

if TYPE_CHECKING:
    pass

T = TypeVar("T")
Handler = Callable[[JobContext, Any], Any]
HARD_LIMIT_GRACE_SECONDS = 30.0
"""A sync handler that reaches no checkpoint is interrupted this long after its time limit."""
HARD_LIMIT_EXIT_SECONDS = 30.0
"""A sync handler still running this long after its interruption is stuck in native code: the worker
process exits (STUCK_EXIT_CODE) so that it is restarted."""
STUCK_EXIT_CODE = 70
FINISH_TRIES = 5
"""Tries of a terminal write on database errors once the worker is shutting down (before that: until it
is written)."""
FINISH_BACKOFF_SECONDS = 0.2
"""The first wait before trying a failed write again; it doubles up to RECORD_BACKOFF_MAX_SECONDS."""
RECORD_BACKOFF_MAX_SECONDS = 2.0
_RECORD_ERRORS = (*DB_ERRORS, TimeoutError)
_encoder = msgspec.json.Encoder()
_CANCELLED = JobError("cancelled", "the job was cancelled")


_record_failures = OncePer(10.0)
"""At most one warning every 10 s about outcomes waiting for the database."""


class _NotRecorded(Exception):
    """The terminal write kept failing on database errors."""


class _HardTimeLimit(BaseException):
    """Raised into a sync handler's thread that ran far past its time limit."""


def execute(kind: JobKind, handler: Handler, job_id: str) -> None:
    """Run one message of ``kind`` for ``job_id`` (the whole body of a job actor)."""
    runtime = WorkerRuntime.current()
    job = runtime.call(_claim(runtime, UUID(job_id)))
    if job is None:
        logger.info("job {} is not waiting to run (finished, cancelled or running elsewhere)", job_id)
        return
    if job.terminal:  # its cancel had not been settled: the claim did it
        logger.info("job {} was cancelled before it ran", job_id)
        runtime.call(runtime.services.jobs.after_terminal(job))
        return
    attempt = Attempt(job=job, kind=kind, deadline=time.monotonic() + kind.time_limit)
    observe_job_claimed(kind.name, kind.queue, time.time() - (job.enqueued_at or job.created_at).timestamp())
    if job.attempts > job.max_attempts:  # earlier attempts all died with their worker
        error = JobError("worker_lost", "the worker running the job stopped on every attempt")
        _settle(runtime, attempt, "failed", error=error)
        return
    runtime.call(_publish_state(runtime, job.id, "running"))
    logger.debug("job {} attempt {}/{} started", job.id, job.attempts, job.max_attempts)
    runtime.running[job.id] = attempt
    try:
        _run(runtime, attempt, kind, handler)
    finally:  # only once the outcome is written (or given up): until then the job is this worker's
        runtime.running.pop(job.id, None)


async def _claim(runtime: WorkerRuntime, job_id: UUID) -> Job | None:
    """The claim; a running job whose heartbeat is stale is taken over only when no live worker lists it
    (its database heartbeats failed during an outage, its worker did not: the sweep's rule)."""
    settings, db = runtime.settings, runtime.services.db
    job = await store.claim(
        db, job_id, runtime.worker_id, settings.stale_job_seconds, webhook_after=settings.webhook_resend_seconds,
        take_over=False,
    )  # fmt: skip
    if job is not None:
        return job
    row = await store.get(db, job_id)
    if row is None or row.status != "running":
        return None
    if job_id in await running_on_live_workers(runtime.services.jobs):
        logger.info("job {} is held by a live worker ({}); not taking it over", job_id, row.worker_id)
        return None
    return await store.claim(
        db,
        job_id,
        runtime.worker_id,
        settings.stale_job_seconds,
        webhook_after=settings.webhook_resend_seconds,
    )


def _run(runtime: WorkerRuntime, attempt: Attempt, kind: JobKind, handler: Handler) -> None:
    job = attempt.job
    context = AttemptContext(runtime, attempt)
    try:
        try:
            input = msgspec.convert(job.input, kind.input_type)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"the job's input is not valid: {exc}", code="invalid_input") from None
        if job.source is not None and job.upload is None:  # the source becomes the job's upload
            materialized = runtime.call(_run_async(attempt, materialize(runtime.services, job, kind)))
            if materialized is None:
                raise AttemptLost
            attempt.job = job = materialized
        if inspect.iscoroutinefunction(handler):
            result = runtime.call(_run_async(attempt, handler(context, input)))
        else:
            result = _run_sync(runtime, attempt, handler, context, input)
        outcome = _encoder.encode(result)
    except AttemptLost:
        logger.warning(
            "job {} attempt {} lost the job to another worker; dropping its work", job.id, job.attempts
        )
        _count(attempt, "lost")
        runtime.call(_forget_if_erased(runtime, attempt))
        return
    except AttemptReleased:
        _release(runtime, attempt)
        return
    except JobCancelled:
        _settle(runtime, attempt, "cancelled", error=_CANCELLED)
        return
    except _HardTimeLimit:
        _fail(runtime, attempt, time_limit_error(kind))
        return
    except XeniosError as exc:
        _fail(runtime, attempt, exc)
        return
    except Exception as exc:
        logger.opt(exception=exc).error("job {} failed with an unexpected error", job.id)
        _fail(runtime, attempt, XeniosError("the job failed unexpectedly; the error has been logged"))
        return
    _settle(runtime, attempt, "succeeded", result_json=outcome, context=context)


async def _run_async(attempt: Attempt, work: Awaitable[Any]) -> Any:
    attempt.task = asyncio.current_task()
    scope = asyncio.timeout(max(0.0, attempt.deadline - time.monotonic()))
    try:
        async with scope:
            return await work
    except TimeoutError:
        if scope.expired():
            raise time_limit_error(attempt.kind) from None
        raise
    except asyncio.CancelledError:
        if attempt.lost:
            raise AttemptLost from None
        if attempt.release:
            raise AttemptReleased from None
        if attempt.cancel:
            raise JobCancelled("the job was cancelled") from None
        raise
    finally:
        attempt.task = None


def _run_sync(
    runtime: WorkerRuntime, attempt: Attempt, handler: Handler, context: AttemptContext, input: Any
) -> Any:
    thread_id = threading.get_ident()
    in_handler = True

    timers: list[asyncio.TimerHandle] = []  # touched on the loop only

    def hard_stop() -> None:  # on the loop
        with attempt.lock:
            if not in_handler:
                return
            logger.error("job {} ignored its time limit; interrupting its thread", attempt.job.id)
            raise_in_thread(thread_id, _HardTimeLimit)
        timers.append(asyncio.get_running_loop().call_later(HARD_LIMIT_EXIT_SECONDS, give_up))

    def give_up() -> None:  # on the loop
        with attempt.lock:
            if not in_handler:
                return
        runtime.running.pop(attempt.job.id, None)  # no more heartbeats: the job is to be swept
        logger.critical(
            "job {} is stuck in native code {:g} s after its interruption; exiting the worker process "
            "(code {}) to be restarted", attempt.job.id, HARD_LIMIT_EXIT_SECONDS, STUCK_EXIT_CODE,
        )  # fmt: skip
        os._exit(STUCK_EXIT_CODE)

    delay = max(0.0, attempt.deadline - time.monotonic()) + HARD_LIMIT_GRACE_SECONDS
    timers.append(runtime.call(_call_later(delay, hard_stop)))
    try:
        return handler(context, input)
    finally:
        with attempt.lock:
            in_handler = False
        runtime.call_soon(_cancel_all, timers)


async def _call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)


def _cancel_all(timers: list[asyncio.TimerHandle]) -> None:
    for timer in timers:
        timer.cancel()


def _fail(runtime: WorkerRuntime, attempt: Attempt, exc: XeniosError) -> None:
    job, policy = attempt.job, attempt.kind.retry
    error = JobError(exc.code, exc.detail)
    if attempt.cancel:
        _settle(runtime, attempt, "cancelled", error=_CANCELLED)
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
            runtime.call(_publish_state(runtime, job.id, "queued"))
            _count(attempt, "retried")
        else:
            _settle(runtime, attempt, "cancelled", error=_CANCELLED)
    else:
        _settle(runtime, attempt, "failed", error=error)


def _settle(
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
            status, error = "cancelled", _CANCELLED
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
        await _forget_if_erased(runtime, attempt)
        return
    status, error = done.status, done.error
    ms = (time.perf_counter() - attempt.started) * 1000
    outcome = f"{status} ({error.code}: {error.message})" if status == "failed" and error else status
    logger.bind(status=status, attempt=job.attempts, duration_ms=round(ms, 2)).log(
        "WARNING" if status == "failed" else "INFO",
        "job {} {} after {:.1f} ms, attempt {}/{}",
        job.id, outcome, ms, job.attempts, job.max_attempts,
    )  # fmt: skip
    _count(attempt, status)
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


async def _forget_if_erased(runtime: WorkerRuntime, attempt: Attempt) -> None:
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


async def _publish_state(runtime: WorkerRuntime, job_id: UUID, status: str) -> None:
    await events.publish(
        runtime.services.redis, runtime.settings.redis_namespace, job_id, StateChanged(status)
    )


def _release(runtime: WorkerRuntime, attempt: Attempt) -> None:
    job, services = attempt.job, runtime.services
    message_id = str(uuid.uuid4())

    async def release() -> None:
        if await store.release(services.db, job.id, job.attempts, message_id):
            await services.jobs.enqueuer.send(
                attempt.kind.queue, attempt.kind.actor_name, (str(job.id),), message_id=message_id
            )
            await _publish_state(runtime, job.id, "queued")
            logger.info("job {} handed back to the queue at shutdown", job.id)
            _count(attempt, "released")

    runtime.call(release())


def _count(attempt: Attempt, outcome: str) -> None:
    """The attempt's outcome and duration in the job metrics (``xenios_job_attempts_total``)."""
    observe_job_attempt(attempt.kind.name, attempt.kind.queue, outcome, time.perf_counter() - attempt.started)
