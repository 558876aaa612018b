"""Cancel is POST /api/v1/jobs/{id}/cancel; DELETE still cancels for one release (deprecated); OPTIONS on
a job lists every method of the path (decision 0010: what schemathesis found).

The cancel tests run the app on an isolated database and Redis namespace (`fresh_env`): no worker serves
it, so their jobs stay queued (the session's job worker, started by other files in the same process,
would otherwise take them)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.support import tokens
from tests.support.config import make_settings
from xenios_ai.api.app import create_app


@pytest.fixture
async def isolated(fresh_env: Callable[..., dict[str, str]]) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app on its own database and Redis namespace, which no worker serves."""
    async with AsyncTestClient(create_app(make_settings(fresh_env()))) as client:
        yield client


async def _queued_job(client: AsyncTestClient[Any], sub: str) -> str:
    body = {"task": "session_summary", "text": f"a session ({uuid.uuid4()})"}
    response = await client.post("/api/v1/jobs/analysis", json=body, headers=tokens.headers(sub))
    assert response.status_code == 202
    job_id: str = response.json()["id"]
    return job_id


async def test_post_cancel_cancels_and_the_job_stays_readable(isolated: AsyncTestClient[Any]) -> None:
    client = isolated
    sub = f"cancel-{uuid.uuid4().hex[:8]}"
    job_id = await _queued_job(client, sub)  # no worker serves it: queued until cancelled
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


async def test_delete_still_cancels_for_one_release(isolated: AsyncTestClient[Any]) -> None:
    client = isolated
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
