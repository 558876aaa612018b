"""Typed JSON tasks over HTTP: classify-intent and extract-entities, validated, falling back on bad output."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from xenios_ai.api.app import create_app
from xenios_ai.llm.structured import DEFAULT_INTENT_LABELS

SONNET = "anthropic/claude-sonnet-4"
MINI = "openai/gpt-4o-mini"
INTENT = "/api/v1/llm/classify-intent"
ENTITIES = "/api/v1/llm/extract-entities"
LABELS = ["book_session", "cancel_session", "ask_question", "other"]
TEXT = "Anna met Ben in Berlin on Monday. Anna wants to run 5 km."


@pytest.fixture
async def client(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> AsyncIterator[AsyncTestClient[Any]]:
    fake_openrouter.reset()
    settings = make_settings(test_env, llm_retry_backoff_seconds=0.01, llm_timeout_seconds=1.0)
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


def intent(name: str, confidence: float, *alternatives: tuple[str, float]) -> dict[str, Any]:
    return {
        "intent": name,
        "confidence": confidence,
        "alternatives": [{"intent": a, "confidence": c} for a, c in alternatives],
    }


async def classify(client: AsyncTestClient[Any], **body: Any) -> Any:
    return await client.post(INTENT, json=body, headers=tokens.headers("user-7"))


# -- intent ----------------------------------------------------------------------------------------


async def test_intent_is_classified_among_the_given_labels(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(
        Reply(
            json=intent("book_session", 0.82, ("ask_question", 0.1), ("book_session", 0.82), ("other", 0.5))
        )
    )

    response = await classify(
        client, text="Can we meet on Thursday at 5?", labels=LABELS, context="Coach: how was your week?"
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["intent"], body["confidence"]) == ("book_session", 0.82)
    assert body["alternatives"] == [  # the intent itself dropped, most likely first
        {"intent": "other", "confidence": 0.5},
        {"intent": "ask_question", "confidence": 0.1},
    ]
    assert (body["model"], body["fallback_used"]) == (SONNET, False)
    assert body["usage"]["prompt_tokens"] > 0
    [request] = fake_openrouter.requests
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    schema = response_format["json_schema"]["schema"]
    assert schema["properties"]["intent"]["enum"] == LABELS
    assert schema["additionalProperties"] is False
    user = request.body["messages"][-1]["content"]
    assert "Can we meet on Thursday at 5?" in user
    assert "Coach: how was your week?" in user
    assert "book_session, cancel_session, ask_question, other" in user


async def test_default_labels_are_the_coaching_set(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(json=intent("goal_setting", 0.9)))

    response = await classify(client, text="I want to run a marathon next year")

    assert response.json()["intent"] == "goal_setting"
    enum = fake_openrouter.requests[0].body["response_format"]["json_schema"]["schema"]["properties"][
        "intent"
    ]
    assert enum["enum"] == list(DEFAULT_INTENT_LABELS)


@pytest.mark.parametrize(
    "bad",
    [
        Reply(json=intent("book_session", 0.8), invalid_json=True),
        Reply(json=intent("order_pizza", 0.8)),
        Reply(json=intent("book_session", 0.8, ("order_pizza", 0.1))),
        Reply(json=intent("book_session", 1.7)),
        Reply(json={"label": "book_session"}),
        Reply(content="Sure! The intent is book_session."),
    ],
    ids=[
        "truncated-json",
        "unknown-label",
        "unknown-alternative",
        "confidence-above-1",
        "wrong-shape",
        "prose",
    ],
)
async def test_invalid_intent_output_falls_back_to_the_next_model(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter, bad: Reply
) -> None:
    fake_openrouter.enqueue(bad, model=SONNET)
    fake_openrouter.enqueue(Reply(json=intent("cancel_session", 0.7)), model=MINI)

    response = await classify(client, text="I can't make it tomorrow", labels=LABELS)

    assert response.status_code == 200
    body = response.json()
    assert (body["intent"], body["model"], body["fallback_used"]) == ("cancel_session", MINI, True)
    assert [r.model for r in fake_openrouter.requests] == [SONNET, MINI]


async def test_a_fenced_json_answer_is_accepted(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(
        Reply(content='```json\n{"intent": "other", "confidence": 0.4, "alternatives": []}\n```')
    )

    response = await classify(client, text="hmm", labels=LABELS)

    assert (response.json()["intent"], response.json()["fallback_used"]) == ("other", False)


async def test_invalid_output_from_every_model_is_a_502_with_attempts(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.default = Reply(json=intent("x", 0.5), invalid_json=True)

    response = await classify(client, text="hello", labels=LABELS)

    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "upstream_error"
    assert [(a["model"], a["error"]) for a in body["attempts"]] == [
        (SONNET, "invalid_output"),
        (MINI, "invalid_output"),
    ]


async def test_intent_request_validation(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    for body in (
        {"text": ""},
        {"text": "x", "labels": []},
        {"text": "x", "labels": ["has\nnewline"]},
        {"txt": "x"},
    ):
        response = await client.post(INTENT, json=body, headers=tokens.headers())
        assert response.status_code == 422, body
    assert fake_openrouter.requests == []


# -- entities --------------------------------------------------------------------------------------


async def test_entities_come_back_with_offsets_checked_against_the_text(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    second_anna = TEXT.index("Anna", 1)
    model_output = {
        "entities": [
            {"type": "person", "text": "Anna", "start": 0, "end": 4},  # right
            {"type": "person", "text": "Ben", "start": 10, "end": 13},  # wrong offsets: fixed
            {"type": "location", "text": "berlin", "start": 16, "end": 22},  # wrong case: the text's "Berlin"
            {"type": "date", "text": "Monday", "start": 26, "end": 32},  # right
            {"type": "person", "text": "Anna", "start": second_anna + 2, "end": second_anna + 6},  # nearest
            {"type": "location", "text": "Paris", "start": 0, "end": 5},  # not in the text: dropped
            {"type": "metric", "text": "5 km", "start": 0, "end": 4},  # type not asked for: dropped
            {"type": "person", "text": "Anna", "start": 0, "end": 4},  # duplicate: merged
        ]
    }
    fake_openrouter.enqueue(Reply(json=model_output))

    response = await client.post(
        ENTITIES,
        json={"text": TEXT, "entity_types": ["person", "location", "date"]},
        headers=tokens.headers(),
    )

    assert response.status_code == 200
    entities = response.json()["entities"]
    assert entities == [
        {"type": "person", "text": "Anna", "start": 0, "end": 4},
        {"type": "person", "text": "Ben", "start": 9, "end": 12},
        {"type": "location", "text": "Berlin", "start": 16, "end": 22},
        {"type": "date", "text": "Monday", "start": 26, "end": 32},
        {"type": "person", "text": "Anna", "start": second_anna, "end": second_anna + 4},
    ]
    assert all(TEXT[e["start"] : e["end"]] == e["text"] for e in entities)
    schema = fake_openrouter.requests[0].body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["entities"]["items"]["properties"]["type"]["enum"] == [
        "person",
        "location",
        "date",
    ]
    assert TEXT in fake_openrouter.requests[0].body["messages"][-1]["content"]


async def test_entity_offsets_are_code_points(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    text = "Feeling 😀 today, Zoë ran with Jörg"
    fake_openrouter.enqueue(
        Reply(
            json={
                "entities": [
                    {"type": "person", "text": "Zoë", "start": 0, "end": 3},
                    {"type": "person", "text": "Jörg", "start": 31, "end": 35},
                ]
            }
        )
    )

    response = await client.post(
        ENTITIES, json={"text": text, "entity_types": ["person"]}, headers=tokens.headers()
    )

    entities = response.json()["entities"]
    assert [(e["text"], text[e["start"] : e["end"]]) for e in entities] == [("Zoë", "Zoë"), ("Jörg", "Jörg")]


async def test_invalid_entity_output_falls_back(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(json={"entities": [{"type": "person"}]}), model=SONNET)
    fake_openrouter.enqueue(
        Reply(json={"entities": [{"type": "person", "text": "Ben", "start": 9, "end": 12}]}), model=MINI
    )

    response = await client.post(ENTITIES, json={"text": TEXT}, headers=tokens.headers())

    body = response.json()
    assert (body["model"], body["fallback_used"]) == (MINI, True)
    assert body["entities"] == [{"type": "person", "text": "Ben", "start": 9, "end": 12}]


async def test_complete_on_a_json_task_returns_validated_data(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(Reply(json=intent("scheduling", 0.66)))

    response = await client.post(
        "/api/v1/llm/complete",
        json={"task": "intent_classification", "input": "Move our call?"},
        headers=tokens.headers(),
    )

    body = response.json()
    assert body["data"] == {"intent": "scheduling", "confidence": 0.66, "alternatives": []}
    assert "content" not in body
