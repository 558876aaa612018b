"""The job runner: what every job actor does around its handler, and the context handlers get.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import msgspec
from dramatiq.middleware.threading import raise_thread_exception
from loguru import logger

from xenios_ai.errors import InvalidInput, JobCancelled, LimitExceeded, XeniosError
from xenios_ai.jobs import events, store
from xenios_ai.jobs.events import Progress, StateChanged
from xenios_ai.jobs.models import Job, JobError, JobKind
from xenios_ai.jobs.runtime import Attempt, WorkerRuntime, WorkerServices
from xenios_ai.observability.metrics import observe_job_attempt, observe_job_claimed

if TYPE_CHECKING:
    from xenios_ai.llm.router import LLMRouter

I = TypeVar("I", bound=msgspec.Struct)  # noqa: E741
Handler = Callable[["JobContext", Any], Any]
HARD_LIMIT_GRACE_SECONDS = 30.0
"""A sync handler that reaches no checkpoint is interrupted this long after its time limit."""
_encoder = msgspec.json.Encoder()
_CANCELLED = JobError("cancelled", "the job was cancelled")


class _Lost(BaseException):
    """The attempt no longer owns its job (taken over, or the row is gone)."""


class _Released(BaseException):
    """The worker is shutting down and hands the job back."""


class _HardTimeLimit(BaseException):
    """Raised into a sync handler's thread that ran far past its time limit."""


def _time_limit_error(kind: JobKind) -> LimitExceeded:
    return LimitExceeded(
        f"the job ran longer than its time limit of {kind.time_limit:g} s", code="time_limit_exceeded"
    )


class JobContext:
    """What a handler gets besides its input: the job, the services, progress and follow-up jobs."""

    def __init__(self, runtime: WorkerRuntime, attempt: Attempt) -> None:
        self._runtime = runtime
        self._attempt = attempt
        self._follow_ups: list[tuple[JobKind, msgspec.Struct, UUID]] = []
        self._interval = runtime.settings.job_progress_interval_seconds

    @property
    def job(self) -> Job:
        return self._attempt.job

    @property
    def services(self) -> WorkerServices:
        return self._runtime.services

    @property
    def settings(self) -> Any:
        return self._runtime.settings

    def llm(self) -> LLMRouter:
        """The process's LLM router (async handlers)."""
        return self.services.llm()

    # -- checkpoints -------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Raise if the job must stop here: cancelled, lost, released, or past its time limit."""
        attempt = self._attempt
        if attempt.lost:
            raise _Lost
        if attempt.release:
            raise _Released
        if attempt.cancel:
            raise JobCancelled("the job was cancelled")
        if time.monotonic() > attempt.deadline:
            raise _time_limit_error(attempt.kind)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress 0..1 (a checkpoint). Written and published at most every
        JOB_PROGRESS_INTERVAL_SECONDS; raises JobCancelled once the job was cancelled."""
        if self._write_due(fraction):
            await self._write_progress(fraction, message)
            self.checkpoint()

    def progress_sync(self, fraction: float, message: str | None = None) -> None:
        """`progress` for sync handlers, from the job's thread; cheap between writes."""
        if self._write_due(fraction):
            self._runtime.call(self._write_progress(fraction, message))
            self.checkpoint()

    def _write_due(self, fraction: float) -> bool:
        """A checkpoint, then whether this progress is to be written (the last write is old enough, or
        the work is done)."""
        self.checkpoint()
        now = time.monotonic()
        if now - self._attempt.last_write < self._interval and fraction < 1.0:
            return False
        self._attempt.last_write = now
        return True

    async def _write_progress(self, fraction: float, message: str | None) -> None:
        fraction = min(1.0, max(0.0, fraction))
        attempt = self._attempt
        owned = await store.report_progress(self.services.db, self.job.id, attempt.token, fraction, message)
        if owned is None:
            attempt.lost = True
        elif owned:
            attempt.cancel = True
        await events.publish(
            self.services.redis, self.settings.redis_namespace, self.job.id, Progress(fraction, message)
        )

    # -- files and follow-ups ----------------------------------------------------------------------

    @contextlib.contextmanager
    def upload_file(self) -> Iterator[Path]:
        """The uploaded file as a local path while the context is open."""
        if self.job.upload is None:
            raise XeniosError(f"job {self.job.id} has no upload")
        with self.services.storage.local_file(self.job.upload.key) as path:
            yield path

    async def store_blob(self, name: str, data: bytes) -> str:
        """Keep a large part of the result in blob storage (``jobs/<id>/<name>``); returns its key. The
        blob goes with the job at retention."""
        blob = await self.services.storage.put_bytes(f"jobs/{self.job.id}/{name}", data)
        self._attempt.blobs.append(blob.key)
        return blob.key

    def follow_up(self, kind: JobKind, input: msgspec.Struct) -> UUID:
        """Submit ``kind`` (same owner and webhook, ``source_job_id`` = this job) once this job has
        succeeded, before its success is announced; nothing if it fails. Returns the new job's id now,
        for this job's result."""
        job_id = uuid.uuid4()
        self._follow_ups.append((kind, input, job_id))
        return job_id

    async def _submit_follow_ups(self) -> None:
        for kind, input, job_id in self._follow_ups:
            await self.services.jobs.submit(
                kind, self.job.owner, input, source_job_id=self.job.id, job_id=job_id,
                webhook_url=self.job.webhook_url,
            )  # fmt: skip


