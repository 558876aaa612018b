"""The /v1 face in-process: its OpenAPI document and the service's own limits in OpenAI's error shape.

The SDK-driven behaviour (completions, streams, faults, errors as the SDKs' exceptions) is in
tests/clients.
"""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

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
