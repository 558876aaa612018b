"""A database outage after a job's work is done: the attempt keeps its job until the outcome is written.

The worker runtime reaches PostgreSQL through a proxy the test cuts (open connections drop, new ones are
refused), for longer than STALE_JOB_SECONDS. A second runtime on the database directly plays another
worker whose sweep runs during the outage. Nothing may be run twice: the sweep leaves the job alone
(the worker registry lists it), the outcome and the job's LLM usage row are written once PostgreSQL is
back, and the usage row is written before the outcome (no flush interval helps: it is an hour here).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.fakes.openrouter import FakeOpenRouter
from tests.support.config import make_settings
from tests.support.processes import wait_until
from tests.support.proxy import CuttableProxy
from xenios_ai.jobs import maintenance, store
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.models import JobKind
from xenios_ai.jobs.queues import alive_workers
from xenios_ai.jobs.runner import execute
from xenios_ai.jobs.runtime import WorkerRuntime
from xenios_ai.llm.usage import UsageRecord, UsageWriter

STALE = 1.0


class Ask(msgspec.Struct, kw_only=True):
    text: str = "hello"


@pytest.fixture(scope="module")
def outage(fresh_env: Callable[..., dict[str, str]]) -> Iterator[tuple[CuttableProxy, dict[str, str]]]:
    env = fresh_env()
    target = conninfo_to_dict(env["DATABASE_URL"])
    with CuttableProxy(str(target.get("host") or "127.0.0.1"), int(target.get("port") or 5432)) as proxy:
        yield proxy, env


@pytest.fixture(scope="module")
def runtimes(outage: tuple[CuttableProxy, dict[str, str]]) -> Iterator[tuple[WorkerRuntime, WorkerRuntime]]:
    proxy, env = outage
    timings = {
        "stale_job_seconds": STALE, "worker_heartbeat_seconds": 0.2, "job_sweep_interval_seconds": 3600.0,
        "llm_usage_flush_seconds": 3600.0, "db_pool_timeout_seconds": 1.0,
    }  # fmt: skip
    proxied = make_conninfo(env["DATABASE_URL"], host="127.0.0.1", port=str(proxy.port))
    worker = WorkerRuntime(make_settings({**env, "DATABASE_URL": proxied}, **timings))
    other = WorkerRuntime(make_settings(env, **timings))
    other.worker_id = f"other:{worker.worker_id}"
    other.start()
    worker.start()  # the current runtime: `execute` runs on it
    yield worker, other
    proxy.restore()
    worker.stop()
    other.stop()


def usage_rows(url: str, job_id: uuid.UUID) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status FROM ai_backend.llm_requests WHERE job_id = %s", (str(job_id),)
        ).fetchall()
    return [row[0] for row in rows]


def test_a_finished_job_waits_out_the_outage_and_is_recorded_once(
    outage: tuple[CuttableProxy, dict[str, str]],
    runtimes: tuple[WorkerRuntime, WorkerRuntime],
    fake_openrouter: FakeOpenRouter,
) -> None:
    proxy, env = outage
    worker, other = runtimes

    async def answer_then_outage(ctx: JobContext, ask: Ask) -> dict[str, Any]:
        completion = await ctx.llm().complete(
            "chat",
            input=ask.text,
            owner=ctx.job.owner,
            request_id=f"job-{ctx.job.id}",
            job_id=str(ctx.job.id),
        )
        proxy.cut()  # the work is done; PostgreSQL goes away before anything is written
        return {"content": completion.content}

    kind = JobKind(name="outage_answer", queue="llm", input_type=Ask, handler=answer_then_outage)
    job = other.call(other.services.jobs.submit(kind, "owner-outage", Ask())).job
    fake_openrouter.clear()
    runner = threading.Thread(target=execute, args=(kind, answer_then_outage, str(job.id)), daemon=True)
    runner.start()

    wait_until(lambda: proxy.refused > 0, 20, "the worker to meet the outage")
    time.sleep(STALE * 2.5)  # the job's database heartbeat is now stale
    row = other.call(store.get(other.services.db, job.id))
    assert row is not None
    assert (row.status, row.attempts) == ("running", 1)
    assert row.heartbeat_at is not None
    listed = other.call(alive_workers(other.services.redis, env["REDIS_NAMESPACE"], max_age=STALE))
    assert [w.current_jobs for w in listed if w.worker_id == worker.worker_id] == [[str(job.id)]]

    report = other.call(maintenance.sweep(other.services.jobs))  # another worker's sweep, mid-outage
    assert report.requeued == 0
    assert other.call(store.get(other.services.db, job.id)).status == "running"  # type: ignore[union-attr]
    assert runner.is_alive()  # still waiting to write its outcome
    assert usage_rows(env["DATABASE_URL"], job.id) == []

    proxy.restore()
    runner.join(30)
    assert not runner.is_alive()
    done = other.call(store.get(other.services.db, job.id))
    assert done is not None
    assert (done.status, done.attempts, done.error) == ("succeeded", 1, None)
    assert job.id not in worker.running
    assert usage_rows(env["DATABASE_URL"], job.id) == ["succeeded"]
    assert len(fake_openrouter.requests) == 1  # the model was asked once


def test_concurrent_flushes_write_every_row_once(runtimes: tuple[WorkerRuntime, WorkerRuntime]) -> None:
    _, other = runtimes
    writer = UsageWriter(other.services.db, make_settings({}, llm_usage_batch_size=5))
    marker = f"flush-{uuid.uuid4().hex[:8]}"
    for n in range(12):
        writer.record(
            UsageRecord(
                created_at=time.time(), request_id=f"{marker}-{n}", owner="u", task="chat", mode="complete",
                status="succeeded", model="m", fallback_used=False, attempts=[], prompt_tokens=1,
                completion_tokens=1, cost_usd=0.0, latency_ms=1.0,
            )
        )  # fmt: skip

    async def both() -> None:
        await asyncio.gather(writer.flush(), writer.flush())

    other.call(both())
    assert writer.pending == 0
    with psycopg.connect(other.settings.database_url.get()) as conn:  # type: ignore[union-attr]
        stored = conn.execute(
            "SELECT request_id FROM ai_backend.llm_requests WHERE request_id LIKE %s", (f"{marker}-%",)
        ).fetchall()
    assert sorted(r[0] for r in stored) == sorted(f"{marker}-{n}" for n in range(12))
