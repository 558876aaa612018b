"""The context a job's handler gets: one `AttemptContext` per attempt, over the worker's runtime.

Checkpoints raise `AttemptLost` (the attempt no longer owns its job), `AttemptReleased` (the worker is
shutting down and hands the job back), `JobCancelled`, or the time-limit error; the runner
(`jobs.runner`) turns each into the job's outcome. Progress writes are throttled to
JOB_PROGRESS_INTERVAL_SECONDS; one that fails on the database is logged (at most once a minute) and skipped.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import msgspec
import psycopg
from loguru import logger
from psycopg_pool import PoolTimeout

from xenios_ai.errors import JobCancelled, LimitExceeded, NotFound, XeniosError
from xenios_ai.jobs import events, store
from xenios_ai.jobs.blob_keys import secret_key
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.events import Progress
from xenios_ai.jobs.models import Job, JobKind
from xenios_ai.jobs.runtime import Attempt, WorkerRuntime
from xenios_ai.jobs.worker_services import WorkerServices
from xenios_ai.throttle import OncePer

if TYPE_CHECKING:
    from xenios_ai.llm.router import LLMRouter
    from xenios_ai.settings import Settings

T = TypeVar("T")
DB_ERRORS = (psycopg.Error, PoolTimeout)
"""The errors of a database that is down or too busy: retried or skipped, never a job's failure."""
_encoder = msgspec.json.Encoder()


_progress_failures = OncePer(60.0)
"""At most one warning a minute about progress writes failing."""


class AttemptLost(BaseException):
    """The attempt no longer owns its job (taken over, or the row is gone)."""


class AttemptReleased(BaseException):
    """The worker is shutting down and hands the job back."""


def time_limit_error(kind: JobKind) -> LimitExceeded:
    return LimitExceeded(
        f"the job ran longer than its time limit of {kind.time_limit:g} s", code="time_limit_exceeded"
    )


class AttemptContext(JobContext):
    """The worker's `JobContext`: one per attempt, over the process's runtime and services."""

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
    def settings(self) -> Settings:
        return self._runtime.settings

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        return self._runtime.call(work)

    def llm(self) -> LLMRouter:
        return self.services.llm()

    async def read_secret(self) -> bytes | None:
        try:
            return await self.services.storage.read_bytes(secret_key(self.job.id))
        except NotFound:
            return None

    async def delete_secret(self) -> None:
        await self.services.storage.delete(secret_key(self.job.id))

    async def source_job(self, job_id: UUID) -> Job | None:
        return await store.get(self.services.db, job_id, self.job.owner)

    # -- checkpoints -------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        attempt = self._attempt
        if attempt.lost:
            raise AttemptLost
        if attempt.release:
            raise AttemptReleased
        if attempt.cancel:
            raise JobCancelled("the job was cancelled")
        if time.monotonic() > attempt.deadline:
            raise time_limit_error(attempt.kind)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Raises JobCancelled once the job was cancelled."""
        if self._write_due(fraction):
            await self._write_progress(fraction, message)
            self.checkpoint()

    def progress_sync(self, fraction: float, message: str | None = None) -> None:
        """Cheap between writes."""
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
        try:
            owned = await store.report_progress(
                self.services.db, self.job.id, attempt.token, fraction, message
            )
        except DB_ERRORS as exc:  # the job goes on; the heartbeat still tells a cancel or a lost job
            if _progress_failures.ready():
                logger.warning("job {} progress not recorded ({}); going on", self.job.id, type(exc).__name__)
            owned = False
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
        if self.job.upload is None:
            raise XeniosError(f"job {self.job.id} has no upload")
        with self.services.storage.local_file(self.job.upload.key) as path:
            yield path

    @contextlib.contextmanager
    def upload_files(self) -> Iterator[list[Path]]:
        if self.job.upload is None:
            raise XeniosError(f"job {self.job.id} has no upload")
        with contextlib.ExitStack() as stack:
            storage = self.services.storage
            yield [stack.enter_context(storage.local_file(upload.key)) for upload in self.job.upload.files]

    async def store_blob(self, name: str, data: bytes) -> str:
        """The blob goes with the job at retention."""
        blob = await self.services.storage.put_bytes(f"jobs/{self.job.id}/{name}", data)
        self._attempt.blobs.append(blob.key)
        return blob.key

    def follow_up(self, kind: JobKind, input: msgspec.Struct) -> UUID:
        """Inserted with this job's success, before it is announced (see `jobs.store.finish`)."""
        job_id = uuid.uuid4()
        self._follow_ups.append((kind, input, job_id))
        return job_id

    def follow_up_rows(self) -> list[store.FollowUpRow]:
        job = self.job
        return [
            store.FollowUpRow(
                id=job_id,
                kind=kind.name,
                queue=kind.queue,
                owner=job.owner,
                input_json=_encoder.encode(input),
                max_attempts=kind.retry.max_attempts,
                webhook_url=job.webhook_url,
                source_job_id=job.id,
                webhook_include_result=job.webhook_include_result,
            )
            for kind, input, job_id in self._follow_ups
        ]
