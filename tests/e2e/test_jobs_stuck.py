"""A job stuck in native code past its time limit: the exception raised into its thread cannot land, so
the worker process exits and is restarted, and the job's attempt cap ends it. Real worker processes
(tests/support/stuck_worker.py), their own database and Redis namespace."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tests.support.config import make_settings
from tests.support.processes import ROOT, stop_process, wait_until
from tests.support.stuck import STUCK, Nap
from xenios_ai.db.pool import open_pool
from xenios_ai.db.redis import open_redis
from xenios_ai.jobs import store
from xenios_ai.jobs.models import Job
from xenios_ai.jobs.runner import STUCK_EXIT_CODE
from xenios_ai.jobs.service import JobService
from xenios_ai.settings import Settings
from xenios_ai.storage import open_storage

T = TypeVar("T")


@contextmanager
def _stuck_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "tests.support.stuck_worker",
             "--queues", "default", "--processes", "1", "--threads", "1"],
            env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop_process(process, group=True)


async def _with_service(settings: Settings, work: Callable[[JobService], Awaitable[T]]) -> T:
    db = await open_pool(settings, wait=True)
    redis = open_redis(settings)
    try:
        return await work(JobService(settings, db, redis, open_storage(settings)))
    finally:
        await redis.aclose()
        await db.close()


def _submit(settings: Settings) -> uuid.UUID:
    async def submit(jobs: JobService) -> uuid.UUID:
        return (await jobs.submit(STUCK, "owner", Nap())).job.id

    return asyncio.run(_with_service(settings, submit))


def _row(settings: Settings, job_id: uuid.UUID) -> Job:
    async def read(jobs: JobService) -> Job | None:
        return await store.get(jobs.db, job_id)

    job = asyncio.run(_with_service(settings, read))
    assert job is not None
    return job


def test_a_job_stuck_in_native_code_past_its_limit_restarts_its_worker_and_then_fails(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    env = fresh_env()
    settings = make_settings(env)
    job_id = _submit(settings)
    log = tmp_path / "worker.log"

    with _stuck_worker(env, log) as first:
        started = time.monotonic()
        code = first.wait(60)  # time limit 0.3 s + interrupt 0.2 s + exit 1 s, after the worker's boot
        print(f"\nstuck worker exited with {code} after {time.monotonic() - started:.1f} s")
    assert code == STUCK_EXIT_CODE
    lines = log.read_text()
    assert '"level":"CRITICAL"' in lines
    assert f"job {job_id} is stuck in native code" in lines
    running = _row(settings, job_id)
    assert (running.status, running.attempts) == ("running", 1)  # its attempt died with the process

    with _stuck_worker(env, tmp_path / "worker-2.log"):  # restarted: the sweep ends the job
        wait_until(lambda: _row(settings, job_id).status == "failed", 60, "the job to fail", interval=0.2)
    failed = _row(settings, job_id)
    assert failed.error is not None
    assert failed.error.code == "worker_lost"
    assert failed.attempts in (1, 2)  # ended by the sweep (1) or by the redelivered message's claim (2)
