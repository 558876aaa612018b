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
the attempt about a cancel or a lost job. The outcome is written by `jobs.outcome` (the terminal state,
a retry's re-queue, a release at shutdown), tried again for as long as the database is away.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import msgspec
from loguru import logger

from xenios_ai.errors import InvalidInput, JobCancelled, XeniosError
from xenios_ai.jobs import outcome, store
from xenios_ai.jobs.attempt import (
    AttemptContext,
    AttemptLost,
    AttemptReleased,
    time_limit_error,
)
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.maintenance import running_on_live_workers
from xenios_ai.jobs.models import Job, JobError, JobKind
from xenios_ai.jobs.runtime import Attempt, WorkerRuntime
from xenios_ai.jobs.sources import materialize
from xenios_ai.observability.metrics import observe_job_claimed
from xenios_ai.threads import raise_in_thread

Handler = Callable[[JobContext, Any], Any]
HARD_LIMIT_GRACE_SECONDS = 30.0
"""A sync handler that reaches no checkpoint is interrupted this long after its time limit."""
HARD_LIMIT_EXIT_SECONDS = 30.0
"""A sync handler still running this long after its interruption is stuck in native code: the worker
process exits (STUCK_EXIT_CODE) so that it is restarted."""
STUCK_EXIT_CODE = 70
_encoder = msgspec.json.Encoder()


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
        outcome.settle(runtime, attempt, "failed", error=error)
        return
    runtime.call(outcome.publish_state(runtime, job.id, "running"))
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
        result_json = _encoder.encode(result)
    except AttemptLost:
        logger.warning(
            "job {} attempt {} lost the job to another worker; dropping its work", job.id, job.attempts
        )
        outcome.count(attempt, "lost")
        runtime.call(outcome.forget_if_erased(runtime, attempt))
        return
    except AttemptReleased:
        outcome.release(runtime, attempt)
        return
    except JobCancelled:
        outcome.settle(runtime, attempt, "cancelled", error=outcome.CANCELLED)
        return
    except _HardTimeLimit:
        outcome.fail(runtime, attempt, time_limit_error(kind))
        return
    except XeniosError as exc:
        outcome.fail(runtime, attempt, exc)
        return
    except Exception as exc:
        logger.opt(exception=exc).error("job {} failed with an unexpected error", job.id)
        outcome.fail(runtime, attempt, XeniosError("the job failed unexpectedly; the error has been logged"))
        return
    outcome.settle(runtime, attempt, "succeeded", result_json=result_json, context=context)


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
