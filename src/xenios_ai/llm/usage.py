"""Usage of every LLM request, written to ``ai_backend.llm_requests`` in batches, off the request path.

The router hands each finished request to a `UsageSink` (``record`` is synchronous and O(1)). The
`UsageWriter` sink keeps the rows in memory and writes a batch as ONE statement whose one parameter is
the batch encoded by msgspec (``jsonb_to_recordset``): the per-row cost in this process is a few
microseconds, where psycopg's per-parameter adaptation cost ~80 us per row (measured under load). Batches
go out every ``llm_usage_flush_seconds``, as soon as ``llm_usage_batch_size`` rows wait, when a caller
needs them stored (``flush``: a job worker before it writes the job's outcome) and at shutdown. When
PostgreSQL is unreachable it keeps the rows and retries with backoff; rows are never dropped silently:
a row recorded while ``llm_usage_max_buffered`` rows wait, and the rows a failed final flush at shutdown
leaves, are logged at ERROR level as JSON (``llm_usage_rows``) so they can be replayed from the logs.

PostgreSQL's jsonb cannot hold U+0000, which a prompt or an answer may contain: it is stored as U+FFFD.
When PostgreSQL refuses a batch for its data (a number out of range, ...), the batch is halved until only
the refused rows are left, and those are logged as lost: one bad row never costs the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import deque
from typing import Any, Literal, Protocol

import msgspec
import psycopg
from loguru import logger
from psycopg.rows import dict_row

from xenios_ai.db.pool import Pool
from xenios_ai.settings import Settings

Status = Literal["succeeded", "failed", "cancelled"]


class UsageRecord(msgspec.Struct, kw_only=True):
    """One LLM request as stored (``llm_requests`` row)."""

    created_at: float
    """Unix time the request started."""
    request_id: str | None
    job_id: str | None = None
    owner: str | None
    task: str
    mode: Literal["complete", "stream"]
    status: Status
    error_code: str | None = None
    model: str | None
    provider: str | None = None
    fallback_used: bool
    attempts: list[dict[str, Any]]
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    latency_ms: float
    ttft_ms: float | None = None
    finish_reason: str | None = None
    cached_tokens: int | None = None
    """Prompt tokens read from the provider's prompt cache (``prompt_tokens_details.cached_tokens``)."""
    generation_id: str | None = None
    """OpenRouter's generation id of the last attempt."""
    budget_charged_usd: float | None = None
    """What was charged to the owner's monthly budget (None: budgets off, or no owner)."""
    prompt: Any = None
    """The messages sent, only with LLM_STORE_CONTENT."""
    response: str | None = None
    """The answer text, only with LLM_STORE_CONTENT."""
    id: uuid.UUID | None = None
    """Given by the writer at the first attempt to store the row (so a retried batch cannot insert twice)."""


class UsageSink(Protocol):
    """Where the router reports finished requests; must not block."""

    def record(self, usage: UsageRecord) -> None: ...


class NullSink:
    """Drops usage (tests, scripts)."""

    def record(self, usage: UsageRecord) -> None:
        pass


_SQL_TYPES = {
    "created_at": "double precision",
    "fallback_used": "boolean",
    "attempts": "jsonb",
    "prompt": "jsonb",
    "prompt_tokens": "integer",
    "completion_tokens": "integer",
    "cached_tokens": "integer",
    "cost_usd": "numeric",
    "budget_charged_usd": "numeric",
    "latency_ms": "double precision",
    "ttft_ms": "double precision",
    "id": "uuid",
}
_COLUMNS = tuple(f.name for f in msgspec.structs.fields(UsageRecord))
_SELECT = {
    "created_at": "to_timestamp(r.created_at)",
    "attempts": "CASE WHEN x.pseudonym IS NULL THEN coalesce(r.attempts, '[]'::jsonb) ELSE '[]'::jsonb END",
    # A request that started before its owner's data was erased (a worker mid-job) and ends after: stored
    # like the erasure left the owner's other rows, under the pseudonym and with numbers only.
    "owner": "coalesce(x.pseudonym, r.owner)",
    **{
        c: f"CASE WHEN x.pseudonym IS NULL THEN r.{c} END"
        for c in ("prompt", "response", "request_id", "job_id")
    },
}
_RECORD = ", ".join(f"{c} {_SQL_TYPES.get(c, 'text')}" for c in _COLUMNS)
_INSERT = (
    f"INSERT INTO ai_backend.llm_requests ({', '.join(_COLUMNS)}) "  # noqa: S608 - constant names
    f"SELECT {', '.join(_SELECT.get(c, f'r.{c}') for c in _COLUMNS)} "
    f"FROM jsonb_to_recordset(%s::jsonb) AS r({_RECORD}) "
    "LEFT JOIN ai_backend.erased_subjects AS x "
    "ON x.subject_hash = encode(sha256(convert_to(r.owner, 'UTF8')), 'hex') "
    "AND to_timestamp(r.created_at) <= x.erased_at "
    "ON CONFLICT (id) DO NOTHING"
)
_encode = msgspec.json.Encoder().encode
_MAX_BACKOFF = 5.0
_WRITE_TIMEOUT = 5.0
_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
"""A ``\\u0000`` escape in JSON text (not an escaped backslash followed by ``u0000``)."""


