"""Helpers for LLM tests: the usage row a request leaves in PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.support.processes import wait_until


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
