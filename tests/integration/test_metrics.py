"""GET /metrics in-process: the key, HTTP by route template, LLM usage, and the system gauges read from
PostgreSQL and Redis (an isolated database and namespace, no worker: jobs stay queued)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import redis
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.clock import FakeClock
from tests.support.config import make_settings
from xenios_ai.api.app import create_app
from xenios_ai.db.pool import open_pool
from xenios_ai.db.redis import open_redis
from xenios_ai.jobs.gauges import SystemState
from xenios_ai.jobs.queues import WorkerInfo, workers_key

KEY = {"X-API-Key": tokens.API_KEY}
OPUS, SONNET = "anthropic/claude-opus-4.5", "anthropic/claude-sonnet-4"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of an exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(client: AsyncTestClient[Any]) -> str:
    response = await client.get("/metrics", headers=KEY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


@pytest.fixture
async def isolated(
    fresh_env: Callable[..., dict[str, str]],
) -> AsyncIterator[tuple[AsyncTestClient[Any], dict[str, str]]]:
    """The app on its own database and Redis namespace, gauges never cached."""
    env = fresh_env(METRICS_CACHE_SECONDS="0")
    async with AsyncTestClient(create_app(make_settings(env))) as client:
        yield client, env


async def test_metrics_need_a_key(client: AsyncTestClient[Any], test_env: dict[str, str]) -> None:
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"X-API-Key": "nope"})).status_code == 401
    denied = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert denied.json()["code"] == "invalid_metrics_key"
    assert (await client.get("/metrics", headers=KEY)).status_code == 200
    bearer = {"Authorization": f"Bearer {tokens.OTHER_API_KEY}"}
    assert (await client.get("/metrics", headers=bearer)).status_code == 200

    settings = make_settings(test_env, metrics_api_key="scrape-key-123")
    async with AsyncTestClient(create_app(settings)) as own:
        assert (
            await own.get("/metrics", headers={"Authorization": "Bearer scrape-key-123"})
        ).status_code == 200
        assert (await own.get("/metrics", headers={"X-API-Key": "scrape-key-123"})).status_code == 200
        assert (await own.get("/metrics", headers=KEY)).status_code == 200  # the service key still works


async def test_http_requests_are_counted_by_route_template(client: AsyncTestClient[Any]) -> None:
    before = await scrape(client)
    job_route = "/api/v1/jobs/{job_id}"
    for _ in range(3):
        assert (await client.get("/health/live")).status_code == 200
    assert (await client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=tokens.headers())).status_code == 404
    assert (await client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=tokens.headers())).status_code == 404
    assert (await client.get(f"/no/such/{uuid.uuid4()}")).status_code == 404
    assert (await client.request("BREW", "/health/live")).status_code == 405

    after = await scrape(client)

    def delta(**labels: str) -> float:
        return value(after, "xenios_http_requests_total", **labels) - value(
            before, "xenios_http_requests_total", **labels
        )

    assert delta(method="GET", route="/health/live", status="200") == 3
    assert delta(method="GET", route=job_route, status="404") == 2
    assert delta(method="GET", route="unmatched", status="404") == 1
    assert delta(method="OTHER", route="unmatched", status="405") == 1
    assert not [s for s in samples(after) if "no/such" in str(s)], "raw paths must never become labels"
    # the counter is the histogram's count, bucket by bucket consistent
    labels = {"method": "GET", "route": "/health/live", "status": "200"}
    count = value(after, "xenios_http_request_duration_seconds_count", **labels)
    assert count == value(after, "xenios_http_requests_total", **labels)
    assert value(after, "xenios_http_request_duration_seconds_bucket", le="+Inf", **labels) == count
    assert 0 < value(after, "xenios_http_request_duration_seconds_sum", **labels) < count


async def test_llm_requests_tokens_cost_latency_and_fallbacks(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    before = await scrape(client)
    answer = await client.post(
        "/api/v1/llm/complete",
        json={"task": "session_summary", "input": "We talked."},
        headers=tokens.headers(),
    )
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    async with client.stream(
        "POST", "/api/v1/llm/stream", json={"task": "chat", "input": "Hi"}, headers=tokens.headers()
    ) as stream:
        assert stream.status_code == 200
        _ = [chunk async for chunk in stream.aiter_bytes()]
    fake_openrouter.enqueue(Reply(status=503), Reply(status=503), model=OPUS)
    fallback = await client.post(
        "/api/v1/llm/complete", json={"task": "session_summary", "input": "Again."}, headers=tokens.headers()
    )
    assert fallback.json()["model"] == SONNET
    refused = await client.post(
        "/api/v1/llm/complete",
        json={"task": "session_summary", "input": 'No. [[fake:{"status": 400}]]'},
        headers=tokens.headers(),
    )
    assert refused.status_code == 422

    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return round(value(after, name, **labels) - value(before, name, **labels), 9)

    summary = {"task": "session_summary", "model": OPUS}
    assert delta("xenios_llm_requests_total", outcome="succeeded", **summary) == 1
    assert delta("xenios_llm_requests_total", outcome="failed", **summary) == 1
    assert delta("xenios_llm_tokens_total", type="prompt", **summary) >= usage["prompt_tokens"]
    assert delta("xenios_llm_tokens_total", type="completion", **summary) >= usage["completion_tokens"]
    assert delta("xenios_llm_cost_usd_total", **summary) >= usage["cost_usd"] > 0
    assert delta("xenios_llm_request_duration_seconds_count", **summary) == 2
    assert delta("xenios_llm_requests_total", task="chat", model=OPUS, outcome="succeeded") == 1
    assert delta("xenios_llm_time_to_first_token_seconds_count", task="chat", model=OPUS) == 1
    assert delta("xenios_llm_fallbacks_total", task="session_summary", model=SONNET) == 1
    assert delta("xenios_llm_requests_total", task="session_summary", model=SONNET, outcome="succeeded") == 1
    assert delta("xenios_llm_attempt_failures_total", model=OPUS, error="http_503") == 2
    assert delta("xenios_llm_attempt_failures_total", model=OPUS, error="http_400") == 1


async def test_system_gauges_come_from_postgres_and_redis(
    isolated: tuple[AsyncTestClient[Any], dict[str, str]],
) -> None:
    client, env = isolated
    text = await scrape(client)
    assert value(text, "xenios_jobs", kind="analysis", queue="llm", status="queued") == 0
    assert value(text, "xenios_workers_alive", queue="llm") == 0
    assert value(text, "xenios_metrics_source_up", source="postgres") == 1
    assert value(text, "xenios_metrics_source_up", source="redis") == 1

    for _ in range(2):
        submitted = await client.post(
            "/api/v1/jobs/analysis",
            json={"task": "session_summary", "text": "A session."},
            headers=tokens.headers(),
        )
        assert submitted.status_code == 202
    worker = WorkerInfo(
        "host:123", "host", 123, ["llm", "default"], time.time() - 60, time.time() - 1.0, ["j1"]
    )
    stale = WorkerInfo("host:124", "host", 124, ["extraction"], time.time() - 600, time.time() - 300, [])
    rd = redis.Redis.from_url(env["REDIS_URL"])
    rd.hset(
        workers_key(env["REDIS_NAMESPACE"]),
        mapping={w.worker_id: msgspec.json.encode(w) for w in (worker, stale)},
    )
    rd.close()

    text = await scrape(client)

    assert value(text, "xenios_jobs", kind="analysis", queue="llm", status="queued") == 2
    assert value(text, "xenios_jobs", kind="analysis", queue="llm", status="failed") == 0
    assert value(text, "xenios_queue_messages", queue="llm", state="waiting") == 2
    assert value(text, "xenios_queue_messages", queue="default", state="waiting") == 0
    assert value(text, "xenios_jobs_oldest_queued_seconds", queue="llm") > 0
    assert value(text, "xenios_workers_alive", queue="llm") == 1
    assert value(text, "xenios_workers_alive", queue="default") == 1
    assert value(text, "xenios_workers_alive", queue="extraction") == 0
    assert 1.0 <= value(text, "xenios_worker_heartbeat_age_seconds", worker="host:123") < 30
    assert value(text, "xenios_worker_heartbeat_age_seconds", worker="host:124") >= 300
    assert value(text, "xenios_worker_current_jobs", worker="host:123") == 1
    build = [k for k in samples(text) if k[0] == "xenios_build_info"]
    assert build
    assert dict(build[0][1])["environment"] == "test"


async def test_a_source_that_fails_is_reported_not_fatal(fresh_env: Callable[..., dict[str, str]]) -> None:
    env = fresh_env(METRICS_CACHE_SECONDS="0", REDIS_URL="redis://127.0.0.1:1/0", READY_TIMEOUT_SECONDS="1")
    async with AsyncTestClient(create_app(make_settings(env))) as client:
        text = await scrape(client)
    assert value(text, "xenios_metrics_source_up", source="redis") == 0
    assert value(text, "xenios_metrics_source_up", source="postgres") == 1
    assert value(text, "xenios_jobs", kind="analysis", queue="llm", status="queued") == 0
    assert not [k for k in samples(text) if k[0] == "xenios_queue_messages"]


async def test_system_gauges_are_read_at_most_once_per_cache_time(
    fresh_env: Callable[..., dict[str, str]],
) -> None:
    """Scrapes within METRICS_CACHE_SECONDS reuse one read of PostgreSQL and Redis; the first scrape after
    it reads again and sees what changed meanwhile."""
    settings = make_settings(fresh_env(METRICS_CACHE_SECONDS="15"))
    clock = FakeClock()
    db = await open_pool(settings, wait=True)
    rd = open_redis(settings)
    try:
        state = SystemState(settings, db, rd, clock=clock.monotonic)
        first = await state.families()
        await rd.hset(workers_key(settings.redis_namespace), "host:9", msgspec.json.encode(
            WorkerInfo("host:9", "host", 9, ["llm"], time.time() - 5, time.time(), [])
        ))  # fmt: skip
        clock.advance(14.9)
        assert await state.families() is first  # cached: the new worker is not seen yet
        clock.advance(0.2)
        fresh = await state.families()
        assert fresh is not first
        alive = {
            tuple(sample.labels.items()): sample.value
            for family in fresh
            if family.name == "xenios_workers_alive"
            for sample in family.samples
        }
        assert alive[(("queue", "llm"),)] == 1
    finally:
        await rd.aclose()
        await db.close()
