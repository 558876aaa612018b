"""What the gateway sends OpenRouter besides the prompt (issue 18): provider preferences (privacy routing),
strict JSON-schema output with ``require_parameters``, and prompt-cache breakpoints for the model families
that need them; and what it keeps of the answer (generation id, cached tokens)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.llm import usage_row
from xenios_ai.api.app import create_app
from xenios_ai.llm.tasks import PRIVATE

OPUS = "anthropic/claude-opus-4.5"
SONNET = "anthropic/claude-sonnet-4"
MINI = "openai/gpt-4o-mini"
TRANSCRIPT = "\n".join(
    f"Coach: how did session {i} of your running plan go? Client: I ran {i} km and felt fine."
    for i in range(80)
)  # ~6,700 characters: past LLM_CACHE_MIN_CHARS (4096)


@pytest.fixture
async def client(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> AsyncIterator[AsyncTestClient[Any]]:
    fake_openrouter.reset()
    settings = make_settings(test_env, llm_usage_flush_seconds=0.05, llm_retry_backoff_seconds=0.01)
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def complete(client: AsyncTestClient[Any], body: dict[str, Any], request_id: str | None = None) -> Any:
    headers = tokens.headers("user-gw") | ({"X-Request-ID": request_id} if request_id else {})
    response = await client.post("/api/v1/llm/complete", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# -- privacy routing and strict JSON ------------------------------------------------------------------


async def test_coaching_tasks_ask_for_providers_that_neither_train_on_nor_keep_the_data(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    await complete(client, {"task": "chat", "input": "hi"})

    [request] = fake_openrouter.requests
    assert request.body["provider"] == {"data_collection": "deny", "zdr": True} == PRIVATE
    assert "response_format" not in request.body


async def test_typed_tasks_send_a_strict_schema_and_require_providers_that_honour_it(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(json={"intent": "other", "confidence": 0.4, "alternatives": []}))

    response = await client.post(
        "/api/v1/llm/classify-intent", json={"text": "hello"}, headers=tokens.headers("user-gw")
    )

    assert response.status_code == 200
    [request] = fake_openrouter.requests
    assert request.body["provider"] == {"data_collection": "deny", "zdr": True, "require_parameters": True}
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True


async def test_an_answer_outside_the_schema_is_still_refused_and_the_next_model_asked(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(json={"intent": "not-a-label", "confidence": 0.9}), model=SONNET)
    fake_openrouter.enqueue(
        Reply(json={"intent": "other", "confidence": 0.9, "alternatives": []}), model=MINI
    )

    response = await client.post(
        "/api/v1/llm/classify-intent", json={"text": "hello"}, headers=tokens.headers("user-gw")
    )

    assert (response.status_code, response.json()["model"]) == (200, MINI)


async def test_provider_preferences_are_configurable_per_task(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    env = test_env | {"LLM_PROVIDER_PREFERENCES": '{"chat": {"order": ["anthropic"]}, "session_summary": {}}'}
    async with AsyncTestClient(create_app(make_settings(env))) as client:
        await complete(client, {"task": "chat", "input": "hi"})
        await complete(client, {"task": "session_summary", "input": "hi"})

    chat, summary = fake_openrouter.requests
    assert chat.body["provider"] == {"order": ["anthropic"]}
    assert "provider" not in summary.body


# -- prompt caching -----------------------------------------------------------------------------------


async def test_a_repeated_analysis_reads_its_transcript_from_the_prompt_cache(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, database_url: str
) -> None:
    body = {"task": "session_summary", "input": TRANSCRIPT}
    first_id, second_id = f"cache-1-{time.time_ns()}", f"cache-2-{time.time_ns()}"

    first = await complete(client, body, first_id)
    second = await complete(client, body, second_id)

    system, user = fake_openrouter.requests[0].body["messages"]
    assert isinstance(system["content"], str)  # the system prompt is short: below the cache minimum
    assert user["content"] == [{"type": "text", "text": TRANSCRIPT, "cache_control": {"type": "ephemeral"}}]
    rows = [await asyncio.to_thread(usage_row, database_url, rid) for rid in (first_id, second_id)]
    assert rows[0]["cached_tokens"] == 0
    assert rows[1]["cached_tokens"] > 1000
    assert rows[1]["cost_usd"] < rows[0]["cost_usd"] / 2  # cache reads cost a tenth
    assert second["usage"]["cost_usd"] == pytest.approx(float(rows[1]["cost_usd"]))
    assert first["usage"]["prompt_tokens"] == second["usage"]["prompt_tokens"]
    assert rows[0]["generation_id"].startswith("gen-")
    assert rows[0]["generation_id"] != rows[1]["generation_id"]


async def test_models_that_cache_by_themselves_get_no_markers_and_short_prompts_none(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    env = test_env | {"LLM_MODELS": '{"session_summary": "openai/gpt-4o-mini"}'}
    async with AsyncTestClient(create_app(make_settings(env))) as client:
        await complete(client, {"task": "session_summary", "input": TRANSCRIPT})
        await complete(client, {"task": "chat", "input": "a short question"})

    long_for_openai, short_for_opus = fake_openrouter.requests
    assert all(isinstance(m["content"], str) for m in long_for_openai.body["messages"])
    assert all(isinstance(m["content"], str) for m in short_for_opus.body["messages"])


async def test_a_long_conversation_is_marked_at_its_last_message(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    messages = [
        {"role": "user", "content": TRANSCRIPT},
        {"role": "assistant", "content": "Thanks, noted."},
        {"role": "user", "content": "What should I change next week?"},
    ]

    await complete(client, {"task": "chat", "messages": messages})

    sent = fake_openrouter.requests[0].body["messages"]
    assert [isinstance(m["content"], str) for m in sent] == [True, True, True, False]
    assert sent[-1]["content"][0]["cache_control"] == {"type": "ephemeral"}
