"""POST /api/v1/llm/complete and GET /api/v1/llm/tasks over HTTP, against the fake OpenRouter.

Routing rules (DESIGN.md section 4): retries with Retry-After, fallback to the next model, no retry or
fallback on a request the provider refuses, and the all-failed problem with its attempts.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from loguru import logger

from tests.fakes.openrouter import DEFAULT_CONTENT, FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from xenios_ai.api.app import create_app
from xenios_ai.llm.wire import MAX_BODY_BYTES

OPUS = "anthropic/claude-opus-4.5"
SONNET = "anthropic/claude-sonnet-4"
MINI = "openai/gpt-4o-mini"
COMPLETE = "/api/v1/llm/complete"
FAST = {
    "llm_timeout_seconds": 0.5,
    "llm_first_token_timeout_seconds": 0.5,
    "llm_stream_idle_timeout_seconds": 0.5,
    "llm_retry_backoff_seconds": 0.01,
    "llm_max_retry_after_seconds": 1.5,
    "llm_usage_flush_seconds": 0.05,
}

ClientFactory = Callable[..., Any]


@pytest.fixture
def make_client(test_env: dict[str, str], fake_openrouter: FakeOpenRouter) -> ClientFactory:
    """``async with make_client(**setting_overrides) as client``: the app with fast LLM limits."""
    fake_openrouter.reset()

    def factory(**overrides: Any) -> AsyncTestClient[Any]:
        return AsyncTestClient(create_app(make_settings(test_env, **(FAST | overrides))))

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[AsyncTestClient[Any]]:
    async with make_client() as test_client:
        yield test_client


async def complete(client: AsyncTestClient[Any], task: str = "chat", **body: Any) -> Any:
    body = {"task": task, **body} if body else {"task": task, "input": "How did my week go?"}
    return await client.post(COMPLETE, json=body, headers=tokens.headers("user-42"))


def models_called(fake: FakeOpenRouter) -> list[str | None]:
    return [request.model for request in fake.requests]


# -- catalogue -------------------------------------------------------------------------------------


async def test_tasks_lists_the_catalogue_with_the_design_defaults(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/api/v1/llm/tasks", headers={"X-API-Key": tokens.API_KEY})

    assert response.status_code == 200
    body = response.json()
    assert body["configured"] is True
    chains = {t["name"]: [t["primary_model"], *t["fallback_models"]] for t in body["tasks"]}
    assert chains == {
        "session_summary": [OPUS, SONNET],
        "insight_generation": [OPUS, SONNET],
        "chat": [OPUS, SONNET],
        "intent_classification": [SONNET, MINI],
        "entity_extraction": [SONNET, MINI],
    }
    outputs = {t["name"]: (t["output"], t["streamable"]) for t in body["tasks"]}
    assert outputs["chat"] == ("text", True)
    assert outputs["entity_extraction"] == ("json", False)
    assert all(t["description"] and t["max_tokens"] > 0 for t in body["tasks"])


async def test_the_llm_models_setting_replaces_a_chain(
    make_client: ClientFactory, fake_openrouter: FakeOpenRouter
) -> None:
    async with make_client(llm_models={"chat": "openai/gpt-4o, openai/gpt-4o-mini"}) as client:
        tasks = (await client.get("/api/v1/llm/tasks", headers={"X-API-Key": tokens.API_KEY})).json()
        fake_openrouter.enqueue(Reply(status=503), Reply(status=503), model="openai/gpt-4o")
        response = await complete(client)

    chat = next(t for t in tasks["tasks"] if t["name"] == "chat")
    assert (chat["primary_model"], chat["fallback_models"]) == ("openai/gpt-4o", ["openai/gpt-4o-mini"])
    assert response.json()["model"] == "openai/gpt-4o-mini"
    assert models_called(fake_openrouter) == ["openai/gpt-4o", "openai/gpt-4o", "openai/gpt-4o-mini"]


# -- the happy path --------------------------------------------------------------------------------


async def test_complete_answers_with_content_model_and_provider_usage(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(prompt_tokens=321, completion_tokens=12, cost=0.00123))

    response = await client.post(
        COMPLETE,
        json={
            "task": "chat",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "Plan my week"},
            ],
            "options": {"temperature": 0.2, "max_tokens": 100},
        },
        headers=tokens.headers("user-42") | {"X-Request-ID": "req-complete-1"},
    )

    assert response.status_code == 200
    assert response.json() == {
        "content": DEFAULT_CONTENT,
        "model": OPUS,
        "fallback_used": False,
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 321, "completion_tokens": 12, "cost_usd": 0.00123},
        "attempts": [{"model": OPUS, "duration_ms": response.json()["attempts"][0]["duration_ms"]}],
        "latency_ms": response.json()["latency_ms"],
        "request_id": "req-complete-1",
    }
    [request] = fake_openrouter.requests
    assert request.headers["authorization"] == f"Bearer {fake_openrouter.api_key}"
    assert request.headers["http-referer"] == "https://xenios.app"
    assert request.headers["x-title"] == "Xenios"
    body = request.body
    assert (body["model"], body["temperature"], body["max_tokens"]) == (OPUS, 0.2, 100)
    assert body["stream"] is True  # every call streams internally, so the first-token deadline holds
    assert body["messages"][0]["role"] == "system"
    assert "Xenios" in body["messages"][0]["content"]
    assert body["messages"][1:] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Plan my week"},
    ]


async def test_input_becomes_the_user_message_after_the_task_prompt(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    response = await complete(client, "session_summary", input="Coach: hi. Client: I slept badly.")

    assert response.status_code == 200
    [request] = fake_openrouter.requests
    system, user = request.body["messages"]
    assert system["role"] == "system"
    assert "summary" in system["content"]
    assert user == {"role": "user", "content": "Coach: hi. Client: I slept badly."}
    assert (request.body["temperature"], request.body["max_tokens"]) == (0.3, 2048)


# -- access and validation -------------------------------------------------------------------------


async def test_complete_needs_the_api_key_and_a_user_token(client: AsyncTestClient[Any]) -> None:
    body = {"task": "chat", "input": "hi"}
    no_token = await client.post(COMPLETE, json=body, headers={"X-API-Key": tokens.API_KEY})
    no_key = await client.post(
        COMPLETE, json=body, headers={"Authorization": tokens.headers()["Authorization"]}
    )

    assert (no_token.status_code, no_token.json()["code"]) == (401, "missing_token")
    assert (no_key.status_code, no_key.json()["code"]) == (401, "invalid_api_key")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"task": "chat", "input": "hi", "model": "x"}, "invalid_body"),
        ({"task": "chat"}, "invalid_llm_input"),
        (
            {"task": "chat", "input": "hi", "messages": [{"role": "user", "content": "hi"}]},
            "invalid_llm_input",
        ),
        ({"task": "chat", "messages": []}, "invalid_body"),
        ({"task": "chat", "messages": [{"role": "tool", "content": "x"}]}, "invalid_body"),
        ({"task": "poetry", "input": "hi"}, "unknown_task"),
        ({"task": "chat", "input": "hi", "options": {"max_tokens": 100_000}}, "invalid_llm_input"),
        ({"task": "chat", "input": "hi", "options": {"temperature": 3}}, "invalid_body"),
        ({"task": "entity_extraction", "messages": [{"role": "user", "content": "x"}]}, "invalid_llm_input"),
    ],
)
async def test_invalid_requests_are_422_before_any_upstream_call(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, body: dict[str, Any], code: str
) -> None:
    response = await client.post(COMPLETE, json=body, headers=tokens.headers())

    assert response.status_code == 422
    assert response.json()["code"] == code
    assert fake_openrouter.requests == []


async def test_json_tasks_cannot_be_streamed(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/api/v1/llm/stream", json={"task": "intent_classification", "input": "hi"}, headers=tokens.headers()
    )

    assert (response.status_code, response.json()["code"]) == (422, "task_not_streamable")


async def test_without_an_openrouter_key_llm_routes_are_503_and_the_rest_works(
    make_client: ClientFactory,
) -> None:
    async with make_client(openrouter_api_key=None) as client:
        responses = [
            await complete(client),
            await client.post(
                "/api/v1/llm/stream", json={"task": "chat", "input": "x"}, headers=tokens.headers()
            ),
            await client.post("/api/v1/llm/classify-intent", json={"text": "x"}, headers=tokens.headers()),
            await client.post("/api/v1/llm/extract-entities", json={"text": "x"}, headers=tokens.headers()),
        ]
        tasks = await client.get("/api/v1/llm/tasks", headers={"X-API-Key": tokens.API_KEY})
        health = await client.get("/health")
        me = await client.get("/api/v1/me", headers=tokens.headers())

    for response in responses:
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "llm_not_configured"
        assert "OPENROUTER_API_KEY" in response.json()["detail"]
    assert tasks.json()["configured"] is False
    assert len(tasks.json()["tasks"]) == 5
    assert health.status_code == 200
    assert me.status_code == 200


# -- retries and fallback --------------------------------------------------------------------------


async def test_a_5xx_is_retried_then_the_next_model_answers(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=502), Reply(status=503), model=OPUS)

    response = await complete(client)

    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["fallback_used"], body["content"]) == (SONNET, True, DEFAULT_CONTENT)
    assert [(a["model"], a.get("error"), a.get("status")) for a in body["attempts"]] == [
        (OPUS, "http_502", 502),
        (OPUS, "http_503", 503),
        (SONNET, None, None),
    ]
    assert models_called(fake_openrouter) == [OPUS, OPUS, SONNET]


@pytest.mark.parametrize("status", [408, 409, 429, 500])
async def test_transient_statuses_are_retried_on_the_same_model(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, status: int
) -> None:
    fake_openrouter.enqueue(Reply(status=status), model=OPUS)

    response = await complete(client)

    assert (response.json()["model"], response.json()["fallback_used"]) == (OPUS, False)
    assert models_called(fake_openrouter) == [OPUS, OPUS]


async def test_a_429_retry_after_is_honoured_before_retrying_the_same_model(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=429, retry_after=1), model=OPUS)

    response = await complete(client)

    assert response.status_code == 200
    assert (response.json()["model"], response.json()["fallback_used"]) == (OPUS, False)
    first, second = fake_openrouter.requests
    assert (first.status, second.status) == (429, 200)
    assert 1.0 <= second.received_at - first.received_at < 1.5


async def test_a_retry_after_beyond_the_cap_moves_to_the_next_model_at_once(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=429, retry_after=30), model=OPUS)

    started = time.monotonic()
    response = await complete(client)

    assert time.monotonic() - started < 1.0
    assert (response.json()["model"], response.json()["fallback_used"]) == (SONNET, True)
    assert models_called(fake_openrouter) == [OPUS, SONNET]


@pytest.mark.parametrize("status", [400, 403, 413, 422])
async def test_a_request_the_provider_refuses_is_neither_retried_nor_sent_elsewhere(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, status: int
) -> None:
    moderation = ["violence"] if status == 403 else None  # a 403 refuses the request only when moderated
    fake_openrouter.enqueue(
        Reply(
            status=status,
            error_message="This prompt is too long for the model",
            moderation_reasons=moderation,
        )
    )

    response = await complete(client)

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "upstream_rejected"
    assert "This prompt is too long for the model" in body["detail"]
    assert body["attempts"] == [
        {
            "model": OPUS,
            "duration_ms": body["attempts"][0]["duration_ms"],
            "error": f"http_{status}",
            "status": status,
        }
    ]
    assert models_called(fake_openrouter) == [OPUS]


async def test_a_403_without_moderation_metadata_is_logged_and_moves_to_the_next_model(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=403, error_message="Provider not allowed"), model=OPUS)
    lines = io.StringIO()
    sink = logger.add(lines, level="ERROR", format="{level} {message}")
    try:
        response = await complete(client)
    finally:
        logger.remove(sink)

    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["fallback_used"]) == (SONNET, True)
    assert [(a["model"], a.get("error"), a.get("status")) for a in body["attempts"]] == [
        (OPUS, "http_403", 403),
        (SONNET, None, None),
    ]
    assert models_called(fake_openrouter) == [OPUS, SONNET]  # not retried on the same model
    assert "ERROR" in lines.getvalue()
    assert "403" in lines.getvalue()
    assert "Provider not allowed" in lines.getvalue()


async def test_every_model_answering_a_plain_403_is_a_502(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.default = Reply(status=403)

    response = await complete(client)

    assert (response.status_code, response.json()["code"]) == (502, "upstream_error")
    assert [(a["model"], a["error"]) for a in response.json()["attempts"]] == [
        (OPUS, "http_403"),
        (SONNET, "http_403"),
    ]


async def test_an_unknown_model_moves_to_the_next_model(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=400, error_message=f"{OPUS} is not a valid model ID"), model=OPUS)

    response = await complete(client)

    assert (response.json()["model"], response.json()["fallback_used"]) == (SONNET, True)
    assert response.json()["attempts"][0]["error"] == "model_unavailable"
    assert models_called(fake_openrouter) == [OPUS, SONNET]


async def test_a_rejected_api_key_is_a_502_without_retry_and_without_the_key(
    make_client: ClientFactory, fake_openrouter: FakeOpenRouter
) -> None:
    wrong_key = "sk-or-v1-wrong-key-0123456789"
    async with make_client(openrouter_api_key=wrong_key) as client:
        response = await complete(client)

    assert response.status_code == 502
    assert response.json()["code"] == "upstream_auth_failed"
    assert models_called(fake_openrouter) == [OPUS]
    assert wrong_key not in response.text
    assert str(fake_openrouter.api_key) not in response.text


async def test_a_timeout_moves_to_the_next_model_and_cancels_the_slow_request(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(hang=5), model=OPUS)

    started = time.monotonic()
    response = await complete(client)

    assert time.monotonic() - started < 2.0
    assert (response.json()["model"], response.json()["fallback_used"]) == (SONNET, True)
    assert response.json()["attempts"][0]["error"] == "first_token_timeout"
    requests = await fake_openrouter.wait_for_async(lambda rs: len(rs) == 2 and rs[0].client_disconnected)
    assert requests[0].model == OPUS


async def test_a_connection_cut_is_retried(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(cut_after=0), model=OPUS)

    response = await complete(client)

    assert response.status_code == 200
    assert [(a["model"], a.get("error")) for a in response.json()["attempts"]] == [
        (OPUS, "connection_error"),
        (OPUS, None),
    ]


# -- every model failed ----------------------------------------------------------------------------


async def test_every_model_unavailable_is_a_503_listing_the_attempts(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.default = Reply(status=503, retry_after=0.2)

    response = await complete(client)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["code"] == "upstream_unavailable"
    assert [(a["model"], a["error"], a["status"]) for a in body["attempts"]] == [
        (OPUS, "http_503", 503),
        (OPUS, "http_503", 503),
        (SONNET, "http_503", 503),
        (SONNET, "http_503", 503),
    ]
    assert body["request_id"]


async def test_an_infinite_retry_after_is_ignored(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.default = Reply(status=503, retry_after=float("inf"))

    response = await complete(client)

    assert fake_openrouter.requests[0].status == 503
    assert (response.status_code, response.json()["code"]) == (503, "upstream_unavailable")
    assert "retry-after" not in response.headers
    assert len(response.json()["attempts"]) == 4  # retried after the usual backoff


async def test_a_body_larger_than_the_limit_fails_the_attempt_and_the_next_model_answers(
    make_client: ClientFactory, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(content="x" * (MAX_BODY_BYTES + 1)), model=OPUS)

    # 8 MiB arrive as one stream line (its first text): on a loaded machine longer than FAST's 0.5 s.
    slow = {"llm_timeout_seconds": 10.0, "llm_first_token_timeout_seconds": 10.0}
    async with make_client(**slow) as client:
        response = await complete(client)

    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["content"]) == (SONNET, DEFAULT_CONTENT)
    assert [(a["model"], a.get("error")) for a in body["attempts"]] == [
        (OPUS, "response_too_large"),
        (SONNET, None),
    ]


async def test_every_model_timing_out_is_a_504(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.default = Reply(hang=3)

    response = await complete(client)

    assert (response.status_code, response.json()["code"]) == (504, "upstream_timeout")
    assert [(a["model"], a["error"]) for a in response.json()["attempts"]] == [
        (OPUS, "first_token_timeout"),
        (SONNET, "first_token_timeout"),
    ]


async def test_every_model_erring_is_a_502(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.default = Reply(status=500)

    response = await complete(client)

    assert (response.status_code, response.json()["code"]) == (502, "upstream_error")
    assert len(response.json()["attempts"]) == 4
