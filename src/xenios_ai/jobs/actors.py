"""One thin actor per job kind, on its kind's queue; the runner does the bookkeeping. Workers only.

A handler is ``async def`` (runs on the worker's event loop: I/O, the LLM router) or ``def`` (runs on
the actor's thread: blocking engines, reporting progress with ``ctx.progress_sync``)::

    @job_actor(EXTRACTION)
    def extraction(ctx: JobContext, options: ExtractionOptions) -> ExtractionResult:
        with ctx.upload_file() as path:
            return extractor().extract(path, options, progress=ctx.progress_sync)

Retry policy as data: actors never retry through Dramatiq (``max_retries=0``). The runner applies the
kind's `RetryPolicy` and keeps the row in step; a webhook's next delivery attempt is scheduled in its job's
row (``webhook_due_at``, WEBHOOK_MAX_ATTEMPTS in all) and queued by the sweep, so it survives a worker or
Redis restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

import dramatiq
import msgspec

from xenios_ai.analysis import AnalysisInput, AnalysisResult, analyse_after, run_analysis
from xenios_ai.extraction.job import ExtractionJobResult, ExtractionRequest, run_extraction
from xenios_ai.jobs.kinds import ANALYSIS, EXTRACTION, TRANSCRIPTION
from xenios_ai.jobs.models import JobKind
from xenios_ai.jobs.runner import Handler, JobContext, execute
from xenios_ai.jobs.runtime import WorkerRuntime
from xenios_ai.jobs.service import WEBHOOK_ACTOR
from xenios_ai.transcription import TranscriptionJobOptions, TranscriptionJobResult, shared_transcriber

H = TypeVar("H", bound=Handler)


def job_actor(kind: JobKind) -> Callable[[H], H]:
    """Register ``handler`` as the handler of ``kind``: a Dramatiq actor named ``job_<kind>`` on its queue."""

    def register(handler: H) -> H:
        def run(job_id: str) -> None:
            execute(kind, handler, job_id)

        run.__name__ = run.__qualname__ = kind.actor_name
        dramatiq.actor(actor_name=kind.actor_name, queue_name=kind.queue, max_retries=0)(run)
        return handler

    return register


@job_actor(ANALYSIS)
async def analysis(ctx: JobContext, request: AnalysisInput) -> AnalysisResult:
    return await run_analysis(ctx, request)


@job_actor(TRANSCRIPTION)
def transcription(ctx: JobContext, options: TranscriptionJobOptions) -> TranscriptionJobResult:
    """Transcribe the upload; then submit the ``then`` analyses on the transcript (on success)."""
    with ctx.upload_file() as path:
        result = shared_transcriber(ctx.settings).transcribe(path, options, progress=ctx.progress_sync)
    follow_ups = analyse_after(
        ctx, options.then, has_text=bool(result.text), nothing="the transcript is empty: nothing to analyse"
    )
    return TranscriptionJobResult(**msgspec.structs.asdict(result), follow_ups=follow_ups)


@job_actor(EXTRACTION)
def extraction(ctx: JobContext, request: ExtractionRequest) -> ExtractionJobResult:
    """Convert the uploaded document; then submit the ``then`` analyses on its text (on success)."""
    return run_extraction(ctx, request)


@dramatiq.actor(actor_name=WEBHOOK_ACTOR, queue_name="default", max_retries=0)
def deliver_webhook(job_id: str) -> None:
    runtime = WorkerRuntime.current()
    services = runtime.services
    runtime.call(services.jobs.deliver_webhook(services.webhooks, UUID(job_id)))
