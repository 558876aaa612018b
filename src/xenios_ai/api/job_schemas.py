"""The bodies of the job routes (`api.jobs`): the 202 of a submit, a job as read, a page of jobs, the
analysis request, and how a `jobs.models.Job` row becomes each (the routes' links included).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Response

from xenios_ai.analysis import AnalysisInput
from xenios_ai.jobs.models import Job, JobError, JobStatus, Upload
from xenios_ai.jobs.service import Submitted
from xenios_ai.storage.sources import Source

__all__ = [
    "AnalysisRequest",
    "JobAccepted",
    "JobLinks",
    "JobOut",
    "JobPage",
    "JobSummary",
    "UploadInfo",
    "WebhookInfo",
    "accepted",
    "job_out",
    "job_summary",
    "links",
    "upload_info",
]


class JobLinks(msgspec.Struct):
    self_: str = msgspec.field(name="self")
    events: str


class JobAccepted(msgspec.Struct, kw_only=True):
    id: UUID
    """The job's id, as in every job object."""
    job_id: Annotated[UUID, msgspec.Meta(description="Deprecated: the same as `id`, kept for one release.")]
    status: JobStatus
    links: JobLinks


class UploadInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    filename: str | None
    format: str
    size: int
    more: list[UploadInfo] = msgspec.field(default_factory=list)
    """The further files of a several-file submit (a transcription's tracks), in order."""


def upload_info(upload: Upload) -> UploadInfo:
    return UploadInfo(
        filename=upload.filename,
        format=upload.format,
        size=upload.size,
        more=[upload_info(file) for file in upload.more],
    )


class WebhookInfo(msgspec.Struct, kw_only=True):
    url: str
    attempts: int
    delivered_at: datetime | None
    error: str | None


class JobSummary(msgspec.Struct, kw_only=True):
    id: UUID
    kind: str
    status: JobStatus
    progress: float
    progress_message: str | None
    attempts: int
    cancel_requested: bool
    error: JobError | None
    source_job_id: UUID | None
    upload: UploadInfo | None
    source: Source | None = None
    """The reference the job was submitted with instead of a file (``storage_key`` or ``url``)."""
    webhook: WebhookInfo | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: JobLinks


class JobOut(JobSummary, kw_only=True):
    result: Any
    """The kind's result once succeeded (an analysis: task, content, model, fallback_used, usage)."""


class JobPage(msgspec.Struct, kw_only=True):
    items: list[JobSummary]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; null on the last page."""


class AnalysisRequest(AnalysisInput, kw_only=True):
    """An analysis job: a task over ``text``, or over a succeeded job's text (``source_job_id``)."""

    webhook_url: str | None = None
    """Called (Standard Webhooks, signed) when the job reaches a terminal state."""
    webhook_include_result: bool = False
    """The webhook's event carries the result (``data.result``; when large, ``data.result_url``)."""


def links(job_id: UUID) -> JobLinks:
    return JobLinks(f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/events")


def _summary_fields(job: Job) -> dict[str, Any]:
    upload = job.upload
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested_at is not None,
        "error": job.error,
        "source_job_id": job.source_job_id,
        "upload": upload_info(upload) if upload else None,
        "source": job.source,
        "webhook": WebhookInfo(
            url=job.webhook_url,
            attempts=job.webhook_attempts,
            delivered_at=job.webhook_delivered_at,
            error=job.webhook_error,
        )
        if job.webhook_url
        else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "links": links(job.id),
    }


def job_summary(job: Job) -> JobSummary:
    return JobSummary(**_summary_fields(job))


def job_out(job: Job) -> JobOut:
    return JobOut(**_summary_fields(job), result=job.result)


def accepted(submitted: Submitted) -> Response[JobAccepted]:
    """202 with the job's id, status and links (the same job again for an idempotent replay)."""
    job = submitted.job
    headers = {"Location": f"/api/v1/jobs/{job.id}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        JobAccepted(id=job.id, job_id=job.id, status=job.status, links=links(job.id)),
        status_code=202,
        headers=headers,
    )
