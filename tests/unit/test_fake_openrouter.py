"""The fake OpenRouter, driven by the real openai SDK (aiohttp transport) and by plain aiohttp."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgspec
import openai
import pytest
from openai import AsyncOpenAI, DefaultAioHttpClient
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes.openrouter import (
    DEFAULT_CONTENT,
    PROCESSING_COMMENT,
    FakeOpenRouter,
    Reply,
    last_disconnected,
)

KEY = "test-key"
MODEL = "anthropic/claude-sonnet-4"
ROOT = Path(__file__).resolve().parents[2]


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": "You are a coach."}, {"role": "user", "content": text}]


def trigger(**fields: Any) -> str:
    return f"Summarise. [[fake:{json.dumps(fields)}]]"


def expected_cost(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * 3 + completion_tokens * 15) / 1e6


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeOpenRouter) -> None:
    fake.reset()


@pytest.fixture
async def client(fake: FakeOpenRouter) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=fake.base_url,
        api_key=KEY,
        http_client=DefaultAioHttpClient(),
        max_retries=0,
        default_headers={"HTTP-Referer": "https://xenios.example", "X-Title": "Xenios"},
    ) as sdk:
        yield sdk


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        yield session


async def collect(stream: openai.AsyncStream[Any], into: list[str]) -> list[Any]:
    """Iterate a stream, appending each content delta to `into` (kept when the stream fails)."""
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            into.append(chunk.choices[0].delta.content)
    return chunks


# -- happy paths ------------------------------------------------------------------------------------


async def test_json_completion_has_content_usage_and_cost(client: AsyncOpenAI) -> None:
    messages = user("How did the session go?")
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)

    body = msgspec.json.decode(raw.content)
    prompt_tokens = (len("You are a coach.") + len("How did the session go?")) // 4
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert body["provider"] == "Fake"
    assert body["id"].startswith("gen-")
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": DEFAULT_CONTENT,
        "refusal": None,
        "reasoning": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == prompt_tokens
    assert usage["completion_tokens"] == len(DEFAULT_CONTENT.split())
    assert usage["total_tokens"] == prompt_tokens + usage["completion_tokens"]
    assert usage["cost"] == expected_cost(prompt_tokens, usage["completion_tokens"])
    assert raw.parse().choices[0].message.content == DEFAULT_CONTENT


async def test_usage_overrides_and_json_content(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(json={"intent": "goal_setting", "confidence": 0.9}, prompt_tokens=7, cost=0.25))

    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=user("Hi"))

    body = msgspec.json.decode(raw.content)
    assert json.loads(body["choices"][0]["message"]["content"]) == {
        "intent": "goal_setting",
        "confidence": 0.9,
    }
    assert body["usage"]["prompt_tokens"] == 7
    assert body["usage"]["cost"] == 0.25


async def test_invalid_json_content_does_not_parse(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(json={"intent": "goal_setting"}, invalid_json=True))

    completion = await client.chat.completions.create(model=MODEL, messages=user("Classify"))

    content = completion.choices[0].message.content
    assert content is not None
    assert content.startswith('{"intent":"goal_setting"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)


async def test_stream_deltas_concatenate_and_usage_arrives_last(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=user("Stream it"), stream=True, stream_options={"include_usage": True}
    )
    deltas: list[str] = []
    chunks = await collect(stream, deltas)

    assert "".join(deltas) == DEFAULT_CONTENT
    assert len(deltas) == len(DEFAULT_CONTENT.split())
    assert chunks[-2].choices[0].finish_reason == "stop"
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.completion_tokens == len(deltas)
    extra = final.usage.model_extra or {}
    assert extra["cost"] == expected_cost(final.usage.prompt_tokens, final.usage.completion_tokens)
    assert all(chunk.usage is None for chunk in chunks[:-1])


async def test_stream_wire_format_with_processing_comments(
    fake: FakeOpenRouter, http: aiohttp.ClientSession
) -> None:
    fake.enqueue(Reply(content="one two", processing_comments=2))
    body = {
        "model": MODEL,
        "messages": user("Hi"),
        "stream": True,
        "stream_options": {"include_usage": False},
    }

    async with http.post(f"{fake.base_url}/chat/completions", json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        wire = await response.read()

    events = wire.split(b"\n\n")
    assert events[:2] == [PROCESSING_COMMENT.strip()] * 2
    data = [json.loads(event[len(b"data: ") :]) for event in events[2:-2]]
    assert [d["choices"][0]["delta"].get("content") for d in data] == ["one", " two", ""]
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert data[0]["object"] == "chat.completion.chunk"
    assert events[-2:] == [b"data: [DONE]", b""]  # include_usage false: no usage chunk


async def test_processing_comments_do_not_break_the_sdk(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(processing_comments=3, comment_interval=0.01))

    stream = await client.chat.completions.create(model=MODEL, messages=user("Think first"), stream=True)
    deltas: list[str] = []
    chunks = await collect(stream, deltas)

    assert "".join(deltas) == DEFAULT_CONTENT
    assert chunks[-1].usage is not None  # sent by default, as OpenRouter does


async def test_chunks_splits_content_evenly(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(content="abcdefghij", chunks=3))

    stream = await client.chat.completions.create(model=MODEL, messages=user("Hi"), stream=True)
    deltas: list[str] = []
    await collect(stream, deltas)

    assert deltas == ["abcd", "efg", "hij"]


async def test_sync_clients_work_too(fake: FakeOpenRouter) -> None:
    def call() -> str | None:
        with openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0) as sdk:
            return sdk.chat.completions.create(model=MODEL, messages=user("Hi")).choices[0].message.content

    assert await asyncio.to_thread(call) == DEFAULT_CONTENT


async def test_models_endpoint_lists_known_models(fake: FakeOpenRouter, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{fake.base_url}/models") as response:
        models = (await response.json())["data"]
    assert MODEL in [model["id"] for model in models]
    assert models[0]["pricing"]["prompt"] == "0.000003"


# -- faults -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, openai.InternalServerError),
        (502, openai.InternalServerError),
        (503, openai.InternalServerError),
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
    ],
)
async def test_error_status_has_openrouter_error_body(
    fake: FakeOpenRouter, client: AsyncOpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    fake.enqueue(Reply(status=status, error_message="upstream said no"))

    with pytest.raises(error) as caught:
        await client.chat.completions.create(model=MODEL, messages=user("Hi"))

    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == status
    assert body["message"] == "upstream said no"
    if status >= 500:
        assert body["metadata"] == {"provider_name": "Fake", "raw": "upstream said no"}


async def test_a_moderation_403_names_reasons_and_the_flagged_input(
    fake: FakeOpenRouter, client: AsyncOpenAI
) -> None:
    fake.enqueue(Reply(status=403, moderation_reasons=["violence"]), Reply(status=403))

    with pytest.raises(openai.PermissionDeniedError) as moderated:
        await client.chat.completions.create(model=MODEL, messages=user("Something flagged"))
    with pytest.raises(openai.PermissionDeniedError) as plain:
        await client.chat.completions.create(model=MODEL, messages=user("Hi"))

    body = moderated.value.body
    assert isinstance(body, dict)
    assert body["code"] == 403
    assert "flagged" in body["message"]
    assert body["metadata"] == {
        "reasons": ["violence"],
        "flagged_input": "Something flagged",
        "provider_name": "Fake",
        "model_slug": MODEL,
    }
    assert plain.value.body == {"code": 403, "message": "Forbidden"}


@pytest.mark.parametrize(
    ("gzip", "accept", "compressed"),
    [
        ("accepted", "gzip, deflate", True),
        ("accepted", "identity", False),
        ("accepted", "gzip;q=0", False),
        ("always", "identity", True),
        (None, "gzip", False),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_gzip_compresses_json_and_sse_as_asked(
    fake: FakeOpenRouter,
    http: aiohttp.ClientSession,
    gzip: Literal["accepted", "always"] | None,
    accept: str,
    compressed: bool,
    stream: bool,
) -> None:
    fake.enqueue(Reply(gzip=gzip, token_delay=0.01))
    body = {"model": MODEL, "messages": user("Hi"), "stream": stream}

    async with http.post(
        f"{fake.base_url}/chat/completions", json=body, headers={"Accept-Encoding": accept}
    ) as response:
        assert response.headers.get("Content-Encoding") == ("gzip" if compressed else None)
        text = await response.read()  # aiohttp decodes it

    if stream:
        assert text.endswith(b"data: [DONE]\n\n")
        events = [json.loads(e[len(b"data: ") :]) for e in text.split(b"\n\n")[:-2]]
        content = "".join(e["choices"][0]["delta"]["content"] for e in events if e["choices"])
    else:
        content = json.loads(text)["choices"][0]["message"]["content"]
    assert content == DEFAULT_CONTENT
    [request] = fake.requests
    assert request.compressed is compressed


async def test_usage_every_chunk_is_cumulative(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(content="a b c d", usage_every_chunk=True, prompt_tokens=10, cost=0.4))

    stream = await client.chat.completions.create(model=MODEL, messages=user("Hi"), stream=True)
    chunks = await collect(stream, [])

    usages = [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage is not None]
    assert usages == [(10, 1), (10, 2), (10, 3), (10, 4), (10, 4)]  # 4 content chunks, the final usage
    costs = [(c.usage.model_extra or {})["cost"] for c in chunks if c.usage is not None]
    assert costs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])


async def test_rate_limit_sets_retry_after(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(status=429, retry_after=7))

    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=user("Hi"))

    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.status_code == 429


async def test_hang_makes_the_client_time_out(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(hang=5))
    started = time.monotonic()

    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model=MODEL, messages=user("Hi"), timeout=0.2)

    assert time.monotonic() - started < 1
    await fake.wait_for_async(last_disconnected)


async def test_stall_mid_stream_trips_the_read_timeout(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(stall_after=2, stall_seconds=5))
    deltas: list[str] = []

    stream = await client.chat.completions.create(model=MODEL, messages=user("Hi"), stream=True, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        await collect(stream, deltas)

    assert deltas == ["This", " is"]


async def test_cut_connection_makes_the_sdk_raise(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(cut_after=2), Reply(cut_after=0))
    deltas: list[str] = []

    stream = await client.chat.completions.create(model=MODEL, messages=user("Hi"), stream=True)
    with pytest.raises(openai.APIConnectionError):
        await collect(stream, deltas)
    with pytest.raises(openai.APIConnectionError):  # non-stream: half a body, then the connection closes
        await client.chat.completions.create(model=MODEL, messages=user("Hi"))

    assert deltas == ["This", " is"]
    records = fake.requests
    assert [(r.completed, r.client_disconnected) for r in records] == [(False, False), (False, False)]


async def test_mid_stream_error_chunk_raises_api_error(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(mid_stream_error=3))
    deltas: list[str] = []

    stream = await client.chat.completions.create(model=MODEL, messages=user("Hi"), stream=True)
    with pytest.raises(openai.APIError) as caught:
        await collect(stream, deltas)

    assert deltas == ["This", " is", " a"]
    assert caught.value.body == {"code": "server_error", "message": "Provider disconnected unexpectedly"}


async def test_slow_tokens_arrive_one_by_one(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(content="a b c d e", token_delay=0.08))
    started = time.monotonic()
    arrivals: list[float] = []

    stream = await client.chat.completions.create(model=MODEL, messages=user("Hi"), stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    ended = time.monotonic()

    assert len(arrivals) == 5
    assert ended - arrivals[0] >= 4 * 0.08 * 0.9
    assert arrivals[0] - started < (ended - arrivals[0]) / 2  # the first token did not wait for the rest
    assert min(later - earlier for earlier, later in itertools.pairwise(arrivals)) >= 0.08 * 0.8


# -- choosing replies -------------------------------------------------------------------------------


async def test_trigger_overrides_per_request_concurrently(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(content="scripted"))  # a trigger wins over the script and leaves it queued

    async def ask(text: str) -> str | None:
        completion = await client.chat.completions.create(model=MODEL, messages=user(text))
        return completion.choices[0].message.content

    failing = client.chat.completions.create(model=MODEL, messages=user(trigger(status=503)))
    results = await asyncio.gather(
        ask(trigger(content="first", hang=0.05)),
        ask(trigger(content="second")),
        failing,
        return_exceptions=True,
    )

    assert list(results[:2]) == ["first", "second"]
    assert isinstance(results[2], openai.InternalServerError)
    assert fake.pending == 1


async def test_bad_trigger_is_a_400(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="trigger"):
        await client.chat.completions.create(model=MODEL, messages=user(trigger(no_such_field=1)))


async def test_script_is_fifo_per_model(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(content="a1"), Reply(content="a2"), model="a")
    fake.enqueue(Reply(content="b1"), model="b")
    fake.enqueue(Reply(content="any"))
    fake.default = Reply(content="default")

    async def ask(model: str) -> str | None:
        completion = await client.chat.completions.create(model=model, messages=user("Hi"))
        return completion.choices[0].message.content

    assert [await ask(model) for model in ("b", "a", "b", "a", "a", "b")] == [
        "b1",
        "a1",
        "any",
        "a2",
        "default",
        "default",
    ]
    assert fake.pending == 0


# -- recording and validation -----------------------------------------------------------------------


async def test_requests_are_recorded(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    before = time.monotonic()
    await client.chat.completions.create(model=MODEL, messages=user("Hi"), temperature=0.2)
    stream = await client.chat.completions.create(model=MODEL, messages=user("Hi"), stream=True)
    await collect(stream, [])

    # The fake marks a request completed just after its last write, which can trail the client's read.
    first, second = await fake.wait_for_async(lambda rs: len(rs) == 2 and all(r.completed for r in rs))
    assert first.model == MODEL
    assert first.body["temperature"] == 0.2
    assert first.body["messages"][1] == {"role": "user", "content": "Hi"}
    assert first.headers["http-referer"] == "https://xenios.example"
    assert first.headers["x-title"] == "Xenios"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert (first.stream, second.stream) == (False, True)
    assert before <= first.received_at <= second.received_at
    assert first.completed
    assert second.completed
    assert not first.client_disconnected
    fake.clear()
    assert fake.requests == []


async def test_auth_is_checked(fake: FakeOpenRouter, http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "messages": user("Hi")}
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(f"{fake.base_url}/chat/completions", json=body) as response:
            assert response.status == 401
        wrong = {"Authorization": "Bearer wrong"}
        async with anonymous.post(f"{fake.base_url}/chat/completions", json=body, headers=wrong) as response:
            assert response.status == 401
            assert (await response.json())["error"] == {"code": 401, "message": "User not found."}
    assert [r.status for r in fake.requests] == [401, 401]


@pytest.mark.parametrize(
    "body",
    [{"messages": [{"role": "user", "content": "Hi"}]}, {"model": MODEL}, {"model": MODEL, "messages": []}],
)
async def test_missing_model_or_messages_is_a_400(
    fake: FakeOpenRouter, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    async with http.post(f"{fake.base_url}/chat/completions", json=body) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == 400
    assert error["message"].startswith("Input required")


async def test_allow_list_rejects_unknown_models() -> None:
    with FakeOpenRouter(models=[MODEL], unknown_model_status=404) as fake:
        async with AsyncOpenAI(
            base_url=fake.base_url, api_key="any", http_client=DefaultAioHttpClient(), max_retries=0
        ) as sdk:
            with pytest.raises(openai.NotFoundError, match="not a valid model ID"):
                await sdk.chat.completions.create(model="openai/gpt-2", messages=user("Hi"))
            assert (await sdk.models.list()).data[0].id == MODEL
            await sdk.chat.completions.create(model=MODEL, messages=user("Hi"))


# -- client disconnects -----------------------------------------------------------------------------


async def test_disconnect_during_slow_stream_is_detected(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(token_delay=0.5))

    stream = await client.chat.completions.create(model=MODEL, messages=user("Hi"), stream=True)
    async for _ in stream:
        break  # first chunk seen, then the client gives up
    await stream.close()

    requests = await fake.wait_for_async(last_disconnected, timeout=2)
    assert not requests[-1].completed


async def test_disconnect_during_hang_is_detected(fake: FakeOpenRouter, client: AsyncOpenAI) -> None:
    fake.enqueue(Reply(hang=5))

    call = asyncio.create_task(client.chat.completions.create(model=MODEL, messages=user("Hi")))
    await fake.wait_for_async(lambda requests: len(requests) == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    requests = await fake.wait_for_async(last_disconnected, timeout=2)
    assert not requests[-1].completed


def test_wait_for_times_out_with_a_summary(fake: FakeOpenRouter) -> None:
    with pytest.raises(TimeoutError, match="not met"):
        fake.wait_for(lambda requests: len(requests) > 0, timeout=0.05)


# -- standalone ------------------------------------------------------------------------------------


def test_runs_standalone_as_a_module() -> None:
    command = [sys.executable, "-m", "tests.fakes.openrouter", "--port", "0", "--api-key", KEY]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:")
            assert base_url.endswith("/api/v1")
            with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0) as sdk:
                completion = sdk.chat.completions.create(model=MODEL, messages=user("Hi"))
            assert completion.choices[0].message.content == DEFAULT_CONTENT
        finally:
            process.terminate()
        assert process.wait(timeout=5) == 0