def _batch_json(rows: list[UsageRecord]) -> str:
    for row in rows:
        if row.id is None:  # fixed at the first attempt: a retried batch does not insert twice
            row.id = uuid.uuid4()
    data = _encode(rows)
    if b"\\u0000" in data:  # jsonb rejects U+0000 (22P05): store U+FFFD instead
        data = _NUL.sub(rb"\1\\ufffd", data)
    return data.decode()


class UsageWriter:
    """The batched PostgreSQL `UsageSink`. ``start()`` on the event loop that serves requests; ``aclose()``
    flushes what is left. One per process."""

    def __init__(self, pool: Pool, settings: Settings) -> None:
        self._pool = pool
        self._flush_seconds = settings.llm_usage_flush_seconds
        self._batch_size = max(1, settings.llm_usage_batch_size)
        self._max_buffered = max(self._batch_size, settings.llm_usage_max_buffered)
        self._rows: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        """One flush at a time: two would write the same head of the queue and then each drop a batch."""
        self._closing = False
        self.written = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        return len(self._rows)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="llm-usage-writer")

    def record(self, usage: UsageRecord) -> None:
        if len(self._rows) >= self._max_buffered:
            self._log_lost([usage], "usage buffer full (PostgreSQL down?)")
            return
        self._rows.append(usage)
        if len(self._rows) >= self._batch_size:
            self._wake.set()

    async def flush(self, timeout: float = _WRITE_TIMEOUT) -> None:
        """Write every waiting row now, the rows recorded before the call included (raises when PostgreSQL
        fails; the rows stay queued). Safe to call from several tasks: flushes take turns."""
        async with self._lock:
            while self._rows:
                batch = [self._rows[i] for i in range(min(self._batch_size, len(self._rows)))]
                try:
                    stored = await self._insert(batch, timeout)
                except BaseException:
                    self.failures += 1
                    raise
                for _ in batch:
                    self._rows.popleft()
                self.written += stored

    async def _insert(self, rows: list[UsageRecord], timeout: float) -> int:
        """Insert ``rows``; when PostgreSQL refuses their data, halve them until only the refused rows are
        left (logged as lost). Returns how many were stored."""
        try:
            async with (
                asyncio.timeout(timeout),
                self._pool.connection(timeout=timeout) as conn,
                conn.cursor() as cursor,
            ):
                await cursor.execute(_INSERT, (_batch_json(rows),))
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            if len(rows) == 1:
                self._log_lost(rows, f"PostgreSQL refused the row ({type(exc).__name__}: {exc})")
                return 0
        else:
            return len(rows)
        half = len(rows) // 2
        return await self._insert(rows[:half], timeout) + await self._insert(rows[half:], timeout)

    async def _run(self) -> None:
        backoff = self._flush_seconds
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            if not self._rows:
                continue
            try:
                await self.flush()
                backoff = self._flush_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = min(_MAX_BACKOFF, max(backoff * 2, 0.1))
                logger.warning(
                    "writing {} LLM usage rows failed ({}); retrying in {:.1f}s",
                    len(self._rows),
                    type(exc).__name__,
                    backoff,
                )

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop the background task and flush, retrying until ``timeout``; what still fails is logged."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout=timeout)
            self._task = None
        deadline = time.monotonic() + timeout
        delay = 0.1
        while self._rows:
            try:
                await self.flush(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    self._log_lost(list(self._rows), f"final flush failed ({type(exc).__name__})")
                    self._rows.clear()
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    @staticmethod
    def _log_lost(rows: list[UsageRecord], why: str) -> None:
        logger.bind(llm_usage_rows=_encode(rows).decode()).error(
            "{} LLM usage row(s) not stored: {}; they are in this log line", len(rows), why
        )


class TaskUsage(msgspec.Struct, kw_only=True):
    """One task's share of an owner's usage over a period."""

    task: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float


_MONTH_USAGE = """
SELECT task, count(*) AS requests, coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens,
       coalesce(sum(cached_tokens), 0) AS cached_tokens,
       coalesce(sum(coalesce(cost_usd, budget_charged_usd)), 0)::float8 AS cost_usd
FROM ai_backend.llm_requests
WHERE owner = %s AND created_at >= to_timestamp(%s) AND created_at < to_timestamp(%s)
GROUP BY task ORDER BY task
"""


async def usage_by_task(pool: Pool, owner: str, start: float, end: float) -> list[TaskUsage]:
    """``owner``'s stored usage from ``start`` to ``end`` (Unix times), per task (rows still waiting in a
    writer's batch are not counted yet). A row without a reported cost counts what its budget was charged."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_MONTH_USAGE, (owner, start, end))
        rows = await cursor.fetchall()
    return [
        TaskUsage(
            task=row["task"],
            requests=int(row["requests"]),
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            cached_tokens=int(row["cached_tokens"]),
            cost_usd=round(float(row["cost_usd"]), 8),
        )
        for row in rows
    ]


async def spent_by_task(pool: Pool, owner: str, start: float, end: float) -> dict[str, float]:
    """USD ``owner``'s stored usage rows cost per task from ``start`` to ``end``: where the budgets seed a
    month (`llm.budget_seeding.History`)."""
    return {row.task: row.cost_usd for row in await usage_by_task(pool, owner, start, end)}
