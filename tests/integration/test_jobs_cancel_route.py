"""Cancel is POST /api/v1/jobs/{id}/cancel; DELETE still cancels for one release (deprecated); OPTIONS on
a job lists every method of the path (decision 0010: what schemathesis found)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar.testing import AsyncTestClient

from tests.support import tokens


async def _queued_job(client: AsyncTestClient[Any], sub: str) -> str:
    body = {"task": "session_summary", "text": f"a session ({uuid.uuid4()})"}
    response = await client.post("/api/v1/jobs/analysis", json=body, headers=tokens.headers(sub))
    assert response.status_code == 202
    job_id: str = response.json()["id"]
    return job_id


async def test_post_cancel_cancels_and_the_job_stays_readable(client: AsyncTestClient[Any]) -> None:
    sub = f"cancel-{uuid.uuid4().hex[:8]}"
    job_id = await _queued_job(client, sub)  # no worker here: it stays queued until cancelled
    cancelled = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=tokens.headers(sub))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    read = await client.get(f"/api/v1/jobs/{job_id}", headers=tokens.headers(sub))
    assert read.status_code == 200
    assert read.json()["status"] == "cancelled"
    again = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=tokens.headers(sub))
    assert again.status_code == 200  # idempotent
    assert again.json()["status"] == "cancelled"
    other = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=tokens.headers("someone-else"))
    assert other.status_code == 404
    service_only = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-API-Key": tokens.API_KEY})
    assert service_only.status_code == 401


async def test_delete_still_cancels_for_one_release(client: AsyncTestClient[Any]) -> None:
    sub = f"cancel-{uuid.uuid4().hex[:8]}"
    job_id = await _queued_job(client, sub)
    response = await client.delete(f"/api/v1/jobs/{job_id}", headers=tokens.headers(sub))
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


async def test_options_lists_every_method_of_a_job(client: AsyncTestClient[Any]) -> None:
    response = await client.options(f"/api/v1/jobs/{uuid.uuid4()}", headers=tokens.headers())
    assert response.status_code == 204
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"DELETE", "GET", "OPTIONS"}
    cancel = await client.options(f"/api/v1/jobs/{uuid.uuid4()}/cancel", headers=tokens.headers())
    assert set(cancel.headers["allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}
