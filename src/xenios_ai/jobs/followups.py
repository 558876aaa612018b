"""A job's ``then``: analyses to run on its text once it has succeeded, written once for every kind.

A kind whose result has text (a transcript, an extracted document) takes ``then`` in its input, checks
it with `check_then`, and its handler calls `analyse_after` with its text. The analyses are follow-up
jobs of the kind registered as ``analysis`` (looked up by name: the core imports no kind), each with
``source_job_id`` = this job; their ids go in this job's result (`FollowUp`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import msgspec

from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.models import FollowUp
from xenios_ai.jobs.registry import kind_named
from xenios_ai.llm.tasks import AnalysisTask
from xenios_ai.llm.types import Options

ANALYSIS_KIND = "analysis"
MAX_THEN = 4
"""At most this many analyses per job."""


def check_then(tasks: Sequence[str]) -> None:
    """Raise ValueError (a 422 in an input's ``__post_init__``) unless every task is a known analysis
    task, named once."""
    known = get_args(AnalysisTask)
    unknown = [task for task in tasks if task not in known]
    if unknown:
        raise ValueError(f"then: unknown analysis task(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError("then: name each task at most once")


def analyse_after(
    ctx: JobContext, tasks: Sequence[str], *, has_text: bool, nothing: str, options: Options | None = None
) -> list[FollowUp]:
    """Submit an analysis of this job's text per task, once the job has succeeded; none when the job has
    no text (``has_text`` false), ``nothing`` saying why. ``options`` (the input's ``then_options``:
    sampling, redaction) go to every analysis."""
    if not tasks:
        return []
    if not has_text:
        return [FollowUp(task, None, skipped=nothing) for task in tasks]
    kind = kind_named(ANALYSIS_KIND)
    extra = {"options": msgspec.to_builtins(options)} if options is not None else {}
    return [
        FollowUp(
            task,
            ctx.follow_up(
                kind, msgspec.convert({"task": task, "source_job_id": ctx.job.id, **extra}, kind.input_type)
            ),
        )
        for task in tasks
    ]
