"""What a job is: its row (`Job`), its states, and the declaration of a job kind (`JobKind`).

A kind is data: its queue, input and result types, handler, retry policy, time limit and, for kinds that
take a file, how uploads are checked. The API (submit) and the workers (run) read the same declaration:
a kind declares itself in its own package and `xenios_ai.kinds` registers it (see `jobs.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import msgspec

from xenios_ai.backoff import exponential
from xenios_ai.errors import XeniosError
from xenios_ai.jobs.queues import Queue
from xenios_ai.storage.sources import Source

if TYPE_CHECKING:
    from xenios_ai.settings import Settings

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

#: Time limit of one attempt, by queue (a kind may set its own).
QUEUE_TIME_LIMITS: dict[Queue, float] = {
    "default": 120.0,
    "llm": 600.0,
    "extraction": 1800.0,
    "transcription": 4 * 3600.0,
}


class JobError(msgspec.Struct, frozen=True):
    """A failed job's error: the stable XeniosError code and a message safe to show the caller."""

    code: str
    message: str


class Upload(msgspec.Struct, frozen=True, omit_defaults=True):
    """The file a job was submitted with, as stored."""

    key: str
    filename: str | None
    format: str
    size: int
    sha256: str
    more: tuple[Upload, ...] = ()
    """The further files of a several-file submit (a transcription's tracks), in order after this one."""

    @property
    def files(self) -> tuple[Upload, ...]:
        """This file and the further ones, in order."""
        return (self, *self.more)


class Job(msgspec.Struct, kw_only=True):
    """One row of ``ai_backend.jobs``."""

    id: UUID
    kind: str
    queue: str
    status: JobStatus
    owner: str
    input: dict[str, Any]
    upload: Upload | None = None
    source: Source | None = None
    """The reference a job was submitted with instead of a file (the worker turns it into ``upload``)."""
    result: Any = None
    error: JobError | None = None
    progress: float = 0.0
    progress_message: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    webhook_include_result: bool = False
    """The webhook's event carries the result (or, when large, a signed URL of it)."""
    webhook_attempts: int = 0
    webhook_delivered_at: datetime | None = None
    webhook_error: str | None = None
    webhook_due_at: datetime | None = None
    """Set while the webhook waits for (another) delivery attempt: the sweep hands it to the queue then."""
    source_job_id: UUID | None = None
    blobs: list[str] = msgspec.field(default_factory=list)
    message_id: str | None = None
    worker_id: str | None = None
    cancel_requested_at: datetime | None = None
    run_after: datetime | None = None
    created_at: datetime
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class FollowUp(msgspec.Struct, omit_defaults=True):
    """In a job's result: an analysis job started on the job's text (its ``then``), or why none was."""

    task: str
    job_id: UUID | None
    """Deprecated: the same as ``id``, kept for one release."""
    skipped: str | None = None
    """Set (and ``id`` null) when no job was created: a job without text has nothing to analyse."""
    id: UUID | None = None
    """The analysis job's id (every response names a job's id ``id``)."""

    def __post_init__(self) -> None:
        if self.id is None:
            self.id = self.job_id


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When an attempt that failed runs again. Attempts count claims: a crashed worker's attempt counts."""

    max_attempts: int = 3
    backoff_seconds: float = 2.0
    """Delay before the first retry; doubled for each further one, with jitter."""
    max_backoff_seconds: float = 300.0

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Only transient trouble (``XeniosError.retryable``: upstream unavailable or timed out) is retried."""
        return isinstance(exc, XeniosError) and exc.retryable and attempt < self.max_attempts

    def backoff(self, attempt: int) -> float:
        return exponential(
            self.backoff_seconds, max(0, attempt - 1), cap=self.max_backoff_seconds, jitter=(0.5, 1.0)
        )


_ACTOR_PREFIX = "job_"


def actor_name(kind: str) -> str:
    """The Dramatiq actor of the job kind named ``kind``: ``job_<kind>``."""
    return f"{_ACTOR_PREFIX}{kind}"


def kind_of_actor(actor: str) -> str | None:
    """The job kind an actor runs (see `actor_name`); None for other actors (the webhook's)."""
    return actor.removeprefix(_ACTOR_PREFIX) if actor.startswith(_ACTOR_PREFIX) else None


Sniffer = Callable[[bytes, str | None], str | None]
"""(first bytes, client's filename) -> the format's name, or None when the file is not accepted."""


@dataclass(frozen=True)
class UploadSpec:
    """How a kind's uploaded file is checked while it streams in."""

    sniff: Sniffer
    sniff_bytes: int = 8192
    """How many leading bytes `sniff` wants (fewer when the file is shorter)."""
    max_bytes: int | Callable[[Settings], int] | None = None
    """Largest file accepted, or a setting holding it (``lambda s: s.transcription_max_upload_bytes``);
    None: the MAX_UPLOAD_BYTES setting."""
    formats_hint: str = ""
    """Named in the 415 problem: what the kind accepts."""
    split_secret: Callable[[Any], tuple[msgspec.Struct, bytes | None]] | None = None
    """``split_secret(options)`` -> (the job's input, a secret): keeps a secret (a PDF's password) out of
    the job's row (see `JobService.submit`)."""
    max_files: int = 1
    """How many files one submit may carry (the ``file`` field repeated); the size limit applies to each
    and to their sum."""
    check_files: Callable[[Any, int], None] | None = None
    """``check_files(options, number of files)``: raises InvalidInput when the options do not fit."""

    def limit(self, settings: Settings) -> int:
        """The largest file accepted under ``settings``."""
        if self.max_bytes is None:
            return settings.max_upload_bytes
        return self.max_bytes(settings) if callable(self.max_bytes) else self.max_bytes


@dataclass(frozen=True)
class JobKind:
    """The declaration of a job kind, shared by the API (submit) and the workers (run)."""

    name: str
    queue: Queue
    input_type: type[msgspec.Struct]
    handler: Callable[..., Any] | None = None
    """``(ctx: JobContext, input) -> result``: ``async def`` runs on the worker's event loop, plain ``def``
    on the actor's thread (blocking engines). None: no actor is declared (a kind only submitted)."""
    result_type: type[msgspec.Struct] | None = None
    """What the handler returns (documentation; the row keeps it as JSON)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    time_limit_seconds: float | None = None
    """Per attempt; None: the queue's limit in QUEUE_TIME_LIMITS."""
    upload: UploadSpec | None = None
    """Set for kinds submitted with a file (multipart)."""
    text_of: Callable[[Any], str | None] | None = None
    """The text a follow-up analysis (``source_job_id``) reads from this kind's result."""
    release_on_shutdown: bool = False
    """A worker shutting down interrupts the attempt and puts the job back in the queue (long jobs);
    otherwise the worker lets it finish first."""
    prepare: Callable[[Settings], object] | None = None
    """Called once per worker process at boot, before it takes a job, when it serves the kind's queue
    (load an engine once); a XeniosError it raises stops the worker with its message."""

    @property
    def actor_name(self) -> str:
        return actor_name(self.name)

    @property
    def time_limit(self) -> float:
        return self.time_limit_seconds or QUEUE_TIME_LIMITS[self.queue]
