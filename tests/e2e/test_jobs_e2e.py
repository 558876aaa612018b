"""Jobs end to end: the API on Granian, a real worker process, PostgreSQL, Redis and the fake LLM.

The fake answers according to ``[[fake:{...}]]`` triggers in the text (see tests/fakes/openrouter.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.jobs import WEBHOOK_SECRET, WebhookReceiver, job_events, submit_analysis, wait_for_job
from tests.support.processes import WorkerProcess
from tests.support.sse import sse_events
from xenios_ai.api.app import create_app

pytestmark = pytest.mark.usefixtures("job_worker")


def _text(trigger: dict[str, Any] | None = None) -> str:
    fake = f" [[fake:{json.dumps(trigger)}]]" if trigger else ""
    return f"Coach: how did the week go? Client: better, I ran twice. ({uuid.uuid4()}){fake}"


def test_analysis_job_runs_to_a_result(api_server_url: str, job_worker: WorkerProcess) -> None:
    response = submit_analysis(api_server_url, {"task": "session_summary", "text": _text()})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["links"] == {
        "self": f"/api/v1/jobs/{accepted['job_id']}",
        "events": f"/api/v1/jobs/{accepted['job_id']}/events",
    }
    assert response.headers["location"] == accepted["links"]["self"]

    job = wait_for_job(api_server_url, accepted["job_id"])

    assert job["status"] == "succeeded", job
    assert (job["progress"], job["attempts"], job["error"]) == (1.0, 1, None)
    result = job["result"]
    assert result["task"] == "session_summary"
    assert result["model"] == "anthropic/claude-opus-4.5"
    assert result["fallback_used"] is False
    assert result["content"]
    assert result["usage"]["prompt_tokens"] > 0
    assert result["usage"]["cost_usd"] > 0


def test_the_llm_fallback_is_part_of_the_job(api_server_url: str, fake_openrouter: FakeOpenRouter) -> None:
    fake_openrouter.enqueue(Reply(status=503), Reply(status=503), model="anthropic/claude-opus-4.5")
    response = submit_analysis(api_server_url, {"task": "session_summary", "text": _text()})
    job = wait_for_job(api_server_url, response.json()["job_id"])
    assert job["status"] == "succeeded"
    assert job["result"]["fallback_used"] is True
    assert job["result"]["model"] == "anthropic/claude-sonnet-4"


def test_a_transient_llm_failure_is_retried_later(api_server_url: str) -> None:
    response = submit_analysis(api_server_url, {"task": "session_summary", "text": _text({"status": 503})})
    job_id = response.json()["job_id"]
    wait_for_job(api_server_url, job_id, statuses=("running",))
    job = wait_for_job(api_server_url, job_id, statuses=("queued", "failed"))
    assert job["status"] == "queued"  # back in the queue until its backoff is over
    assert job["attempts"] == 1
    assert job["error"]["code"] == "upstream_unavailable"


def test_an_upstream_refusal_fails_the_job_at_once_with_its_code(api_server_url: str) -> None:
    response = submit_analysis(api_server_url, {"task": "session_summary", "text": _text({"status": 400})})
    job = wait_for_job(api_server_url, response.json()["job_id"])
    assert job["status"] == "failed"
    assert job["attempts"] == 1  # bad input is never retried
    assert job["error"]["code"] not in ("internal_error", "upstream_unavailable")
    assert job["error"]["message"]


def test_events_stream_state_progress_and_end_at_the_terminal_state(api_server_url: str) -> None:
    job_id = submit_analysis(
        api_server_url, {"task": "session_summary", "text": _text({"hang": 0.8})}
    ).json()["job_id"]
    url = f"{api_server_url}/api/v1/jobs/{job_id}/events"
    started = time.monotonic()
    with httpx.stream("GET", url, headers=tokens.headers("user-1"), timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    assert time.monotonic() - started < 10
    names = [name for name, _ in events]
    assert names[0] == "state"
    assert events[0][1]["status"] in ("queued", "running")
    # The handler reports 0.05 before calling the model: as an event, or already in the first state.
    progress = {"progress": 0.05, "message": "calling the model"}
    assert ("progress", progress) in events or events[0][1]["progress"] == 0.05
    assert names[-1] == "state"
    assert events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["result"]["content"]

    # Opened after the end: the final state, then the stream ends.
    again = job_events(api_server_url, job_id, timeout=5)
    assert [(name, data["status"]) for name, data in again] == [("state", "succeeded")]


def test_cancel_stops_a_running_job_and_its_llm_call(
    api_server_url: str, fake_openrouter: FakeOpenRouter
) -> None:
    marker = uuid.uuid4().hex
    text = f"{marker} [[fake:{json.dumps({'hang': 30})}]]"
    job_id = submit_analysis(api_server_url, {"task": "session_summary", "text": text}).json()["job_id"]
    wait_for_job(api_server_url, job_id, statuses=("running",))
    fake_openrouter.wait_for(lambda requests: any(marker in json.dumps(r.body) for r in requests), timeout=10)

    response = httpx.delete(f"{api_server_url}/api/v1/jobs/{job_id}", headers=tokens.headers("user-1"))
    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True

    job = wait_for_job(api_server_url, job_id, timeout=5)
    assert job["status"] == "cancelled"
    assert job["error"] == {"code": "cancelled", "message": "the job was cancelled"}
    assert job["result"] is None
    fake_openrouter.wait_for(
        lambda requests: any(marker in json.dumps(r.body) and r.client_disconnected for r in requests),
        timeout=5,
    )
    again = httpx.delete(f"{api_server_url}/api/v1/jobs/{job_id}", headers=tokens.headers("user-1"))
    assert again.status_code == 200


def test_cancelling_a_finished_job_is_a_conflict(api_server_url: str) -> None:
    job_id = submit_analysis(api_server_url, {"task": "session_summary", "text": _text()}).json()["job_id"]
    wait_for_job(api_server_url, job_id)
    response = httpx.delete(f"{api_server_url}/api/v1/jobs/{job_id}", headers=tokens.headers("user-1"))
    assert response.status_code == 409
    assert response.json()["code"] == "job_finished"


def test_idempotency_key_returns_the_same_job(api_server_url: str) -> None:
    key = f"submit-{uuid.uuid4()}"
    body = {"task": "session_summary", "text": _text()}
    first = submit_analysis(api_server_url, body, **{"Idempotency-Key": key})
    second = submit_analysis(api_server_url, body, **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert second.json()["job_id"] == first.json()["job_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers

    different = submit_analysis(api_server_url, {**body, "text": _text()}, **{"Idempotency-Key": key})
    assert different.status_code == 409
    assert different.json()["code"] == "idempotency_key_reused"
    other_user = submit_analysis(api_server_url, body, sub="user-other", **{"Idempotency-Key": key})
    assert other_user.status_code == 202
    assert other_user.json()["job_id"] != first.json()["job_id"]


def test_a_user_never_sees_or_cancels_another_users_job(api_server_url: str) -> None:
    job_id = submit_analysis(
        api_server_url, {"task": "session_summary", "text": _text()}, sub="owner"
    ).json()["job_id"]
    intruder = tokens.headers("intruder")
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/events")):
        response = httpx.request(method, f"{api_server_url}/api/v1/jobs/{job_id}{path}", headers=intruder)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "job_not_found"
    listed = httpx.get(f"{api_server_url}/api/v1/jobs", headers=intruder).json()
    assert job_id not in [item["id"] for item in listed["items"]]
    # Exactly as for a job that does not exist at all.
    missing = httpx.get(f"{api_server_url}/api/v1/jobs/{uuid.uuid4()}", headers=intruder).json()
    theirs = httpx.get(f"{api_server_url}/api/v1/jobs/{job_id}", headers=intruder).json()
    assert {k: v for k, v in missing.items() if k not in ("detail", "instance", "request_id")} == {
        k: v for k, v in theirs.items() if k not in ("detail", "instance", "request_id")
    }


def test_list_filters_and_pages(api_server_url: str) -> None:
    sub = f"lister-{uuid.uuid4()}"
    ids = [
        submit_analysis(api_server_url, {"task": "session_summary", "text": _text()}, sub=sub).json()[
            "job_id"
        ]
        for _ in range(3)
    ]
    for job_id in ids:
        wait_for_job(api_server_url, job_id, sub=sub)
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"status": "succeeded", "kind": "analysis", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(f"{api_server_url}/api/v1/jobs", params=params, headers=tokens.headers(sub)).json()
        seen += [item["id"] for item in page["items"]]
        assert all("result" not in item for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    none = httpx.get(
        f"{api_server_url}/api/v1/jobs", params={"status": "failed"}, headers=tokens.headers(sub)
    )
    assert none.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"task": "session_summary"}, "invalid_body"),
        ({"task": "session_summary", "text": "x", "source_job_id": str(uuid.uuid4())}, "invalid_body"),
        ({"task": "chat", "text": "x"}, "invalid_body"),
        ({"task": "session_summary", "text": "x", "colour": "red"}, "invalid_body"),
        (
            {"task": "session_summary", "text": "x", "webhook_url": "http://127.0.0.1:1/hook"},
            "invalid_webhook_url",
        ),
        (
            {"task": "session_summary", "text": "x", "webhook_url": "http://10.0.0.5/hook"},
            "invalid_webhook_url",
        ),
        (
            {"task": "session_summary", "text": "x", "webhook_url": "file:///etc/passwd"},
            "invalid_webhook_url",
        ),
    ],
)
def test_invalid_submits_are_422(api_server_url: str, body: dict[str, Any], code: str) -> None:
    response = submit_analysis(api_server_url, body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code


def test_analysis_of_a_finished_jobs_text(api_server_url: str) -> None:
    source = submit_analysis(api_server_url, {"task": "session_summary", "text": _text()}).json()["job_id"]
    wait_for_job(api_server_url, source)
    response = submit_analysis(api_server_url, {"task": "insight_generation", "source_job_id": source})
    assert response.status_code == 202, response.text
    job = wait_for_job(api_server_url, response.json()["job_id"])
    assert job["status"] == "succeeded"
    assert job["source_job_id"] == source
    assert job["result"]["source_job_id"] == source

    theirs = submit_analysis(
        api_server_url, {"task": "insight_generation", "source_job_id": source}, sub="someone-else"
    )
    assert theirs.status_code == 404
    slow = submit_analysis(api_server_url, {"task": "session_summary", "text": _text({"hang": 3})}).json()[
        "job_id"
    ]
    unfinished = submit_analysis(api_server_url, {"task": "insight_generation", "source_job_id": slow})
    assert unfinished.status_code == 409
    assert unfinished.json()["code"] == "source_job_not_ready"


def _verify_signature(headers: dict[str, str], body: bytes) -> None:
    secret = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 300


@pytest.fixture
async def private_webhooks_client(test_env: dict[str, str]) -> AsyncIterator[AsyncTestClient[Any]]:
    """The API allowing loopback webhook URLs (WEBHOOK_ALLOW_PRIVATE), as the shared worker does."""
    async with AsyncTestClient(create_app(make_settings(test_env, webhook_allow_private=True))) as client:
        yield client


async def test_a_signed_webhook_reaches_the_receiver_and_is_retried(
    private_webhooks_client: AsyncTestClient[Any],
) -> None:
    with WebhookReceiver() as receiver:
        receiver.statuses = [503]  # the first delivery fails; the retry succeeds
        response = await private_webhooks_client.post(
            "/api/v1/jobs/analysis",
            json={"task": "session_summary", "text": _text(), "webhook_url": receiver.url},
            headers=tokens.headers("hooked"),
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        deliveries = await asyncio.to_thread(receiver.wait_for, 2, 20)

    for headers, body in deliveries:
        _verify_signature(headers, body)
        event = json.loads(body)
        assert event["type"] == "job.succeeded"
        assert event["data"]["job_id"] == job_id
        assert event["data"]["id"] == job_id
        assert event["data"]["owner"] == "hooked"  # so the MVP's backend can act for the user
        assert event["data"]["status"] == "succeeded"
        assert "result" not in event["data"]  # not asked for
    assert deliveries[0][0]["webhook-id"] == deliveries[1][0]["webhook-id"]
    deadline = time.monotonic() + 5
    while True:
        job = (
            await private_webhooks_client.get(f"/api/v1/jobs/{job_id}", headers=tokens.headers("hooked"))
        ).json()
        if job["webhook"]["delivered_at"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert job["webhook"]["attempts"] == 2
    assert job["webhook"]["delivered_at"] is not None
    assert job["webhook"]["error"] is None


async def test_a_webhook_carries_the_result_when_asked_and_the_service_reads_the_job(
    private_webhooks_client: AsyncTestClient[Any],
) -> None:
    with WebhookReceiver() as receiver:
        response = await private_webhooks_client.post(
            "/api/v1/jobs/analysis",
            json={
                "task": "session_summary", "text": _text(), "webhook_url": receiver.url,
                "webhook_include_result": True,
            },
            headers=tokens.headers("hooked-with-result"),
        )  # fmt: skip
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        [(headers, body)] = await asyncio.to_thread(receiver.wait_for, 1, 20)
    _verify_signature(headers, body)
    data = json.loads(body)["data"]
    assert (data["id"], data["owner"], data["status"]) == (job_id, "hooked-with-result", "succeeded")
    # What a webhook handler does next, with its API key alone (no user token): the same result.
    job = await private_webhooks_client.get(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": tokens.API_KEY})
    assert job.status_code == 200, job.text
    assert data["result"] == job.json()["result"]
    assert data["result"]["content"]


def test_a_burst_of_jobs_keeps_every_worker_thread_busy(api_server_url: str) -> None:
    """Four threads, twenty 0.5 s LLM calls: five rounds, each next job fetched as soon as a thread frees.

    The k-th job to finish frees the thread the (k+4)-th job to start takes: the time between them is that
    thread's idle time. Dramatiq's stock consumer backs off up to 1 s when its threads are all busy (about
    0.2 s of idle time per job here, against 35 ms); this one polls every 50 ms while busy and wakes at once
    when idle.
    """
    ids = [
        submit_analysis(api_server_url, {"task": "session_summary", "text": _text({"hang": 0.5})}).json()[
            "job_id"
        ]
        for _ in range(20)
    ]
    jobs = [wait_for_job(api_server_url, job_id) for job_id in ids]
    assert {job["status"] for job in jobs} == {"succeeded"}
    assert {job["attempts"] for job in jobs} == {1}
    starts = sorted(datetime.fromisoformat(job["started_at"]) for job in jobs)
    finishes = sorted(datetime.fromisoformat(job["finished_at"]) for job in jobs)
    idle = [(start - freed).total_seconds() for start, freed in zip(starts[4:], finishes, strict=False)]
    mean_idle = sum(idle) / len(idle)
    print(f"\nthread idle time between jobs: mean {mean_idle * 1000:.0f} ms, max {max(idle) * 1000:.0f} ms")
    assert mean_idle < 0.12