def execute(kind: JobKind, handler: Handler, job_id: str) -> None:
    """Run one message of ``kind`` for ``job_id`` (the whole body of a job actor)."""
    runtime = WorkerRuntime.current()
    settings = runtime.settings
    job = runtime.call(
        store.claim(runtime.services.db, UUID(job_id), runtime.worker_id, settings.stale_job_seconds)
    )
    if job is None:
        logger.info("job {} is not waiting to run (finished, cancelled or running elsewhere)", job_id)
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
    context = JobContext(runtime, attempt)
    try:
        try:
            input = msgspec.convert(job.input, kind.input_type)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"the job's input is not valid: {exc}", code="invalid_input") from None
        if inspect.iscoroutinefunction(handler):
            result = runtime.call(_run_async(attempt, handler(context, input)))
        else:
            result = _run_sync(runtime, attempt, handler, context, input)
        outcome = _encoder.encode(result)
    except _Lost:
        logger.warning(
            "job {} attempt {} lost the job to another worker; dropping its work", job.id, job.attempts
        )
        _count(attempt, "lost")
        return
    except _Released:
        _release(runtime, attempt)
        return
    except JobCancelled:
        _settle(runtime, attempt, "cancelled", error=_CANCELLED)
        return
    except _HardTimeLimit:
        _fail(runtime, attempt, _time_limit_error(kind))
        return
    except XeniosError as exc:
        _fail(runtime, attempt, exc)
        return
    except Exception as exc:
        logger.opt(exception=exc).error("job {} failed with an unexpected error", job.id)
        _fail(runtime, attempt, XeniosError("the job failed unexpectedly; the error has been logged"))
        return
    finally:
        runtime.running.pop(job.id, None)
    _settle(runtime, attempt, "succeeded", result_json=outcome, context=context)


async def _run_async(attempt: Attempt, work: Awaitable[Any]) -> Any:
    attempt.task = asyncio.current_task()
    scope = asyncio.timeout(max(0.0, attempt.deadline - time.monotonic()))
    try:
        async with scope:
            return await work
    except TimeoutError:
        if scope.expired():
            raise _time_limit_error(attempt.kind) from None
        raise
    except asyncio.CancelledError:
        if attempt.lost:
            raise _Lost from None
        if attempt.release:
            raise _Released from None
        if attempt.cancel:
            raise JobCancelled("the job was cancelled") from None
        raise
    finally:
        attempt.task = None


def _run_sync(
    runtime: WorkerRuntime, attempt: Attempt, handler: Handler, context: JobContext, input: Any
) -> Any:
    thread_id = threading.get_ident()
    in_handler = True

    def hard_stop() -> None:
        with attempt.lock:
            if in_handler:
                logger.error("job {} ignored its time limit; interrupting its thread", attempt.job.id)
                raise_thread_exception(thread_id, _HardTimeLimit)  # type: ignore[no-untyped-call]

    delay = max(0.0, attempt.deadline - time.monotonic()) + HARD_LIMIT_GRACE_SECONDS
    timer = runtime.call(_call_later(delay, hard_stop))
    try:
        return handler(context, input)
    finally:
        with attempt.lock:
            in_handler = False
        runtime.call_soon(timer.cancel)


async def _call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)


def _fail(runtime: WorkerRuntime, attempt: Attempt, exc: XeniosError) -> None:
    job, policy = attempt.job, attempt.kind.retry
    error = JobError(exc.code, exc.detail)
    if attempt.cancel:
        _settle(runtime, attempt, "cancelled", error=_CANCELLED)
    elif policy.retries(exc, job.attempts):
        delay = policy.backoff(job.attempts)
        if runtime.call(store.retry_later(runtime.services.db, job.id, job.attempts, error, delay)):
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
    context: JobContext | None = None,
) -> None:
    runtime.call(_settle_async(runtime, attempt, status, result_json, error, context))


async def _settle_async(
    runtime: WorkerRuntime,
    attempt: Attempt,
    status: str,
    result_json: bytes | None,
    error: JobError | None,
    context: JobContext | None,
) -> None:
    services, job = runtime.services, attempt.job
    done = await store.finish(
        services.db, job.id, job.attempts, status, result_json=result_json, error=error, blobs=attempt.blobs
    )
    if done is None and status == "succeeded":
        # A cancel arrived after the last checkpoint: the job ends cancelled, the result is dropped.
        status, error = "cancelled", _CANCELLED
        done = await store.finish(services.db, job.id, job.attempts, status, error=error, blobs=attempt.blobs)
    if done is None:
        logger.warning(
            "job {} attempt {} could not record {}: it no longer owns the job", job.id, job.attempts, status
        )
        return
    ms = (time.perf_counter() - attempt.started) * 1000
    outcome = f"{status} ({error.code}: {error.message})" if status == "failed" and error else status
    logger.bind(status=status, attempt=job.attempts, duration_ms=round(ms, 2)).log(
        "WARNING" if status == "failed" else "INFO",
        "job {} {} after {:.1f} ms, attempt {}/{}",
        job.id, outcome, ms, job.attempts, job.max_attempts,
    )  # fmt: skip
    _count(attempt, status)
    if status == "succeeded" and context is not None:
        await context._submit_follow_ups()
    await services.jobs.after_terminal(done)


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
