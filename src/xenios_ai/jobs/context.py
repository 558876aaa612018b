"""`JobContext`: everything a job handler may use besides its input.

Kinds import this (and `jobs.models`, `jobs.registry`, `jobs.followups`), never the worker runtime or
the job service: progress and cancellation, the uploaded file and blob storage, the job's secret, the
LLM router, and follow-up jobs. The worker's implementation lives in `jobs.runner`.
"""

from __future__ import annotations

from collections.abc import Coroutine
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from uuid import UUID

import msgspec

from xenios_ai.jobs.models import Job, JobKind

if TYPE_CHECKING:
    from xenios_ai.llm.router import LLMRouter
    from xenios_ai.settings import Settings

T = TypeVar("T")


class JobContext(Protocol):
    """What a handler gets besides its input (one per attempt)."""

    @property
    def job(self) -> Job:
        """The job's row as claimed by this attempt."""
        ...

    @property
    def settings(self) -> Settings: ...

    def checkpoint(self) -> None:
        """Raise if the job must stop here: cancelled, lost, released, or past its time limit."""
        ...

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress 0..1 (a checkpoint); written at most every JOB_PROGRESS_INTERVAL_SECONDS."""
        ...

    def progress_sync(self, fraction: float, message: str | None = None) -> None:
        """`progress` for sync handlers, from the job's thread."""
        ...

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the worker's event loop and wait for it (sync handlers, from their thread)."""
        ...

    def upload_file(self) -> AbstractContextManager[Path]:
        """The uploaded file as a local path while the context is open."""
        ...

    def upload_files(self) -> AbstractContextManager[list[Path]]:
        """Every uploaded file of a several-file submit (the first is `upload_file`'s), in order, as local
        paths while the context is open."""
        ...

    async def store_blob(self, name: str, data: bytes) -> str:
        """Keep a large part of the result in blob storage (``jobs/<id>/<name>``); its key."""
        ...

    async def read_secret(self) -> bytes | None:
        """The secret kept apart from the job's row at submit (a PDF's password), or None."""
        ...

    async def delete_secret(self) -> None:
        """Forget the job's secret (once it has served)."""
        ...

    async def source_job(self, job_id: UUID) -> Job | None:
        """Another job of the same owner (the source of an analysis), or None."""
        ...

    def llm(self) -> LLMRouter:
        """The process's LLM router (async handlers)."""
        ...

    def follow_up(self, kind: JobKind, input: msgspec.Struct) -> UUID:
        """Submit ``kind`` once this job has succeeded (same owner and webhook, ``source_job_id`` = this
        job); nothing if it fails. The new job's id, for this job's result."""
        ...
