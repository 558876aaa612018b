"""Usage accounting: one ai_backend.llm_requests row per LLM request, written in batches off the request
path, surviving a PostgreSQL blip; and the OpenRouter key never showing in logs or bodies."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from loguru import logger

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.llm import usage_row
from xenios_ai.api.app import create_app
from xenios_ai.db.pool import open_pool
from xenios_ai.llm.usage import UsageRecord, UsageWriter
from xenios_ai.settings import Settings

OPUS = "anthropic/claude-opus-4.5"
SONNET = "anthropic/claude-sonnet-4"


@pytest.fixture
async def client(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> AsyncIterator[AsyncTestClient[Any]]:
    fake_openrouter.reset()
    settings = make_settings(test_env, llm_usage_flush_seconds=0.05, llm_retry_backoff_seconds=0.01)
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


def new_request_id(name: str) -> str:
    return f"{name}-{time.time_ns()}"


async def test_a_completion_row_matches_the_providers_usage(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, database_url: str
) -> None:
    fake_openrouter.enqueue(Reply(prompt_tokens=1234, completion_tokens=56, cost=0.01234567))
    request_id = new_request_id("usage-complete")

    response = await client.post(
        "/api/v1/llm/complete",
        json={"task": "session_summary", "input": "Client: I ran three times this week."},
        headers=tokens.headers("coach-1") | {"X-Request-ID": request_id},
    )
    assert response.status_code == 200

    row = await asyncio.to_thread(usage_row, database_url, request_id)
    assert {k: row[k] for k in ("owner", "task", "mode", "status", "error_code", "model", "provider")} == {
        "owner": "coach-1",
        "task": "session_summary",
        "mode": "complete",
        "status": "succeeded",
        "error_code": None,
        "model": OPUS,
        "provider": "Fake",
    }
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1234, 56)
    assert float(row["cost_usd"]) == pytest.approx(0.01234567)
    assert row["fallback_used"] is False
    assert row["latency_ms"] > 0
    assert 0 < row["ttft_ms"] <= row["latency_ms"]  # completions stream internally: ttft is known
    assert row["finish_reason"] == "stop"
    assert [a["model"] for a in row["attempts"]] == [OPUS]
    assert (row["prompt"], row["response"]) == (None, None)  # no text stored by default


async def test_a_stream_row_has_usage_and_time_to_first_token(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, database_url: str
) -> None:
    fake_openrouter.enqueue(Reply(prompt_tokens=40, completion_tokens=9, cost=0.0002))
    request_id = new_request_id("usage-stream")

    response = await client.post(
        "/api/v1/llm/stream",
        json={"task": "chat", "input": "hi"},
        headers=tokens.headers("client-2") | {"X-Request-ID": request_id},
    )
    assert "event: done" in response.text

    row = await asyncio.to_thread(usage_row, database_url, request_id)
    assert (row["mode"], row["status"], row["owner"]) == ("stream", "succeeded", "client-2")
    assert (row["prompt_tokens"], row["completion_tokens"], float(row["cost_usd"])) == (40, 9, 0.0002)
    assert 0 < row["ttft_ms"] <= row["latency_ms"]


async def test_usage_of_failed_attempts_is_summed_and_failures_are_recorded(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, database_url: str
) -> None:
    fake_openrouter.enqueue(
        Reply(json={"intent": "nope"}, prompt_tokens=10, completion_tokens=3, cost=0.001), model=SONNET
    )
    fake_openrouter.enqueue(Reply(status=503), Reply(status=503), model="openai/gpt-4o-mini")
    request_id = new_request_id("usage-failed")

    response = await client.post(
        "/api/v1/llm/classify-intent",
        json={"text": "hello"},
        headers=tokens.headers() | {"X-Request-ID": request_id},
    )
    assert response.status_code == 503

    row = await asyncio.to_thread(usage_row, database_url, request_id)
    assert (row["status"], row["error_code"], row["task"]) == (
        "failed",
        "upstream_unavailable",
        "intent_classification",
    )
    assert (row["prompt_tokens"], row["completion_tokens"], float(row["cost_usd"])) == (10, 3, 0.001)
    assert row["fallback_used"] is True
    assert [(a["model"], a["error"]) for a in row["attempts"]] == [
        (SONNET, "invalid_output"),
        ("openai/gpt-4o-mini", "http_503"),
        ("openai/gpt-4o-mini", "http_503"),
    ]


async def test_prompt_and_answer_are_stored_only_when_asked(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter, database_url: str
) -> None:
    fake_openrouter.reset()
    request_id = new_request_id("usage-content")
    settings = make_settings(test_env, llm_store_content=True, llm_usage_flush_seconds=0.05)
    async with AsyncTestClient(create_app(settings)) as client:
        await client.post(
            "/api/v1/llm/stream",
            json={"task": "chat", "input": "remember this"},
            headers=tokens.headers() | {"X-Request-ID": request_id},
        )

    row = await asyncio.to_thread(usage_row, database_url, request_id)
    assert row["prompt"][-1] == {"role": "user", "content": "remember this"}
    assert row["response"] == "This is a deterministic reply from the fake OpenRouter."


def usage(request_id: str, **fields: Any) -> UsageRecord:
    row: dict[str, Any] = {
        "created_at": time.time(), "request_id": request_id, "owner": "u", "task": "chat",
        "mode": "complete", "status": "succeeded", "model": OPUS, "fallback_used": False, "attempts": [],
        "prompt_tokens": 1, "completion_tokens": 2, "cost_usd": 0.5, "latency_ms": 3.0,
    }  # fmt: skip
    return UsageRecord(**(row | fields))


async def test_a_nul_in_stored_content_or_a_bad_row_costs_no_other_row(
    settings: Settings, database_url: str
) -> None:
    ids = [new_request_id(f"usage-batch-{name}") for name in ("nul", "out-of-range", "plain", "last")]
    rows = [
        usage(
            ids[0],
            prompt=[{"role": "user", "content": "a\x00b \\u0000"}],
            response="x\x00y",
            owner="o\x00wner",
        ),
        usage(ids[1], prompt_tokens=2**40),  # integer out of range: PostgreSQL refuses this row
        usage(ids[2]),
        usage(ids[3], response="fine"),
    ]
    pool = await open_pool(settings)
    writer = UsageWriter(pool, settings)  # not started: flushed here, as ONE batch
    lines = io.StringIO()
    sink = logger.add(lines, level="ERROR", format="{message} {extra}")
    try:
        for row in rows:
            writer.record(row)
        await writer.flush()
    finally:
        logger.remove(sink)
        await pool.close()

    assert (writer.pending, writer.written) == (0, 3)
    nul = await asyncio.to_thread(usage_row, database_url, ids[0])
    assert nul["prompt"] == [{"role": "user", "content": "a\ufffdb \\u0000"}]  # a literal "\u0000" stays
    assert (nul["response"], nul["owner"]) == ("x\ufffdy", "o\ufffdwner")
    assert (await asyncio.to_thread(usage_row, database_url, ids[2]))["status"] == "succeeded"
    assert (await asyncio.to_thread(usage_row, database_url, ids[3]))["response"] == "fine"
    with psycopg.connect(database_url) as conn:
        refused = conn.execute("SELECT 1 FROM ai_backend.llm_requests WHERE request_id = %s", (ids[1],))
        assert refused.fetchone() is None
    logged = lines.getvalue()
    assert "1 LLM usage row(s) not stored" in logged
    assert ids[1] in logged
    assert all(request_id not in logged for request_id in (ids[0], ids[2], ids[3]))


async def test_rows_wait_out_a_database_blip_without_slowing_requests(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, database_url: str
) -> None:
    request_ids = [new_request_id(f"usage-blip-{i}") for i in range(3)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE ai_backend.llm_requests RENAME TO llm_requests_away")
        try:
            for request_id in request_ids:
                started = time.monotonic()
                response = await client.post(
                    "/api/v1/llm/complete",
                    json={"task": "chat", "input": "hi"},
                    headers=tokens.headers() | {"X-Request-ID": request_id},
                )
                assert response.status_code == 200
                assert time.monotonic() - started < 0.5
            await asyncio.sleep(0.3)  # the writer tries, fails, and keeps the rows
        finally:
            conn.execute("ALTER TABLE ai_backend.llm_requests_away RENAME TO llm_requests")

    for request_id in request_ids:
        row = await asyncio.to_thread(usage_row, database_url, request_id, timeout=10)
        assert row["status"] == "succeeded"


async def test_rows_that_cannot_be_written_at_shutdown_are_logged_not_lost(settings: Settings) -> None:
    broken = make_settings(
        {}, database_url="postgresql://nobody@127.0.0.1:1/none", llm_usage_flush_seconds=0.05
    )
    pool = await open_pool(broken)
    writer = UsageWriter(pool, settings)
    writer.start()
    lines = io.StringIO()
    sink = logger.add(lines, level="ERROR", format="{message} {extra}")
    try:
        record = UsageRecord(
            created_at=time.time(), request_id="lost-1", owner="u", task="chat", mode="complete",
            status="succeeded", model=OPUS, fallback_used=False, attempts=[], prompt_tokens=1,
            completion_tokens=2, cost_usd=0.5, latency_ms=3.0,
        )  # fmt: skip
        writer.record(record)
        await writer.aclose(timeout=0.5)
    finally:
        logger.remove(sink)
        await pool.close()
    assert writer.pending == 0
    assert "1 LLM usage row(s) not stored" in lines.getvalue()
    assert "lost-1" in lines.getvalue()


async def test_the_openrouter_key_never_reaches_logs_or_bodies(
    api_server_url: str, api_log: Path, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    key = fake_openrouter.api_key
    assert key
    bodies = []
    async with httpx.AsyncClient(base_url=api_server_url, timeout=10, headers=tokens.headers()) as http:
        for status in (401, 402, 400, 500):
            trigger = f'hi [[fake:{{"status": {status}, "error_message": "bad key {key}"}}]]'
            response = await http.post("/api/v1/llm/complete", json={"task": "chat", "input": trigger})
            bodies.append(response.text)
            stream = await http.post("/api/v1/llm/stream", json={"task": "chat", "input": trigger})
            bodies.append(stream.text)
    assert all(key not in body for body in bodies)
    assert any("upstream_auth_failed" in body for body in bodies)
    time.sleep(0.2)
    log = api_log.read_text()
    assert "/api/v1/llm/complete" in log
    assert key not in log
    assert key[-12:] not in log
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)  # every line is JSON, none broken by an exception dump
