"""Erasing a user's data across every store: PostgreSQL rows, stored files, Redis keys; counts asserted
before and after, over HTTP, on an isolated database, Redis namespace and storage directory (no worker
or sweep of the shared ones can touch the seeded jobs)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.support import tokens
from tests.support.config import make_settings
from xenios_ai.analysis import ANALYSIS, AnalysisInput
from xenios_ai.api.app import create_app
from xenios_ai.api.ratelimit import RateLimiter
from xenios_ai.db.pool import Pool, open_pool
from xenios_ai.db.redis import Redis, open_redis
from xenios_ai.jobs import store
from xenios_ai.jobs.service import JobService
from xenios_ai.jobs.store_stewardship import subject_hash
from xenios_ai.llm.usage import UsageRecord, UsageWriter
from xenios_ai.observability import joblog
from xenios_ai.settings import Settings
from xenios_ai.storage import BlobStorage, open_storage

TEXT = "Coach: how is Sarah Lee doing? Client: call me on +44 7700 900123 or sarah.lee@example.com"


@dataclass
class Stores:
    """The test's own connections to the stores the app uses (the app runs on the test client's loop)."""

    settings: Settings
    db: Pool
    redis: Redis
    storage: BlobStorage
    limiter: RateLimiter
    jobs: JobService


@pytest.fixture(scope="module")
async def stores(fresh_env: Callable[..., dict[str, str]]) -> AsyncIterator[Stores]:
    settings = make_settings(fresh_env(), llm_store_content=True)
    db = await open_pool(settings, wait=True)
    redis = open_redis(settings)
    storage = open_storage(settings)
    limiter = RateLimiter(settings)
    jobs = JobService(settings, db, redis, storage)
    yield Stores(settings, db, redis, storage, limiter, jobs)
    await jobs.hub.aclose()
    await limiter.aclose()
    await redis.aclose()
    await db.close()


@pytest.fixture(scope="module")
async def app_client(stores: Stores) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(create_app(stores.settings)) as client:
        yield client


def _key_headers() -> dict[str, str]:
    return {"X-API-Key": tokens.API_KEY}


async def _seed(services: Stores, owner: str, *, jobs: int = 3) -> dict[str, Any]:
    """Jobs of every kind of state with files, log lines, usage rows with text, rate-limit counters."""
    job_ids: list[uuid.UUID] = []
    for n in range(jobs):
        job_id = uuid.uuid4()
        keys = [f"jobs/{job_id}/upload", f"jobs/{job_id}/document.json"]
        for key in keys:
            await services.storage.put_bytes(key, TEXT.encode())
        await store.insert(
            services.db, id=job_id, kind="analysis", queue="llm", owner=owner,
            input_json=msgspec.json.encode(AnalysisInput(task="session_summary", text=TEXT)),
            max_attempts=1, message_id=str(uuid.uuid4()), blobs=keys,
            webhook_url="https://hooks.example.com/x" if n == 0 else None,
        )  # fmt: skip
        await joblog.append(services.redis, services.settings, job_id, "INFO", f"job {job_id} started")
        job_ids.append(job_id)
    # one running (claimed), one finished with a result and a follow-up of it, the rest queued
    await store.claim(services.db, job_ids[0], "w-1", 60, webhook_after=60)
    await store.claim(services.db, job_ids[1], "w-1", 60, webhook_after=60)
    follow_up = store.FollowUpRow(
        id=uuid.uuid4(), kind="analysis", queue="llm", owner=owner, max_attempts=1, webhook_url=None,
        input_json=msgspec.json.encode({"task": "session_summary", "source_job_id": str(job_ids[1])}),
        source_job_id=job_ids[1],
    )  # fmt: skip
    await store.finish(
        services.db, job_ids[1], 1, "succeeded", result_json=b'{"content": "Sarah Lee is doing well"}',
        follow_ups=[follow_up], webhook_after=60,
    )  # fmt: skip
    job_ids.append(follow_up.id)
    usage = UsageWriter(services.db, services.settings)
    for n in range(4):
        usage.record(
            UsageRecord(
                created_at=time.time(), request_id=f"req-{n}", job_id=str(job_ids[0]), owner=owner,
                task="session_summary", mode="complete", status="succeeded", model="anthropic/claude-opus-4.5",
                fallback_used=False, attempts=[{"model": "anthropic/claude-opus-4.5", "error": None}],
                prompt_tokens=100 + n, completion_tokens=10, cost_usd=0.25, latency_ms=12.0,
                prompt=[{"role": "user", "content": TEXT}] if n % 2 == 0 else None,
                response="Sarah Lee is doing well" if n % 2 == 0 else None,
            )
        )  # fmt: skip
    await usage.flush()
    for key in services.limiter.keys_of(owner):
        await services.redis.set(key, 3, ex=60)
    return {"job_ids": job_ids}


async def _held(services: Stores, owner: str, job_ids: list[uuid.UUID]) -> dict[str, Any]:
    """What the stores hold of ``owner``: rows, files, Redis keys."""
    root = Path(services.settings.storage_path)
    files = sum(1 for job_id in job_ids for path in (root / "jobs" / str(job_id)).glob("*") if path.is_file())
    prefix = services.settings.redis_namespace
    log_keys = sum([await services.redis.exists(joblog.log_key(prefix, job_id)) for job_id in job_ids])
    other = sum([await services.redis.exists(key) for key in services.limiter.keys_of(owner)])
    async with services.db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM ai_backend.jobs WHERE owner = %s", (owner,))
        jobs = (await cur.fetchone() or {})["n"]
        cur = await conn.execute(
            """SELECT count(*) AS n, count(prompt) + count(response) AS texts
               FROM ai_backend.llm_requests WHERE owner = %s""",
            (owner,),
        )
        usage = await cur.fetchone() or {}
    return {
        "jobs": jobs, "files": files, "job_logs": log_keys, "other_keys": other,
        "llm_requests": usage["n"], "llm_texts": usage["texts"],
    }  # fmt: skip


async def test_erasure_removes_a_user_from_every_store_and_answers_counts(
    app_client: AsyncTestClient[Litestar],
    stores: Stores,
) -> None:
    services = stores
    owner, other = f"erase-{uuid.uuid4().hex[:8]}", f"keep-{uuid.uuid4().hex[:8]}"
    seeded = await _seed(services, owner)
    kept = await _seed(services, other, jobs=2)
    before = await _held(services, owner, seeded["job_ids"])
    assert before == {
        "jobs": 4, "files": 6, "job_logs": 3, "other_keys": 2, "llm_requests": 4, "llm_texts": 4,
    }  # fmt: skip
    other_before = await _held(services, other, kept["job_ids"])

    response = await app_client.delete(f"/api/v1/users/{owner}/data", headers=_key_headers())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["erased"] == {
        "jobs": 4,
        "running_jobs_cancelled": 1,
        "queued_jobs_dropped": 2,  # the third job and the follow-up
        "files": 6,
        "job_logs": 3,
        "webhooks": 1,
        "llm_requests_pseudonymised": 4,
        "llm_texts_removed": 2,
        "other_keys": 2,
    }
    assert await _held(services, owner, seeded["job_ids"]) == dict.fromkeys(before, 0)
    assert await _held(services, other, kept["job_ids"]) == other_before  # nobody else's data moved
    for job_id in seeded["job_ids"]:  # the job routes no longer know them
        gone = await app_client.get(f"/api/v1/jobs/{job_id}", headers=tokens.headers(owner))
        assert gone.status_code == 404

    async with services.db.connection() as conn:
        cur = await conn.execute(
            "SELECT pseudonym FROM ai_backend.erased_subjects WHERE subject_hash = %s", (subject_hash(owner),)
        )
        pseudonym = str((await cur.fetchone() or {})["pseudonym"])
        cur = await conn.execute(
            """SELECT sum(prompt_tokens) AS tokens, sum(cost_usd) AS cost, count(*) AS n,
                      count(prompt) + count(response) + count(request_id) + count(job_id) AS links,
                      sum(jsonb_array_length(attempts)) AS attempts
               FROM ai_backend.llm_requests WHERE owner = %s""",
            (pseudonym,),
        )
        usage: dict[str, Any] = await cur.fetchone() or {}
        cur = await conn.execute(
            "SELECT requested_by, counts, subject_hash FROM ai_backend.erasures WHERE id = %s",
            (uuid.UUID(body["erasure_id"]),),
        )
        audit = await cur.fetchone() or {}
    assert pseudonym.startswith("erased-")
    assert owner not in pseudonym
    assert subject_hash(owner) not in pseudonym
    # billing totals survive, under the pseudonym, with numbers only
    assert (usage["n"], usage["tokens"], float(usage["cost"])) == (4, 406, 1.0)
    assert (usage["links"], usage["attempts"]) == (0, 0)
    assert audit["requested_by"] == "service"
    assert audit["counts"] == body["erased"]
    assert owner not in str(audit)

    again = await app_client.delete(f"/api/v1/users/{owner}/data", headers=_key_headers())
    assert again.status_code == 200
    assert set(again.json()["erased"].values()) == {0}  # idempotent: nothing was left


async def test_a_queued_job_of_an_erased_user_never_runs(
    app_client: AsyncTestClient[Litestar], stores: Stores
) -> None:
    services = stores
    owner = f"erase-{uuid.uuid4().hex[:8]}"
    submitted = await services.jobs.submit(ANALYSIS, owner, AnalysisInput(task="session_summary", text=TEXT))
    assert submitted.job.status == "queued"

    response = await app_client.delete(f"/api/v1/users/{owner}/data", headers=_key_headers())
    assert response.json()["erased"]["queued_jobs_dropped"] == 1

    # what the job's actor does first when its message arrives: claim the row; there is none to claim
    claimed = await store.claim(services.db, submitted.job.id, "w-1", 60, webhook_after=60)
    assert claimed is None
    assert await store.get(services.db, submitted.job.id) is None


async def test_a_late_usage_row_of_an_erased_user_is_stored_under_the_pseudonym(
    app_client: AsyncTestClient[Litestar],
    stores: Stores,
) -> None:
    """A worker mid-job records the LLM request it started before the erasure after it: no text, no id."""
    services = stores
    owner = f"erase-{uuid.uuid4().hex[:8]}"
    started = time.time() - 1
    await app_client.delete(f"/api/v1/users/{owner}/data", headers=_key_headers())
    usage = UsageWriter(services.db, services.settings)

    def record(created_at: float) -> None:
        usage.record(
            UsageRecord(
                created_at=created_at, request_id="req", job_id="job", owner=owner, task="session_summary",
                mode="complete", status="succeeded", model="m", fallback_used=False, attempts=[],
                prompt_tokens=5, completion_tokens=1, cost_usd=0.5, latency_ms=1.0,
                prompt=[{"role": "user", "content": TEXT}], response="Sarah Lee",
            )
        )  # fmt: skip

    record(started)  # began before the erasure
    record(time.time() + 1)  # a new request of the (still existing) account after it
    await usage.flush()
    async with services.db.connection() as conn:
        cur = await conn.execute(
            """SELECT owner = %s AS theirs, prompt IS NOT NULL AS text, cost_usd FROM ai_backend.llm_requests
               WHERE owner = %s OR owner = (SELECT pseudonym FROM ai_backend.erased_subjects
                                            WHERE subject_hash = %s) ORDER BY created_at""",
            (owner, owner, subject_hash(owner)),
        )
        rows = await cur.fetchall()
    assert [(r["theirs"], r["text"], float(str(r["cost_usd"]))) for r in rows] == [
        (False, False, 0.5),
        (True, True, 0.5),
    ]


async def test_me_data_erases_the_callers_own_data(
    app_client: AsyncTestClient[Litestar], stores: Stores
) -> None:
    services = stores
    owner = f"erase-{uuid.uuid4().hex[:8]}"
    seeded = await _seed(services, owner, jobs=2)

    response = await app_client.delete("/api/v1/me/data", headers=tokens.headers(owner))

    assert response.status_code == 200, response.text
    assert response.json()["erased"]["jobs"] == 3
    assert set((await _held(services, owner, seeded["job_ids"])).values()) == {0}
    async with services.db.connection() as conn:
        cur = await conn.execute(
            "SELECT requested_by FROM ai_backend.erasures WHERE id = %s",
            (uuid.UUID(response.json()["erasure_id"]),),
        )
        assert (await cur.fetchone() or {})["requested_by"] == "user"


async def test_erasure_routes_need_their_credentials(app_client: AsyncTestClient[Litestar]) -> None:
    no_key = await app_client.delete("/api/v1/users/someone/data")
    assert (no_key.status_code, no_key.json()["code"]) == (401, "invalid_api_key")
    no_token = await app_client.delete("/api/v1/me/data", headers=_key_headers())
    assert (no_token.status_code, no_token.json()["code"]) == (401, "missing_token")
