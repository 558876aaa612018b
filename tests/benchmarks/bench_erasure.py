"""Erasing a user with 1,000 jobs and their files (target: < 5 s).

    uv run python -m tests.benchmarks erasure          (or: just bench erasure)

A fresh database, the machine's Redis, a local storage directory. Per round, one user gets N jobs (a
third of them running, the rest finished), two files each, a job log list each, and one LLM usage row
each; then `jobs.stewardship.erase_user` runs (what DELETE /api/v1/users/{id}/data runs). Baseline in the
same run: the bare floor of the same work, one ``DELETE ... WHERE owner`` and unlinking the files.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.benchmarks.common import database, service_env
from tests.support.config import make_settings
from xenios_ai.db.pool import open_pool
from xenios_ai.db.redis import open_redis
from xenios_ai.jobs.service import JobService
from xenios_ai.jobs.stewardship import erase_user
from xenios_ai.observability.joblog import log_key
from xenios_ai.settings import Settings
from xenios_ai.storage import open_storage

JOBS = 1000
ROUNDS = 3
TARGET_SECONDS = 5.0


async def _seed(jobs: JobService, settings: Settings, owner: str) -> list[Path]:
    root = settings.storage_path
    rows, files = [], []
    for n in range(JOBS):
        job_id = uuid.uuid4()
        keys = [f"jobs/{job_id}/upload", f"jobs/{job_id}/document.json"]
        for key in keys:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 2048)
            files.append(path)
        rows.append((job_id, owner, "running" if n % 3 == 0 else "succeeded", keys))
    async with jobs.db.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            """INSERT INTO ai_backend.jobs (id, kind, queue, owner, status, input, blobs, result, attempts)
               VALUES (%s, 'analysis', 'llm', %s, %s, '{"task": "session_summary"}', %s,
                       '{"content": "a summary"}', 1)""",
            rows,
        )
        await cur.execute(
            """INSERT INTO ai_backend.llm_requests (id, created_at, owner, task, mode, status, latency_ms,
                   prompt_tokens, cost_usd, prompt)
               SELECT gen_random_uuid(), now(), %s, 'session_summary', 'complete', 'succeeded', 10, 100, 0.1,
                      '[{"role": "user", "content": "text"}]'::jsonb
               FROM generate_series(1, %s)""",
            (owner, JOBS),
        )
    async with jobs.redis.pipeline(transaction=False) as pipe:
        for job_id, *_ in rows:
            pipe.rpush(log_key(settings.redis_namespace, job_id), b'{"ts": 0, "level": "INFO", "msg": "x"}')
        await pipe.execute()
    return files


async def _floor(jobs: JobService, owner: str, files: list[Path]) -> None:
    async with jobs.db.connection() as conn:
        await conn.execute("DELETE FROM ai_backend.jobs WHERE owner = %s", (owner,))
    for path in files:
        path.unlink()


async def _measure(settings: Settings) -> dict[str, Any]:
    db = await open_pool(settings, wait=True)
    redis = open_redis(settings)
    jobs = JobService(settings, db, redis, open_storage(settings))
    erase, floor, counts = [], [], {}
    try:
        for _ in range(ROUNDS):
            owner = f"bench-{uuid.uuid4().hex[:8]}"
            files = await _seed(jobs, settings, owner)
            started = time.perf_counter()
            await _floor(jobs, owner, files)
            floor.append(time.perf_counter() - started)
            await erase_user(jobs, owner, requested_by="service")  # the usage rows and logs left over

            owner = f"bench-{uuid.uuid4().hex[:8]}"
            await _seed(jobs, settings, owner)
            started = time.perf_counter()
            erasure = await erase_user(jobs, owner, requested_by="service")
            erase.append(time.perf_counter() - started)
            counts = {
                "jobs": erasure.counts.jobs,
                "files": erasure.counts.files,
                "job_logs": erasure.counts.job_logs,
                "llm_requests_pseudonymised": erasure.counts.llm_requests_pseudonymised,
            }
    finally:
        await jobs.hub.aclose()
        await redis.aclose()
        await db.close()
    median, base = statistics.median(erase), statistics.median(floor)
    return {
        "jobs": JOBS,
        "rounds": ROUNDS,
        "erase_seconds": [round(s, 3) for s in erase],
        "erase_median_seconds": round(median, 3),
        "floor_median_seconds": round(base, 3),
        "ratio_to_floor": round(median / base, 2),
        "counts": counts,
        "target_seconds": TARGET_SECONDS,
        "met": median < TARGET_SECONDS,
    }


def run(out_dir: Path) -> dict[str, Any]:
    with database() as (database_url, redis_url), tempfile.TemporaryDirectory() as storage:
        settings = make_settings(service_env(database_url, redis_url, STORAGE_DIR=storage))
        result = asyncio.run(_measure(settings))
    print(
        f"erase {JOBS} jobs + {2 * JOBS} files: median {result['erase_median_seconds']} s "
        f"(floor {result['floor_median_seconds']} s, x{result['ratio_to_floor']}); target < {TARGET_SECONDS} s"
    )
    return result
