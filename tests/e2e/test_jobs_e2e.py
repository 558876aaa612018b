"""Jobs end to end: the API on Granian, a real worker process, PostgreSQL, Redis and the fake LLM."""

from __future__ import annotations

import httpx

from tests.fakes.openrouter import FakeOpenRouter
from tests.support import tokens
from tests.support.jobs import wait_for_job
from tests.support.processes import WorkerProcess


def test_analysis_job_runs_to_a_result(
    api_server_url: str, job_worker: WorkerProcess, fake_openrouter: FakeOpenRouter
) -> None:
    response = httpx.post(
        f"{api_server_url}/api/v1/jobs/analysis",
        json={"task": "session_summary", "text": "Coach: how did the week go? Client: better, I ran twice."},
        headers=tokens.headers("user-e2e"),
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["links"]["self"] == f"/api/v1/jobs/{accepted['job_id']}"
    assert response.headers["location"] == accepted["links"]["self"]

    job = wait_for_job(api_server_url, accepted["job_id"], sub="user-e2e")

    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0
    assert job["attempts"] == 1
    assert job["error"] is None
    result = job["result"]
    assert result["task"] == "session_summary"
    assert result["model"] == "anthropic/claude-opus-4.5"
    assert result["fallback_used"] is False
    assert result["content"]
    assert result["usage"]["prompt_tokens"] > 0
