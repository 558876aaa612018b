"""Every job kind, declared once: the API submits by these declarations, the workers run by them.

Adding a kind (see `jobs.models.JobKind`)::

    EXTRACTION = declare(JobKind(
        name="extraction", queue="extraction", input_type=ExtractionOptions,
        upload=UploadSpec(sniff=sniff_document_format, sniff_bytes=8192, formats_hint="PDF, DOCX, ..."),
        text_of=lambda result: result.get("markdown"), release_on_shutdown=True,
    ))

then its handler in `jobs.actors` (``@job_actor(EXTRACTION)``) and its route in `api.jobs`.
"""

from __future__ import annotations

from xenios_ai.analysis import AnalysisInput, analysis_text
from xenios_ai.errors import NotFound
from xenios_ai.extraction.job import ExtractionRequest, extraction_text, split_password, warm_up
from xenios_ai.extraction.sniff import SNIFF_BYTES as DOCUMENT_SNIFF_BYTES
from xenios_ai.extraction.sniff import sniff_document_format
from xenios_ai.jobs.models import JobKind, RetryPolicy, UploadSpec
from xenios_ai.transcription import (
    SNIFF_BYTES,
    TranscriptionJobOptions,
    shared_transcriber,
    sniff_audio_format,
    transcript_text,
)

KINDS: dict[str, JobKind] = {}


def declare(kind: JobKind) -> JobKind:
    if kind.name in KINDS:
        raise ValueError(f"job kind {kind.name!r} is declared twice")
    KINDS[kind.name] = kind
    return kind


def kind_named(name: str) -> JobKind:
    kind = KINDS.get(name)
    if kind is None:
        raise NotFound(f"unknown job kind {name!r}", code="unknown_job_kind")
    return kind


ANALYSIS = declare(
    JobKind(
        name="analysis",
        queue="llm",
        input_type=AnalysisInput,
        retry=RetryPolicy(max_attempts=3, backoff_seconds=5.0, max_backoff_seconds=120.0),
        text_of=analysis_text,
    )
)

TRANSCRIPTION = declare(
    JobKind(
        name="transcription",
        queue="transcription",
        input_type=TranscriptionJobOptions,
        upload=UploadSpec(
            sniff=lambda head, _filename: sniff_audio_format(head),
            sniff_bytes=SNIFF_BYTES,
            max_bytes=lambda settings: settings.transcription_max_upload_bytes,
            formats_hint="WAV, MP3, M4A/AAC, OGG (Opus, Vorbis), WebM, FLAC, MP4 (its audio track)",
        ),
        text_of=transcript_text,
        release_on_shutdown=True,
        prepare=shared_transcriber,  # the model loads at worker boot; a missing one stops the worker
    )
)

EXTRACTION = declare(
    JobKind(
        name="extraction",
        queue="extraction",
        input_type=ExtractionRequest,
        retry=RetryPolicy(max_attempts=2),  # a document killing its worker process: two tries, not three
        upload=UploadSpec(
            sniff=sniff_document_format,
            sniff_bytes=DOCUMENT_SNIFF_BYTES,
            max_bytes=lambda settings: settings.extraction_max_upload_bytes,
            formats_hint="PDF, DOCX, PPTX, XLSX, HTML, Markdown (or plain text), CSV",
            split_secret=split_password,  # the PDF's password never reaches the job's row
        ),
        text_of=extraction_text,
        release_on_shutdown=True,
        prepare=warm_up,  # builds the converter in the background at boot; a failed build fails the jobs
    )
)
