"""GET /api/v1/jobs/{id}/events against a job a worker runtime runs while the stream is open."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from tests.support import tokens
from tests.support.config import make_settings
from tests.support.sse import async_sse_events
from xenios_ai.api.app import create_app
from xenios_ai.jobs.context import JobContext
from xenios_ai.jobs.models import Job, JobKind
from xenios_ai.jobs.runner import execute
from xenios_ai.jobs.runtime import WorkerRuntime
from xenios_ai.settings import Settings


class Steps(msgspec.Struct):
    steps: int = 5


STEPPED = JobKind(name="stepped", queue="default", input_type=Steps)


def stepping(ctx: JobContext, work: Steps) -> dict[str, int]:
    for step in range(1, work.steps + 1):
        time.sleep(0.05)
        ctx.progress_sync(step / work.steps, f"step {step} of {work.steps}")
    return {"steps": work.steps}


@pytest.fixture(scope="module")
def settings_here(fresh_env: Callable[..., dict[str, str]]) -> Settings:
    return make_settings(fresh_env(), job_sweep_interval_seconds=3600.0, job_progress_interval_seconds=0.0)


@pytest.fixture(scope="module")
def runtime(settings_here: Settings) -> Iterator[WorkerRuntime]:
    worker_runtime = WorkerRuntime(settings_here)
    worker_runtime.start()
    yield worker_runtime
    worker_runtime.stop()


@pytest.fixture
async def api(settings_here: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(settings_here)) as client:
        yield client


def _later(delay: float, action: Callable[[], object]) -> None:
    threading.Timer(delay, action).start()


async def _submit(runtime: WorkerRuntime) -> Job:
    """Submit on the runtime's loop, where its services live."""
    submitted = await asyncio.to_thread(
        runtime.call, runtime.services.jobs.submit(STEPPED, "user-1", Steps())
    )
    return submitted.job


async def _events(api: AsyncTestClient[Any], job_id: str, sub: str = "user-1") -> list[tuple[str, Any]]:
    async with api.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=tokens.headers(sub)) as response:
        assert response.status_code == 200
        return [event async for event in async_sse_events(response)]


async def test_the_stream_follows_a_job_from_queued_to_succeeded(
    api: AsyncTestClient[Any], runtime: WorkerRuntime
) -> None:
    job = await _submit(runtime)
    # The stream is open and subscribed before the job starts (the test client blocks this loop while
    # it streams, so the worker side runs on threads).
    _later(0.3, lambda: execute(STEPPED, stepping, str(job.id)))
    events = await _events(api, str(job.id))

    assert events[0][0] == "state"
    assert events[0][1]["status"] == "queued"
    progress = [data for name, data in events if name == "progress"]
    assert [p["progress"] for p in progress] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert progress[0]["message"] == "step 1 of 5"
    states = [data["status"] for name, data in events if name == "state"]
    assert states[0] == "queued"
    assert "running" in states
    assert states[-1] == "succeeded"
    assert events[-1][1]["result"] == {"steps": 5}


async def test_a_cancelled_queued_job_ends_its_stream_and_never_runs(
    api: AsyncTestClient[Any], runtime: WorkerRuntime
) -> None:
    job = await _submit(runtime)
    _later(0.3, lambda: runtime.call(runtime.services.jobs.cancel(job.id, "user-1")))
    events = await _events(api, str(job.id))
    assert [(name, data["status"]) for name, data in events] == [("state", "queued"), ("state", "cancelled")]

    ran = []
    await asyncio.to_thread(execute, STEPPED, lambda ctx, work: ran.append(1), str(job.id))  # its message
    assert ran == []
    body = (await api.get(f"/api/v1/jobs/{job.id}", headers=tokens.headers())).json()
    assert (body["status"], body["attempts"], body["started_at"]) == ("cancelled", 0, None)


async def test_the_stream_is_only_for_the_jobs_owner(
    api: AsyncTestClient[Any], runtime: WorkerRuntime
) -> None:
    job = await _submit(runtime)
    response = await api.get(f"/api/v1/jobs/{job.id}/events", headers=tokens.headers("user-2"))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
