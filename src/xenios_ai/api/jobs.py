"""Job routes: submit (202 + links), get, list, cancel, and follow a job's events (SSE).

Submits and cancel act for the caller (the JWT's ``sub``): another user's job is 404, never 403. The reads
(get, list, events, result parts) also take the API key alone, for the MVP's backend acting on its own (a
webhook handler fetching the result it was told about): then any owner's job is read, and the list needs
``owner``. With a JWT, ``owner`` may only name the caller (403 ``owner_mismatch``).
Routes for kinds submitted with a file are a few lines over `api.uploads.receive_upload`::

    @post("/extraction", status_code=202, guards=[limit_job_submits], request_max_body_size=None)
    async def submit_extraction(self, request: Request, services: ServicesDep, principal: PrincipalDep,
                                idempotency_key: IdempotencyKey = None) -> Response[JobAccepted]:
        return accepted(await receive_upload(request, services.jobs, EXTRACTION, principal.user_id,
                                             idempotency_key=idempotency_key))
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody, Parameter, QueryParameter
from litestar.response import Stream

from xenios_ai.analysis import ANALYSIS, AnalysisInput, check_source
from xenios_ai.api.auth import Principal, allow_service, require_user
from xenios_ai.api.deps import PrincipalDep, ReaderDep, ServicesDep
from xenios_ai.api.job_schemas import (
    AnalysisRequest,
    JobAccepted,
    JobOut,
    JobPage,
    accepted,
    job_out,
    job_summary,
)
from xenios_ai.api.ratelimit import limit_job_submits
from xenios_ai.api.sse import EventStream, event
from xenios_ai.api.uploads import receive_upload
from xenios_ai.errors import Conflict, Forbidden, InvalidInput, NotFound
from xenios_ai.extraction.job import EXTRACTION
from xenios_ai.jobs.blob_keys import is_upload_key, secret_key
from xenios_ai.jobs.models import Job, JobStatus
from xenios_ai.jobs.service import StreamItem
from xenios_ai.jobs.webhooks import result_url_valid
from xenios_ai.settings_load import webhook_key
from xenios_ai.transcription.formats import MEDIA_TYPES, TranscriptFormat, render
from xenios_ai.transcription.job import TRANSCRIPTION

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retrying a submit with the same key returns the same job (a different body: 409).",
    ),
]
Owner = Annotated[
    str | None,
    QueryParameter(
        name="owner",
        min_length=1,
        max_length=255,
        description="The user (Supabase `sub`) whose jobs to read. Needed by a service read (the API key "
        "without a user JWT) of the list; with a JWT it may only name the caller (403 `owner_mismatch`).",
    ),
]
_encode = msgspec.json.Encoder().encode
USER: list[dict[str, list[str]]] = [{"apiKey": [], "supabaseJWT": []}]
"""OpenAPI security of the user's routes: the API key and the user's JWT."""
USER_OR_SERVICE: list[dict[str, list[str]]] = [{"apiKey": [], "supabaseJWT": []}, {"apiKey": []}]
"""OpenAPI security of the reads: the API key and a user's JWT, or the API key alone (any owner)."""


async def _sse(items: AsyncIterator[StreamItem]) -> AsyncIterator[bytes]:
    async for name, value in items:
        if name == "state":
            assert isinstance(value, Job)
            yield event("state", _encode(job_out(value)))
        elif name == "progress":
            yield event("progress", _encode(value))


def read_owner(reader: Principal | None, owner: str | None) -> str | None:
    """Whose jobs a read may see: the JWT's user (``owner`` may only repeat it), or for a service read
    ``owner`` when given, else anyone's (None)."""
    if reader is None:
        return owner
    if owner is not None and owner != reader.user_id:
        raise Forbidden("owner: a user's token reads only that user's jobs", code="owner_mismatch")
    return reader.user_id


