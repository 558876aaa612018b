"""The MVP's backend reading jobs with its API key alone (issue 20): a webhook handler fetches the result
it was told about without a user token, for any owner; the list needs ``owner``; a user's token still
reads only that user's jobs. The signed result URL of a large webhook result works without credentials
until it expires, and not for another job or after a change to it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
import psycopg
from litestar.testing import AsyncTestClient
from psycopg.rows import dict_row

from tests.support import tokens
from tests.support.jobs import WEBHOOK_SECRET
from xenios_ai.jobs import store
from xenios_ai.jobs.models import Job
from xenios_ai.jobs.webhooks import ResultPolicy, event_body, result_url
from xenios_ai.settings import Settings
from xenios_ai.settings_load import webhook_key

SERVICE = {"X-API-Key": tokens.API_KEY}


async def _submit(client: AsyncTestClient[Any], owner: str) -> str:
    response = await client.post(
        "/api/v1/jobs/analysis",
        json={"task": "session_summary", "text": f"Coach: hello. Client: hi. {uuid.uuid4()}"},
        headers=tokens.headers(owner),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["id"] == body["job_id"]  # `id` everywhere; `job_id` the deprecated alias
    job_id: str = body["id"]
    return job_id


async def test_the_api_key_alone_reads_any_owners_job(client: AsyncTestClient[Any]) -> None:
    owner = f"user-{uuid.uuid4().hex[:8]}"
    job_id = await _submit(client, owner)

    job = await client.get(f"/api/v1/jobs/{job_id}", headers=SERVICE)
    assert job.status_code == 200, job.text
    assert job.json()["id"] == job_id
    named = await client.get(f"/api/v1/jobs/{job_id}", params={"owner": owner}, headers=SERVICE)
    assert named.status_code == 200
    elsewhere = await client.get(f"/api/v1/jobs/{job_id}", params={"owner": "someone-else"}, headers=SERVICE)
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (404, "job_not_found")

    listed = await client.get("/api/v1/jobs", params={"owner": owner}, headers=SERVICE)
    assert listed.status_code == 200, listed.text
    assert [item["id"] for item in listed.json()["items"]] == [job_id]
    unnamed = await client.get("/api/v1/jobs", headers=SERVICE)
    assert (unnamed.status_code, unnamed.json()["code"]) == (422, "owner_required")

    missing = await client.get(f"/api/v1/jobs/{job_id}/result/document.json", headers=SERVICE)
    assert (missing.status_code, missing.json()["code"]) == (404, "result_part_not_found")


async def test_a_users_token_still_reads_only_that_users_jobs(client: AsyncTestClient[Any]) -> None:
    owner = f"user-{uuid.uuid4().hex[:8]}"
    job_id = await _submit(client, owner)
    other = tokens.headers("someone-else")
    assert (await client.get(f"/api/v1/jobs/{job_id}", headers=other)).json()["code"] == "job_not_found"
    mismatch = await client.get("/api/v1/jobs", params={"owner": owner}, headers=other)
    assert (mismatch.status_code, mismatch.json()["code"]) == (403, "owner_mismatch")
    mine = await client.get("/api/v1/jobs", params={"owner": owner}, headers=tokens.headers(owner))
    assert [item["id"] for item in mine.json()["items"]] == [job_id]
    broken = await client.get(f"/api/v1/jobs/{job_id}", headers=SERVICE | {"Authorization": "Bearer nope"})
    assert (broken.status_code, broken.json()["code"]) == (401, "invalid_token")  # a bad token is no service
    assert (await client.get(f"/api/v1/jobs/{job_id}")).json()["code"] == "invalid_api_key"
    # Writes stay the user's: the API key alone submits and cancels nothing.
    cancel = await client.delete(f"/api/v1/jobs/{job_id}", headers=SERVICE)
    assert (cancel.status_code, cancel.json()["code"]) == (401, "missing_token")


def _succeeded_job(settings: Settings, result: Any) -> Job:
    """A succeeded job written straight into the table (no worker may run it meanwhile)."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get(), row_factory=dict_row) as conn:
        row = conn.execute(
            f"""INSERT INTO ai_backend.jobs (id, kind, queue, status, owner, result, finished_at,
                    webhook_url, webhook_include_result)
                VALUES (%s, 'analysis', 'llm', 'succeeded', 'user-hooked', %s::jsonb, now(),
                        'https://example.com/hook', true)
                RETURNING {store.COLUMNS}""",
            (uuid.uuid4(), msgspec.json.encode(result).decode()),
        ).fetchone()
    assert row is not None
    return store.to_job(row)


async def test_a_large_webhook_result_is_a_signed_short_lived_url(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    result = {"task": "session_summary", "content": "x" * 5000}
    job = _succeeded_job(settings, result)
    job_id = str(job.id)
    key = webhook_key(WEBHOOK_SECRET)
    now = time.time()

    _, small = event_body(job, ResultPolicy(key, max_bytes=100_000, url_seconds=60, now=now))
    assert msgspec.json.decode(small)["data"]["result"] == result
    assert msgspec.json.decode(small)["data"]["owner"] == "user-hooked"
    _, large = event_body(job, ResultPolicy(key, max_bytes=1000, url_seconds=60, now=now))
    data = msgspec.json.decode(large)["data"]
    assert "result" not in data
    url = data["result_url"]

    fetched = await client.get(url)  # no API key, no token: the URL is the credential
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == result
    tampered = url.replace(job_id, str(uuid.uuid4()))
    assert (await client.get(tampered)).json()["code"] == "invalid_result_url"
    expired = result_url(key, uuid.UUID(job_id), int(now) - 1)
    denied = await client.get(expired)
    assert (denied.status_code, denied.json()["code"]) == (403, "invalid_result_url")
    forged = result_url(b"another key", uuid.UUID(job_id), int(now) + 60)
    assert (await client.get(forged)).status_code == 403

    # The service also follows any owner's job (a finished job's stream ends after its state).
    events = await client.get(f"/api/v1/jobs/{job_id}/events", headers=SERVICE)
    assert events.status_code == 200
    assert events.headers["content-type"].startswith("text/event-stream")
    assert f'"id":"{job_id}"' in events.text
    assert "event: state" in events.text
