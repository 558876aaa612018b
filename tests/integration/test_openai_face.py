"""The /v1 face in-process: its OpenAPI document and the service's own limits in OpenAI's error shape.

The SDK-driven behaviour (completions, streams, faults, errors as the SDKs' exceptions) is in
tests/clients.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from xenios_ai.api.app import create_app

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}


async def test_openapi_documents_the_v1_routes(client: AsyncTestClient[Any]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]

    chat = paths["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"apiKey": [], "supabaseJWT": []}]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletionRequest"
    )
    assert chat["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletion"
    )
    assert chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert paths["/v1/models"]["get"]["security"] == [{"apiKey": []}]
    assert "/v1/models/{model_id}" in paths
    request = schema["components"]["schemas"]["ChatCompletionRequest"]
    assert {
        "model",
        "messages",
        "stream",
        "stream_options",
        "response_format",
        "max_completion_tokens",
    } <= set(request["properties"])


async def test_the_users_rate_limit_is_an_openai_rate_limit_error(test_env: dict[str, str]) -> None:
    settings = make_settings(test_env, rate_limit_llm_per_minute=1)
    headers = tokens.headers("user-openai-limited")
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
        response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)

    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "rate_limit_error",
            "code": "rate_limited",
            "param": None,
        }
    }


async def test_a_used_up_budget_refuses_completions_and_streams_before_they_start(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> None:
    settings = make_settings(
        test_env, budget_usd_per_user_month=0.005, budget_reserve_usd=0.001, llm_usage_flush_seconds=0.05
    )
    fake_openrouter.default = Reply(cost=0.006)
    headers = tokens.headers(f"user-openai-budget-{uuid.uuid4().hex[:8]}")
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
        for _ in range(100):  # the charge is settled off the request path
            usage = (await client.get("/api/v1/usage", headers=headers)).json()
            if usage["budget"]["held_usd"] == 0:
                break
            await asyncio.sleep(0.05)
        sent = len(fake_openrouter.requests)
        refused = [
            await client.post("/v1/chat/completions", json=CHAT | extra, headers=headers)
            for extra in ({}, {"stream": True})
        ]

    for response in refused:
        assert response.status_code == 429
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert response.json()["error"]["code"] == "budget_exceeded"
    assert len(fake_openrouter.requests) == sent  # neither reached the provider