class JobsController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @post(
        "/analysis",
        status_code=202,
        guards=[require_user, limit_job_submits],
        security=USER,
        summary="Submit an analysis job (session summary, insights)",
    )
    async def submit_analysis(
        self,
        data: JSONBody[AnalysisRequest],
        services: ServicesDep,
        principal: PrincipalDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[JobAccepted]:
        jobs, owner = services.jobs, principal.user_id
        if data.source_job_id is not None:
            check_source(await jobs.get(data.source_job_id, owner))
        job_input = AnalysisInput(
            task=data.task, text=data.text, source_job_id=data.source_job_id, options=data.options
        )
        submitted = await jobs.submit(
            ANALYSIS, owner, job_input, idempotency_key=idempotency_key, source_job_id=data.source_job_id,
            webhook_url=await jobs.check_webhook(data.webhook_url),
            webhook_include_result=data.webhook_include_result,
        )  # fmt: skip
        return accepted(submitted)

    @post(
        "/transcription",
        status_code=202,
        guards=[require_user, limit_job_submits],
        security=USER,
        request_max_body_size=None,
        summary="Submit a transcription job (multipart audio upload, or a storage key or URL)",
        description='Or, instead of a file, `application/json`: `{"source": {"storage_key": "..."}}` (an object in the configured bucket under SOURCE_STORAGE_PREFIXES) or `{"source": {"url": "..."}}` (an https URL on a host in SOURCE_URL_ALLOWED_HOSTS), with optional `options`, `webhook_url`, `webhook_include_result`; the worker fetches it (failures: source_not_found, source_forbidden, source_too_large, source_unreachable). '
        "multipart/form-data with `file` (WAV, MP3, M4A/AAC, OGG/Opus, WebM, FLAC or MP4; the "
        "type is read from the bytes: 415 otherwise; 413 past TRANSCRIPTION_MAX_UPLOAD_BYTES), optional "
        "`options` as JSON: `language` (ISO 639-1; null detects), `word_timestamps` (false), `vad` (true), "
        "`initial_prompt`, `hotwords`, `speakers` (names in channel or track order, e.g. "
        '`["Coach", "Client"]`), `channels` (`auto`: each channel is a speaker when the channels differ; '
        "`separate`; `mix`), `track_offsets` (seconds each file starts at, for several files), `then` "
        "(analysis tasks run on the transcript when it succeeds, e.g. "
        '`["session_summary", "insight_generation"]`), and optional `webhook_url`. Repeat `file` (up to 8) '
        "for one track per person, merged into one timeline (the size limit applies to each file and to "
        "their sum). The result: `text`, `segments` (start, end, text, `speaker` when known, words when "
        "asked), `speakers` (name, talk_seconds, word_count), `speaker_source`, `language`, `duration`, "
        "`model`, `real_time_factor`, `follow_ups` (task and job_id of each `then` job). The transcript as "
        "a file: `result/transcript.txt`, `.srt`, `.vtt`.",
    )
    async def submit_transcription(
        self,
        request: Request[Any, Any, Any],
        services: ServicesDep,
        principal: PrincipalDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[JobAccepted]:
        return accepted(
            await receive_upload(
                request, services.jobs, TRANSCRIPTION, principal.user_id, idempotency_key=idempotency_key
            )
        )

    @post(
        "/extraction",
        status_code=202,
        guards=[require_user, limit_job_submits],
        security=USER,
        request_max_body_size=None,
        summary="Submit a document extraction job (multipart upload, or a storage key or URL)",
        description='Or, instead of a file, `application/json`: `{"source": {"storage_key": "..."}}` (an object in the configured bucket under SOURCE_STORAGE_PREFIXES) or `{"source": {"url": "..."}}` (an https URL on a host in SOURCE_URL_ALLOWED_HOSTS), with optional `options`, `webhook_url`, `webhook_include_result`; the worker fetches it (failures: source_not_found, source_forbidden, source_too_large, source_unreachable). '
        "multipart/form-data with `file` (PDF, DOCX, PPTX, XLSX, HTML, Markdown or CSV; the type "
        "is read from the bytes: 415 otherwise; 413 past EXTRACTION_MAX_UPLOAD_BYTES), optional `options` as "
        'JSON: `output_formats` (`["markdown", "json"]`; also `text`), `chunking` (true), `chunk_max_tokens` '
        "(512), `page_range` ([first, last], 1-based), `password` (encrypted PDFs; never stored in the job), "
        '`then` (analysis tasks run on the markdown when it succeeds, e.g. `["session_summary"]`), and '
        "optional `webhook_url`. The result: `markdown`, `text`, `document` (Docling JSON; when large, "
        "`document_file.url` instead), `page_count`, `pages` (status per page), `failed_pages`, `chunks` "
        "(text, headings, pages), `warnings`, `follow_ups` (task and job_id of each `then` job). Failures: "
        "password_required, password_invalid, unreadable_document, unsupported_format, invalid_page_range, "
        "too_many_pages, document_too_large, document_timeout, layout_models_unavailable.",
    )
    async def submit_extraction(
        self,
        request: Request[Any, Any, Any],
        services: ServicesDep,
        principal: PrincipalDep,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[JobAccepted]:
        return accepted(
            await receive_upload(
                request, services.jobs, EXTRACTION, principal.user_id, idempotency_key=idempotency_key
            )
        )

    @get(
        "/{job_id:uuid}",
        guards=[allow_service],
        security=USER_OR_SERVICE,
        summary="A job: status, progress, result or error",
    )
    async def get_job(
        self, job_id: FromPath[UUID], services: ServicesDep, reader: ReaderDep, owner: Owner = None
    ) -> JobOut:
        return job_out(await services.jobs.get(job_id, read_owner(reader, owner)))

    @get(
        "/",
        guards=[allow_service],
        security=USER_OR_SERVICE,
        summary="A user's jobs, newest first, cursor-paginated",
        description="The caller's jobs; a service read (no user JWT) names the user in `owner` (422 "
        "`owner_required` without it).",
    )
    async def list_jobs(
        self,
        services: ServicesDep,
        reader: ReaderDep,
        owner: Owner = None,
        status: Annotated[list[JobStatus] | None, Parameter(description="Only these states")] = None,
        kind: Annotated[str | None, Parameter(max_length=64)] = None,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    ) -> JobPage:
        whose = read_owner(reader, owner)
        if whose is None:
            raise InvalidInput("owner: a service read of the list names the user", code="owner_required")
        jobs, next_cursor = await services.jobs.list(
            whose, statuses=status or (), kind=kind, cursor=cursor, limit=limit
        )
        return JobPage(items=[job_summary(job) for job in jobs], next_cursor=next_cursor)

    @post(
        "/{job_id:uuid}/cancel",
        status_code=200,
        guards=[require_user],
        security=USER,
        summary="Cancel a job (a running one stops at its next checkpoint); the job stays readable",
    )
    async def cancel_job(
        self, job_id: FromPath[UUID], services: ServicesDep, principal: PrincipalDep
    ) -> JobOut:
        return job_out(await services.jobs.cancel(job_id, principal.user_id))

    @delete(
        "/{job_id:uuid}",
        status_code=200,
        guards=[require_user],
        security=USER,
        deprecated=True,
        summary="Cancel a job: deprecated, use POST /api/v1/jobs/{job_id}/cancel (removed next release)",
    )
    async def cancel_job_by_delete(
        self, job_id: FromPath[UUID], services: ServicesDep, principal: PrincipalDep
    ) -> JobOut:
        """The former cancel, kept for one release: a DELETE whose job stays readable is not a delete
        (schemathesis: use after free), so the route is POST .../cancel (decision 0010)."""
        return job_out(await services.jobs.cancel(job_id, principal.user_id))

    @get(
        "/{job_id:uuid}/events",
        guards=[allow_service],
        security=USER_OR_SERVICE,
        summary="Server-sent events: the job's state, then progress, until a terminal state",
        description="Events: `state` (the job, as GET returns it; first, and on every change) and "
        "`progress` ({progress, message}); the stream ends after a terminal `state`. Heartbeat comments "
        "keep idle connections open.",
    )
    async def job_events(
        self, job_id: FromPath[UUID], services: ServicesDep, reader: ReaderDep, owner: Owner = None
    ) -> EventStream:
        job = await services.jobs.get(job_id, read_owner(reader, owner))
        return EventStream(_sse(services.jobs.stream(job)))

    @get(
        ["/{job_id:uuid}/result/transcript.txt", "/{job_id:uuid}/result/transcript.srt",
         "/{job_id:uuid}/result/transcript.vtt"],
        guards=[allow_service],
        security=USER_OR_SERVICE,
        summary="A transcription's transcript as text, SubRip (SRT) or WebVTT",
        description="Speakers as `Coach: ` line prefixes (text, SRT) and `<v Coach>` voice spans (WebVTT). "
        "409 until the job has succeeded; 404 for a job that is not a transcription.",
        media_type="text/plain",
    )  # fmt: skip
    async def get_transcript(
        self, request: Request[Any, Any, Any], job_id: FromPath[UUID], services: ServicesDep,
        reader: ReaderDep, owner: Owner = None,
    ) -> Response[str]:  # fmt: skip
        job = await services.jobs.get(job_id, read_owner(reader, owner))
        fmt: TranscriptFormat = "srt" if request.url.path.endswith(".srt") else (
            "vtt" if request.url.path.endswith(".vtt") else "txt"
        )  # fmt: skip
        if job.kind != TRANSCRIPTION.name:
            raise NotFound(f"job {job_id} is not a transcription", code="result_part_not_found")
        if job.status != "succeeded" or not isinstance(job.result, dict):
            raise Conflict(
                f"job {job_id} is {job.status}; its transcript is ready once it has succeeded",
                code="result_not_ready",
            )
        return Response(render(job.result, fmt), media_type=MEDIA_TYPES[fmt])

    @get(
        "/{job_id:uuid}/result/{name:str}",
        guards=[allow_service],
        security=USER_OR_SERVICE,
        summary="A part of a job's result kept in blob storage because it is large",
        description="The URLs come from the result (e.g. an extraction's `document_file.url`).",
        media_type="application/json",
    )
    async def get_result_part(
        self,
        job_id: FromPath[UUID],
        name: FromPath[str],
        services: ServicesDep,
        reader: ReaderDep,
        owner: Owner = None,
    ) -> Stream:
        job = await services.jobs.get(job_id, read_owner(reader, owner))
        key = f"jobs/{job.id}/{name}"
        if key not in job.blobs or is_upload_key(job.id, key) or key == secret_key(job.id):
            raise NotFound(f"job {job_id} has no result part {name!r}", code="result_part_not_found")
        # Streamed through the API (memory: one chunk), not a redirect to a presigned URL: the caller's
        # key and JWT stay the only credentials, and a bucket on a private network works the same.
        blob = await services.jobs.storage.stream(key)
        media_type = "application/json" if name.endswith(".json") else "application/octet-stream"
        return Stream(blob.chunks, media_type=media_type, headers={"Content-Length": str(blob.size)})


@get(
    "/api/v1/results/{job_id:uuid}",
    tags=["jobs"],
    security=[],
    summary="A succeeded job's result through the signed, short-lived URL of its webhook",
    description="The `result_url` of a webhook event whose result was too large to carry inline. Needs no "
    "credentials: `expires` (Unix seconds) and `signature` are the credentials (403 `invalid_result_url` "
    "when wrong or expired).",
)
async def signed_result(
    job_id: FromPath[UUID],
    services: ServicesDep,
    expires: Annotated[int, QueryParameter(ge=0)],
    signature: Annotated[str, QueryParameter(min_length=1, max_length=128)],
) -> Any:
    secret = services.settings.webhook_secret
    if secret is None or not result_url_valid(
        webhook_key(secret.get()), job_id, expires, signature, now=time.time()
    ):
        raise Forbidden("the result URL is not valid or has expired", code="invalid_result_url")
    job = await services.jobs.get(job_id, None)
    if job.status != "succeeded":
        raise NotFound(f"job {job_id} has no result", code="result_not_found")
    return job.result
