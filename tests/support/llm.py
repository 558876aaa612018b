"""Helpers for LLM tests: the usage row a request leaves in PostgreSQL; a job context for the analysis
handler over a real router."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from psycopg.rows import dict_row

from tests.support.processes import wait_until
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.models import Job
from xenios_ai.llm.router import LLMRouter


def usage_row(database_url: str, request_id: str, columns: str = "*", timeout: float = 5) -> dict[str, Any]:
    """``columns`` of the ``ai_backend.llm_requests`` row of ``request_id``, waiting for the usage writer to
    store it (it writes in batches)."""

    def row() -> dict[str, Any] | None:
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            query = f"SELECT {columns} FROM ai_backend.llm_requests WHERE request_id = %s"
            return conn.execute(query, (request_id,)).fetchone()

    wait_until(lambda: row() is not None, timeout, f"the llm_requests row of {request_id}")
    found = row()
    assert found is not None
    return found


class _AnalysisContext:
    """The part of `JobContext` the analysis handler uses, over a real router (the worker's runner is
    covered by the job tests; what these tests look at is the handler's call through the router)."""

    def __init__(self, router: LLMRouter, owner: str) -> None:
        self._router = router
        self.job = Job(
            id=uuid.uuid4(),
            kind="analysis",
            queue="llm",
            status="running",
            owner=owner,
            input={},
            created_at=datetime.now(UTC),
        )

    async def progress(self, fraction: float, message: str | None = None) -> None:
        pass

    def llm(self) -> LLMRouter:
        return self._router


def analysis_context(router: LLMRouter, owner: str) -> JobContext:
    """A job context of ``owner``'s analysis job whose LLM calls go through ``router``."""
    return cast(JobContext, _AnalysisContext(router, owner))
