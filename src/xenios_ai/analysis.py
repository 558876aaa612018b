"""Analysis jobs: an LLM task (session summary, insights) over a text or over a finished job's text.

Submitted with ``text`` or with ``source_job_id`` (a succeeded job of the same owner whose kind declares
``text_of``: a transcript, an extracted document, another analysis). Runs on the ``llm`` queue through the
LLM router, so the fallback chain, retries and usage recording are the router's; a router failure that
is transient (every model unavailable) is retried by the job's retry policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal, cast
from uuid import UUID

import msgspec

from xenios_ai.errors import Conflict, InvalidInput
from xenios_ai.jobs.models import FollowUp, Job
from xenios_ai.llm.router import Options, Usage

if TYPE_CHECKING:
    from xenios_ai.jobs.runner import JobContext
    from xenios_ai.jobs.service import JobService

AnalysisTask = Literal["session_summary", "insight_generation"]
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
    from xenios_ai.jobs.kinds import KINDS

    kind = KINDS.get(job.kind)
    if kind is None or kind.text_of is None or job.status != "succeeded":
        return None
    return kind.text_of(job.result)


async def check_source(jobs: JobService, owner: str, source_job_id: UUID) -> None:
    """At submit: the source is the owner's (404), has finished (409) and offers text (422)."""
    source = await jobs.get(source_job_id, owner)
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
        from xenios_ai.jobs import store

        source = await store.get(ctx.services.db, request.source_job_id, ctx.job.owner)
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


def analyse_after(ctx: JobContext, tasks: Sequence[str], *, has_text: bool, nothing: str) -> list[FollowUp]:
    """A job's ``then``: an analysis of its text per task, submitted once the job has succeeded (with
    ``source_job_id`` = the job); none when the job has no text, ``nothing`` saying so."""
    from xenios_ai.jobs.kinds import ANALYSIS

    if not has_text:
        return [FollowUp(task, None, skipped=nothing) for task in tasks]
    return [
        FollowUp(
            task,
            ctx.follow_up(ANALYSIS, AnalysisInput(task=cast("AnalysisTask", task), source_job_id=ctx.job.id)),
        )
        for task in tasks
    ]


def analysis_text(result: object) -> str | None:
    """An analysis's text, for a follow-up analysis."""
    return result.get("content") if isinstance(result, dict) else None
