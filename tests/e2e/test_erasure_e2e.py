"""Erasing a user while a worker runs one of their jobs: the API on Granian, a real worker, the fake LLM."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from tests.fakes.openrouter import FakeOpenRouter
from tests.support import tokens
from tests.support.jobs import submit_analysis, wait_for_job
from xenios_ai.jobs.store_stewardship import subject_hash
from xenios_ai.observability.joblog import log_key

pytestmark = pytest.mark.usefixtures("job_worker")


def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not within {timeout} s")


def test_erasing_a_user_mid_job_stops_the_worker_and_nothing_is_written_back(
    api_server_url: str, fake_openrouter: FakeOpenRouter, test_env: dict[str, str], worker_log: Path
) -> None:
    owner = f"erase-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    text = f"Sarah Lee said {marker} [[fake:{json.dumps({'hang': 30})}]]"
    job_id = submit_analysis(api_server_url, {"task": "session_summary", "text": text}, sub=owner).json()[
        "job_id"
    ]
    wait_for_job(api_server_url, job_id, sub=owner, statuses=("running",))
    fake_openrouter.wait_for(lambda requests: any(marker in json.dumps(r.body) for r in requests), timeout=10)
    store = redis.Redis.from_url(test_env["REDIS_URL"])
    key = log_key(test_env["REDIS_NAMESPACE"], job_id)
    store.rpush(key, json.dumps({"ts": time.time(), "level": "INFO", "msg": "an operator's note"}))

    response = httpx.delete(
        f"{api_server_url}/api/v1/users/{owner}/data", headers={"X-API-Key": tokens.API_KEY}, timeout=10
    )

    assert response.status_code == 200, response.text
    erased = response.json()["erased"]
    assert (erased["jobs"], erased["running_jobs_cancelled"], erased["job_logs"]) == (1, 1, 1)
    # the worker stops at once: its LLM request is closed
    fake_openrouter.wait_for(
        lambda requests: any(marker in json.dumps(r.body) and r.client_disconnected for r in requests),
        timeout=10,
    )
    _until(lambda: f"job {job_id} was erased while it ran" in worker_log.read_text(), 10, "the worker's end")
    time.sleep(1.5)  # the worker's log shipper runs at least once a second
    assert not store.exists(key)  # its last lines did not bring the log back
    gone = httpx.get(f"{api_server_url}/api/v1/jobs/{job_id}", headers=tokens.headers(owner), timeout=5)
    assert gone.status_code == 404
    with psycopg.connect(test_env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM ai_backend.jobs WHERE id = %s", (job_id,)).fetchone() == (
            0,
        )
        # the cancelled request's usage row, recorded by the worker after the erasure: pseudonymised
        rows = conn.execute(
            """SELECT owner = %s, prompt IS NULL AND response IS NULL AND job_id IS NULL
               FROM ai_backend.llm_requests
               WHERE owner = %s OR owner = (SELECT pseudonym FROM ai_backend.erased_subjects
                                            WHERE subject_hash = %s)""",
            (owner, owner, subject_hash(owner)),
        ).fetchall()
    assert rows == [(False, True)]
    store.close()
