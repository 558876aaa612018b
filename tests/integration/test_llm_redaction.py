"""Redaction over HTTP against the fake OpenRouter, which records what it received: no raw name, email or
phone number reaches it, and the answer comes back with the values restored (completions, streams split
one character per chunk, the per-task default), or the request fails closed without being sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.sse import SSEParser
from xenios_ai.api.app import create_app

TRANSCRIPT = (
    "Coach: How was the week, Sarah?\n"
    "Sarah Lee: Good. Tom says hi, he is on +44 7700 900123 and tom.okafor@example.org.\n"
    "Coach: Did Tom Okafor book the physio?"
)
NAMES = ["Sarah Lee", "Tom Okafor"]
RAW = ("Sarah", "Lee", "Tom", "Okafor", "7700 900123", "tom.okafor@example.org")
ANSWER = "[PERSON_1] had a good week; [PERSON_2] ([PHONE_1], [EMAIL_1]) booked the physio."
RESTORED = (
    "Sarah Lee had a good week; Tom Okafor (+44 7700 900123, tom.okafor@example.org) booked the physio."
)
Factory = Callable[..., AsyncTestClient[Any]]


@pytest.fixture
def make_client(test_env: dict[str, str], fake_openrouter: FakeOpenRouter) -> Factory:
    fake_openrouter.reset()

    def factory(**overrides: Any) -> AsyncTestClient[Any]:
        return AsyncTestClient(create_app(make_settings(test_env, llm_usage_flush_seconds=0.05, **overrides)))

    return factory


@pytest.fixture
async def client(make_client: Factory) -> AsyncIterator[AsyncTestClient[Any]]:
    async with make_client() as test_client:
        yield test_client


def sent_text(fake: FakeOpenRouter) -> str:
    """Everything the fake received, as one string."""
    return json.dumps([request.body for request in fake.requests])


def assert_nothing_raw_was_sent(fake: FakeOpenRouter) -> None:
    sent = sent_text(fake)
    assert fake.requests
    for raw in RAW:
        assert raw not in sent, raw
    assert "[PERSON_1]" in sent
    assert "[PERSON_2]" in sent


async def test_complete_redacts_what_is_sent_and_restores_the_answer(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(content=ANSWER))
    response = await client.post(
        "/api/v1/llm/complete",
        json={"task": "chat", "input": TRANSCRIPT, "options": {"redact": True, "redact_names": NAMES}},
        headers=tokens.headers("user-redact"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["content"] == RESTORED
    assert_nothing_raw_was_sent(fake_openrouter)


async def test_a_stream_is_restored_across_deltas_split_inside_placeholders(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(content=ANSWER, chunks=len(ANSWER)))  # one character per chunk
    response = await client.post(
        "/api/v1/llm/stream",
        json={"task": "chat", "messages": [{"role": "user", "content": TRANSCRIPT}],
              "options": {"redact_names": NAMES}},
        headers=tokens.headers("user-redact"),
    )  # fmt: skip
    assert response.status_code == 200, response.text
    parser, events = SSEParser(), []
    for line in response.text.splitlines():
        if (event := parser.line(line)) is not None:
            events.append(event)
    deltas = [data["content"] for name, data in events if name == "delta"]
    assert "".join(deltas) == RESTORED
    assert not any("[" in delta for delta in deltas)  # no placeholder, whole or in part, reached the client
    assert events[-1][0] == "done"
    assert_nothing_raw_was_sent(fake_openrouter)


async def test_a_task_redacted_by_default_and_a_request_opting_out(
    make_client: Factory, fake_openrouter: FakeOpenRouter
) -> None:
    async with make_client(llm_redact_tasks="chat, session_summary") as client:
        fake_openrouter.enqueue(Reply(content="Call [PHONE_1]."))
        response = await client.post(
            "/api/v1/llm/complete",
            json={"task": "chat", "input": "Call me on +44 7700 900123 or at tom.okafor@example.org"},
            headers=tokens.headers("user-redact"),
        )
        assert response.json()["content"] == "Call +44 7700 900123."
        assert "900123" not in sent_text(fake_openrouter)
        assert "tom.okafor@example.org" not in sent_text(fake_openrouter)

        fake_openrouter.clear()
        response = await client.post(
            "/api/v1/llm/complete",
            json={"task": "chat", "input": "Call me on +44 7700 900123", "options": {"redact": False}},
            headers=tokens.headers("user-redact"),
        )
        assert response.status_code == 200
        assert "+44 7700 900123" in sent_text(fake_openrouter)


async def test_redaction_fails_closed_and_nothing_is_sent(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    for route, body in (
        ("/api/v1/llm/complete", {"task": "chat", "input": "Sarah said [PERSON_1] called"}),
        ("/api/v1/llm/stream", {"task": "chat", "messages": [{"role": "user", "content": "[EMAIL_2] ok"}]}),
    ):
        response = await client.post(
            route,
            json=body | {"options": {"redact": True, "redact_names": NAMES}},
            headers=tokens.headers("u"),
        )
        assert response.status_code == 500, response.text
        problem = response.json()
        assert problem["code"] == "redaction_failed"
        assert "Sarah" not in json.dumps(problem)
    assert fake_openrouter.requests == []


async def test_an_unknown_kind_is_refused(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/api/v1/llm/complete",
        json={"task": "chat", "input": "hi", "options": {"redact": ["address"]}},
        headers=tokens.headers("u"),
    )
    assert response.status_code == 422
