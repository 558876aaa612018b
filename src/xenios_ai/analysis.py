"""Analysis jobs: an LLM task (session summary, insights) over a text or over a finished job's text.

Submitted with ``text`` or with ``source_job_id`` (a succeeded job of the same owner whose kind declares
``text_of``: a transcript, an extracted document, another analysis). Runs on the ``llm`` queue through the
LLM router, so the fallback chain, retries and usage recording are the router's; a router failure that
is transient (every model unavailable) is retried by the job's retry policy. `ANALYSIS` declares the kind
(`xenios_ai.kinds` registers it); other kinds submit analyses through `jobs.followups` (``then``).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec

from xenios_ai.errors import Conflict, InvalidInput
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.models import Job, JobKind, RetryPolicy
from xenios_ai.jobs.registry import KINDS
from xenios_ai.llm.tasks import AnalysisTask
from xenios_ai.llm.types import Options, Usage

MAX_TEXT_CHARS = 400_000


class AnalysisInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What an analysis job runs: the task and exactly one of ``text`` and ``source_job_id``."""

    task: AnalysisTask
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_CHARS)] | None = None
    source_job_id: UUID | None = None
    options: Options | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.source_job_id is None):
            raise ValueError("give exactly one of text and source_job_id")


class AnalysisResult(msgspec.Struct, kw_only=True):
    task: str
    content: str
    model: str
    fallback_used: bool
    usage: Usage
    source_job_id: UUID | None = None


def source_text(job: Job) -> str | None:
    """The text a finished job offers to an analysis (its kind's ``text_of``)."""
    kind = KINDS.get(job.kind)
    if kind is None or kind.text_of is None or job.status != "succeeded":
        return None
    return kind.text_of(job.result)


def check_source(source: Job) -> None:
    """At submit, given the owner's source job (a missing one is 404 already): it has finished (409) and
    offers text (422)."""
    source_job_id = source.id
    if source.status != "succeeded":
        raise Conflict(
            f"source job {source_job_id} is {source.status}; analyse it once it has succeeded",
            code="source_job_not_ready",
        )
    if not source_text(source):
        raise InvalidInput(
            f"source job {source_job_id} has no text to analyse", code="source_job_has_no_text"
        )


async def run_analysis(ctx: JobContext, request: AnalysisInput) -> AnalysisResult:
    """The analysis job's handler."""
    text = request.text
    if request.source_job_id is not None:
        source = await ctx.source_job(request.source_job_id)
        text = source_text(source) if source is not None else None
        if not text:
            raise InvalidInput(
                f"source job {request.source_job_id} has no text to analyse", code="source_job_has_no_text"
            )
    assert text is not None
    await ctx.progress(0.05, "calling the model")
    completion = await ctx.llm().complete(
        request.task,
        input=text,
        owner=ctx.job.owner,
        request_id=f"job-{ctx.job.id}",
        job_id=str(ctx.job.id),
        options=request.options,
    )
    return AnalysisResult(
        task=request.task,
        content=completion.content,
        model=completion.model,
        fallback_used=completion.fallback_used,
        usage=completion.usage,
        source_job_id=request.source_job_id,
    )


def analysis_text(result: object) -> str | None:
    """An analysis's text, for a follow-up analysis."""
    return result.get("content") if isinstance(result, dict) else None


ANALYSIS = JobKind(
    name="analysis",
    queue="llm",
    input_type=AnalysisInput,
    result_type=AnalysisResult,
    handler=run_analysis,
    retry=RetryPolicy(max_attempts=3, backoff_seconds=5.0, max_backoff_seconds=120.0),
    text_of=analysis_text,
)
