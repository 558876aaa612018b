"""One deadline model for every call: a primary that hangs falls back within the first-token deadline on
every path, not only on streams (issue 18). Every call streams from the upstream internally, so the
non-streamed paths (/complete, classify, extract, analysis jobs) get the same time-to-first-token deadline
as /stream; the whole-answer limit (LLM_TIMEOUT_SECONDS, 30 s here) stays and is not what ends the wait.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.llm import analysis_context
from xenios_ai.analysis import AnalysisInput, run_analysis
from xenios_ai.api.app import create_app
from xenios_ai.llm.router import LLMRouter
from xenios_ai.settings import Settings

OPUS = "anthropic/claude-opus-4.5"
SONNET = "anthropic/claude-sonnet-4"
MINI = "openai/gpt-4o-mini"
FIRST_TOKEN = 1.0
DEADLINES = {
    "llm_first_token_timeout_seconds": FIRST_TOKEN,
    "llm_timeout_seconds": 30.0,
    "llm_stream_idle_timeout_seconds": 5.0,
    "llm_retry_backoff_seconds": 0.01,
}
HANG = Reply(hang=10)
"""The primary's reply: nothing at all (not even headers) for 10 s."""


@pytest.fixture
def settings_fast(test_env: dict[str, str]) -> Settings:
    return make_settings(test_env, **DEADLINES)


@pytest.fixture
async def client(
    settings_fast: Settings, fake_openrouter: FakeOpenRouter
) -> AsyncIterator[AsyncTestClient[Any]]:
    fake_openrouter.reset()
    async with AsyncTestClient(create_app(settings_fast)) as test_client:
        yield test_client


def assert_fell_back_in_time(elapsed: float, attempts: list[dict[str, Any]], primary: str) -> None:
    assert elapsed < FIRST_TOKEN + 1.0, f"took {elapsed:.2f}s"
    assert (attempts[0]["model"], attempts[0]["error"]) == (primary, "first_token_timeout")
    assert attempts[-1].get("error") is None


async def test_complete_falls_back_within_the_first_token_deadline(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(HANG, model=OPUS)

    started = time.monotonic()
    response = await client.post(
        "/api/v1/llm/complete", json={"task": "chat", "input": "hi"}, headers=tokens.headers("user-dl")
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["fallback_used"]) == (SONNET, True)
    assert_fell_back_in_time(elapsed, body["attempts"], OPUS)


async def test_classify_intent_falls_back_within_the_first_token_deadline(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(HANG, model=SONNET)
    fake_openrouter.enqueue(
        Reply(json={"intent": "other", "confidence": 0.9, "alternatives": []}), model=MINI
    )

    started = time.monotonic()
    response = await client.post(
        "/api/v1/llm/classify-intent", json={"text": "hello"}, headers=tokens.headers("user-dl")
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert (response.json()["intent"], response.json()["model"]) == ("other", MINI)
    assert elapsed < FIRST_TOKEN + 1.0, f"took {elapsed:.2f}s"
    assert [r.model for r in fake_openrouter.requests] == [SONNET, MINI]


async def test_extract_entities_falls_back_within_the_first_token_deadline(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(HANG, model=SONNET)
    entity = {"type": "person", "text": "Anna", "start": 0, "end": 4}
    fake_openrouter.enqueue(Reply(json={"entities": [entity]}), model=MINI)

    started = time.monotonic()
    response = await client.post(
        "/api/v1/llm/extract-entities", json={"text": "Anna runs."}, headers=tokens.headers("user-dl")
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert (response.json()["entities"], response.json()["model"]) == ([entity], MINI)
    assert elapsed < FIRST_TOKEN + 1.0, f"took {elapsed:.2f}s"
    assert [r.model for r in fake_openrouter.requests] == [SONNET, MINI]


async def test_an_analysis_job_falls_back_within_the_first_token_deadline(
    settings_fast: Settings, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    fake_openrouter.enqueue(HANG, model=OPUS)
    router = LLMRouter(settings_fast)
    try:
        started = time.monotonic()
        result = await run_analysis(
            analysis_context(router, "user-dl"),
            AnalysisInput(task="session_summary", text="Coach: hi. Client: my week went well."),
        )
        elapsed = time.monotonic() - started
    finally:
        await router.aclose()

    assert (result.model, result.fallback_used) == (SONNET, True)
    assert elapsed < FIRST_TOKEN + 1.0, f"took {elapsed:.2f}s"
    assert [r.model for r in fake_openrouter.requests] == [OPUS, SONNET]


async def test_the_openai_compatible_face_falls_back_within_the_first_token_deadline(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.enqueue(HANG, model=OPUS)

    started = time.monotonic()
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        headers=tokens.headers("user-dl"),
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    assert elapsed < FIRST_TOKEN + 1.0, f"took {elapsed:.2f}s"
    assert [r.model for r in fake_openrouter.requests] == [OPUS, SONNET]
