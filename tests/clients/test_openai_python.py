"""The OpenAI-compatible face (/v1) driven by the `openai` Python SDK, no hand-written protocol.

The SDK points at the API as deployed (Granian, `openai_face_url`), which relays to the fake OpenRouter:
``api_key`` is the user's Supabase JWT, the service key rides in ``X-API-Key`` (``default_headers``).
Faults are scripted on the fake (a ``[[fake:{...}]]`` trigger in the message, or queued replies).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pydantic
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.fakes.openrouter import DEFAULT_CONTENT, FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.llm import usage_row

OPUS = "anthropic/claude-opus-4.5"
SONNET = "anthropic/claude-sonnet-4"
USER = "user-openai-py"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How did my week go?"}]


def fake(text: str = "Tell me something.", **reply: Any) -> list[ChatCompletionMessageParam]:
    """A user message that makes the fake answer with this `Reply`."""
    return [{"role": "user", "content": f"{text} [[fake:{json.dumps(reply)}]]"}]


@pytest.fixture
def client(openai_face_url: str) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=f"{openai_face_url}/v1",
        api_key=tokens.hs256_token(USER),
        default_headers={"X-API-Key": tokens.API_KEY},
        max_retries=0,
        timeout=20,
    ) as sdk:
        yield sdk


@pytest.fixture
async def aclient(openai_face_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{openai_face_url}/v1",
        api_key=tokens.hs256_token(USER),
        default_headers={"X-API-Key": tokens.API_KEY},
        max_retries=0,
        timeout=20,
    ) as sdk:
        yield sdk


def test_models_are_the_tasks(client: OpenAI) -> None:
    models = client.models.list()

    assert {m.id for m in models.data} == {
        "session_summary",
        "insight_generation",
        "chat",
        "intent_classification",
        "entity_extraction",
    }
    assert client.models.retrieve("chat").owned_by == "xenios"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-5")
    assert caught.value.code == "model_not_found"


def test_create_answers_a_chat_completion_and_stores_its_usage(client: OpenAI, database_url: str) -> None:
    completion = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=200)

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == OPUS
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == len(DEFAULT_CONTENT.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.model_extra is not None
    assert usage.model_extra["cost"] > 0  # as OpenRouter reports it
    request_id = completion._request_id
    assert request_id is not None
    assert completion.id == f"chatcmpl-{request_id}"
    row = usage_row(database_url, request_id, "task, owner, mode, status, model, cost_usd::float8 AS cost")
    assert row == {
        "task": "chat",
        "owner": USER,
        "mode": "complete",
        "status": "succeeded",
        "model": OPUS,
        "cost": pytest.approx(usage.model_extra["cost"]),
    }


def test_raw_response_tells_the_model_the_fallback_and_the_request_id(
    client: OpenAI, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=500), Reply(status=500), model=OPUS)  # the attempt and its retry

    raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)

    assert raw.headers["x-xenios-model"] == SONNET
    assert raw.headers["x-xenios-fallback-used"] == "true"
    assert raw.headers["x-request-id"]
    assert raw.parse().model == SONNET
    assert [r.model for r in fake_openrouter.requests] == [OPUS, OPUS, SONNET]


async def test_async_stream_with_usage(aclient: AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model="chat",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.2,
    )
    chunks = [chunk async for chunk in stream]

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_CONTENT
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert [c.model for c in chunks] == [OPUS] * len(chunks)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(DEFAULT_CONTENT.split())
    assert last.usage.model_extra is not None
    assert last.usage.model_extra["cost"] > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_without_usage_ends_with_the_finish_chunk(client: OpenAI) -> None:
    with client.chat.completions.create(model="chat", messages=HELLO, stream=True) as stream:
        chunks = list(stream)

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_a_hung_primary_stream_falls_back_before_any_text(
    client: OpenAI, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(hang=5), model=OPUS)  # past the first-token deadline (1 s here)

    raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO, stream=True)
    chunks: list[ChatCompletionChunk] = list(raw.parse())

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_CONTENT
    assert [c.model for c in chunks] == [SONNET] * len(chunks)  # every chunk names the model answering
    assert chunks[-1].model_extra == {"x_xenios": {"fallback_used": True}}
    assert raw.headers["x-xenios-model"] == SONNET
    assert raw.headers["x-xenios-fallback-used"] == "true"


def test_a_stream_whose_primary_fails_names_the_fallback_in_every_chunk(
    client: OpenAI, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=500), Reply(status=500), model=OPUS)  # the attempt and its retry

    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks: list[ChatCompletionChunk] = list(raw.parse())

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_CONTENT
    assert chunks[-1].usage is not None
    assert [c.model for c in chunks] == [SONNET] * len(chunks)
    assert raw.headers["x-xenios-model"] == SONNET
    assert raw.headers["x-xenios-fallback-used"] == "true"
    assert [r.model for r in fake_openrouter.requests] == [OPUS, OPUS, SONNET]


def test_a_stream_cut_after_text_ends_with_an_error_the_sdk_raises(client: OpenAI) -> None:
    text = []
    with pytest.raises(openai.APIError) as caught:  # noqa: PT012 - the error comes mid-iteration
        stream = client.chat.completions.create(
            model="chat",
            messages=fake(cut_after=3, token_delay=0.05),
            stream=True,
        )
        for chunk in stream:
            text.append(chunk.choices[0].delta.content or "")

    assert "".join(text) == " ".join(DEFAULT_CONTENT.split()[:3])
    assert caught.value.code == "upstream_disconnected"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "server_error"


def test_upstream_429s_are_retried_then_reported_as_503(
    client: OpenAI, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=429, retry_after=0.1), model=OPUS)
    assert client.chat.completions.create(model="chat", messages=HELLO).model == OPUS

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="chat",
            messages=fake(status=429, retry_after=0.1),
        )
    assert caught.value.status_code == 503
    assert caught.value.code == "upstream_unavailable"
    assert caught.value.response.headers["retry-after"] == "1"


def test_auth_errors_are_the_sdks_authentication_errors(openai_face_url: str) -> None:
    cases = [
        ({"X-API-Key": tokens.API_KEY}, "not-a-jwt", "invalid_token"),
        ({"X-API-Key": "wrong"}, tokens.hs256_token(USER), "invalid_api_key"),
        ({}, tokens.hs256_token(USER), "invalid_api_key"),
    ]
    for headers, token, code in cases:
        with (
            OpenAI(
                base_url=f"{openai_face_url}/v1", api_key=token, default_headers=headers, max_retries=0
            ) as sdk,
            pytest.raises(openai.AuthenticationError) as caught,
        ):
            sdk.chat.completions.create(model="chat", messages=HELLO)
        assert caught.value.code == code
        assert caught.value.body["type"] == "authentication_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            "tools",
            "unsupported_parameter",
        ),
        ({"n": 2}, "n", "unsupported_parameter"),
        ({"logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"top_p": 0.5}, "top_p", "unsupported_parameter"),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate", "unsupported_parameter"),
        ({"max_tokens": 5000}, "max_tokens", "invalid_value"),
        ({"temperature": 3}, "temperature", "invalid_value"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
            "unsupported_parameter",
        ),
        (
            {"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]},
            "messages[0].tool_call_id",
            "unsupported_parameter",
        ),
    ],
)
def test_unsupported_parameters_are_400s_naming_them(
    client: OpenAI, fake_openrouter: FakeOpenRouter, params: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{"model": "chat", "messages": HELLO, **params})

    assert caught.value.param == param
    assert caught.value.code == code
    assert fake_openrouter.requests == []


def test_an_unknown_model_is_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


class Alternative(pydantic.BaseModel):
    intent: str
    confidence: float


class Intent(pydantic.BaseModel):
    intent: str
    confidence: float
    alternatives: list[Alternative]


def test_parse_a_typed_task_with_a_pydantic_schema(client: OpenAI) -> None:
    answer = {
        "intent": "goal_setting",
        "confidence": 0.9,
        "alternatives": [
            {"intent": "question", "confidence": 0.1},
            {"intent": "goal_setting", "confidence": 0.2},
        ],
    }
    completion = client.chat.completions.parse(
        model="intent_classification",
        messages=fake("I want to run a 5k by June.", json=answer),
        response_format=Intent,
    )

    parsed = completion.choices[0].message.parsed
    assert parsed is not None
    assert parsed.intent == "goal_setting"
    assert parsed.alternatives == [Alternative(intent="question", confidence=0.1)]  # validated as on /api/v1


def test_a_typed_task_refuses_another_schema(client: OpenAI, fake_openrouter: FakeOpenRouter) -> None:
    class Other(pydantic.BaseModel):
        sentiment: str

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.parse(
            model="intent_classification",
            messages=HELLO,
            response_format=Other,
        )
    assert caught.value.param == "response_format.json_schema.schema"
    assert fake_openrouter.requests == []


def test_json_object_on_a_text_task_falls_back_on_invalid_json(
    client: OpenAI, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(invalid_json=True), model=OPUS)
    fake_openrouter.enqueue(Reply(json={"mood": "good"}), model=SONNET)

    completion = client.chat.completions.create(
        model="chat",
        messages=HELLO,
        response_format={"type": "json_object"},
    )

    assert json.loads(completion.choices[0].message.content or "") == {"mood": "good"}
    assert completion.model == SONNET
    assert fake_openrouter.requests[0].body["response_format"] == {"type": "json_object"}


REDACT_TEXT = "Sarah Lee says Tom Okafor is on tom.okafor@example.org; how do I follow up?"
REDACT_ANSWER = "Ask [PERSON_1] to mail [PERSON_2] at [EMAIL_1]."
REDACT_RESTORED = "Ask Sarah Lee to mail Tom Okafor at tom.okafor@example.org."
REDACT_BODY = {"redact": True, "redact_names": ["Sarah Lee", "Tom Okafor"]}


def _assert_nothing_raw_was_sent(fake: FakeOpenRouter) -> None:
    sent = json.dumps([request.body for request in fake.requests])
    assert fake.requests
    for raw in ("Sarah", "Lee", "Tom", "Okafor", "tom.okafor@example.org"):
        assert raw not in sent, raw
    assert "[PERSON_1]" in sent
    assert "[EMAIL_1]" in sent


def test_redaction_per_request_through_extra_body(client: OpenAI, fake_openrouter: FakeOpenRouter) -> None:
    fake_openrouter.enqueue(Reply(content=REDACT_ANSWER))
    completion = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": REDACT_TEXT}], extra_body=REDACT_BODY
    )

    assert completion.choices[0].message.content == REDACT_RESTORED
    _assert_nothing_raw_was_sent(fake_openrouter)


def test_a_redacted_stream_is_restored_and_names_the_fallback(
    client: OpenAI, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(status=500), Reply(status=500), model=OPUS)
    fake_openrouter.enqueue(Reply(content=REDACT_ANSWER, chunks=len(REDACT_ANSWER)), model=SONNET)
    with client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": REDACT_TEXT}],
        stream=True,
        extra_body=REDACT_BODY,
    ) as stream:
        chunks = list(stream)

    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == REDACT_RESTORED
    assert not any("[" in delta for delta in deltas)  # no placeholder, whole or in part, reached the client
    assert [c.model for c in chunks] == [SONNET] * len(chunks)
    _assert_nothing_raw_was_sent(fake_openrouter)


def test_an_unknown_redaction_kind_is_a_400_naming_it(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chat", messages=HELLO, extra_body={"redact": ["ssn"]})
    assert caught.value.param is not None
    assert "redact" in caught.value.param
