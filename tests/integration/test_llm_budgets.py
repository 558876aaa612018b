"""Per-user monthly LLM budgets (issue 18): checked before a call (429 ``budget_exceeded`` with when it
resets), charged with the provider's cost after it, atomically across processes (two apps, each with its
own router and Redis pool, share one budget here), and reported by GET /api/v1/usage."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis
from litestar.testing import AsyncTestClient

from tests.fakes.openrouter import FakeOpenRouter, Reply
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.llm import analysis_context
from xenios_ai.analysis import AnalysisInput, run_analysis
from xenios_ai.api.app import create_app
from xenios_ai.db.pool import open_pool
from xenios_ai.errors import RateLimited
from xenios_ai.llm.budget_scripts import NANO
from xenios_ai.llm.budgets import Budgets, month_of
from xenios_ai.llm.reconcile import Reconciler
from xenios_ai.llm.router import LLMRouter
from xenios_ai.llm.types import Delta
from xenios_ai.llm.usage import UsageRecord, UsageWriter
from xenios_ai.settings import Settings

COST = 0.001
BUDGET = {
    "budget_usd_per_user_month": 0.005,
    "budget_reserve_usd": COST,
    "llm_usage_flush_seconds": 0.05,
    "llm_retry_backoff_seconds": 0.01,
}


def new_user() -> str:
    return f"budget-{uuid.uuid4().hex[:10]}"


def budget_settings(test_env: dict[str, str], **overrides: Any) -> Settings:
    return make_settings(test_env, **(BUDGET | overrides))


@pytest.fixture
async def client(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> AsyncIterator[AsyncTestClient[Any]]:
    fake_openrouter.reset()
    fake_openrouter.default = Reply(cost=COST)
    async with AsyncTestClient(create_app(budget_settings(test_env))) as test_client:
        yield test_client


async def complete(client: AsyncTestClient[Any], user: str, task: str = "chat") -> Any:
    return await client.post(
        "/api/v1/llm/complete", json={"task": task, "input": "How was my week?"}, headers=tokens.headers(user)
    )


async def settled_usage(client: AsyncTestClient[Any], user: str) -> dict[str, Any]:
    """GET /usage once every hold of ``user`` is settled (charges are written off the request path)."""
    for _ in range(100):
        body: dict[str, Any] = (await client.get("/api/v1/usage", headers=tokens.headers(user))).json()
        if body["budget"]["held_usd"] == 0:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("budget holds were not settled")


def next_month_start() -> str:
    _, _, end = month_of(datetime.now(UTC).timestamp())
    return datetime.fromtimestamp(end, UTC).isoformat().replace("+00:00", "Z")


async def test_a_used_up_budget_is_a_429_saying_when_it_resets(
    client: AsyncTestClient[Any], fake_openrouter: FakeOpenRouter
) -> None:
    user = new_user()
    fake_openrouter.default = Reply(cost=0.004)
    assert (await complete(client, user)).status_code == 200  # 0.004 of 0.005
    assert (await complete(client, user)).status_code == 200  # fits when nothing else is held: 0.008
    await settled_usage(client, user)

    refused = await complete(client, user)

    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    body = refused.json()
    assert (body["code"], body["budget"], body["limit_usd"]) == ("budget_exceeded", "user", 0.005)
    assert body["spent_usd"] == pytest.approx(0.008)
    assert body["resets_at"] == next_month_start()
    assert int(refused.headers["retry-after"]) > 0
    assert len(fake_openrouter.requests) == 2  # the refused call never reached the provider

    stream = await client.post(
        "/api/v1/llm/stream", json={"task": "chat", "input": "hi"}, headers=tokens.headers(user)
    )
    assert (stream.status_code, stream.json()["code"]) == (429, "budget_exceeded")  # a problem, not SSE


@pytest.mark.parametrize(
    ("budget", "spent_before", "cost", "requests"),
    [
        pytest.param(0.005, 0.0, COST, 20, id="one-call-holds"),
        # 0.04 left of 0.2 (20 calls): leases of 0.004 (two calls) until a quarter of what is left is less
        pytest.param(0.2, 0.16, 0.002, 26, id="leases"),
    ],
)
async def test_concurrent_requests_at_the_edge_overspend_by_at_most_one_request(
    test_env: dict[str, str],
    fake_openrouter: FakeOpenRouter,
    budget: float,
    spent_before: float,
    cost: float,
    requests: int,
) -> None:
    """Requests at once, split over two apps (two routers, two Redis pools: as two processes), together
    costing more than what is left of the budget."""
    fake_openrouter.reset()
    fake_openrouter.default = Reply(cost=cost, chunks=2, token_delay=0.2)
    user = new_user()
    settings = budget_settings(test_env, budget_usd_per_user_month=budget, budget_reserve_usd=cost)
    if spent_before:
        month = month_of(time.time())[0]
        with redis.Redis.from_url(test_env["REDIS_URL"]) as client:
            key = f"{test_env['REDIS_NAMESPACE']}:budget:{month}:{user}"
            client.hset(key, "spent", round(spent_before * NANO))
    async with (
        AsyncTestClient(create_app(settings)) as one,
        AsyncTestClient(create_app(settings)) as two,
    ):
        responses = await asyncio.gather(*(complete(one if i % 2 else two, user) for i in range(requests)))
        usage = await settled_usage(one, user)

    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(served) + len(refused) == requests
    assert {r.json()["code"] for r in refused} == {"budget_exceeded"}
    spent = spent_before + sum(r.json()["usage"]["cost_usd"] for r in served)
    assert usage["budget"]["spent_usd"] == pytest.approx(spent)
    assert spent <= budget + cost + 1e-9
    assert spent >= budget - 0.25 * (budget - spent_before)  # the budget is used, not just refused


async def test_a_task_budget_caps_that_task_only(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    fake_openrouter.default = Reply(cost=COST)
    user = new_user()
    settings = budget_settings(test_env, budget_usd_per_task_month={"chat": COST})
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await complete(client, user)).status_code == 200
        await settled_usage(client, user)
        refused = await complete(client, user)
        other = await complete(client, user, task="session_summary")
        usage = await settled_usage(client, user)

    assert (refused.status_code, refused.json()["budget"]) == (429, "task")
    assert other.status_code == 200
    assert usage["task_budgets"]["chat"]["left_usd"] == 0
    assert usage["budget"]["spent_usd"] == pytest.approx(2 * COST)


async def test_usage_reports_the_month_by_task_with_the_budget_left(
    client: AsyncTestClient[Any], database_url: str
) -> None:
    user = new_user()
    for task in ("chat", "chat", "session_summary"):
        assert (await complete(client, user, task)).status_code == 200

    for _ in range(100):  # the rows are written in batches
        usage = await settled_usage(client, user)
        if usage["requests"] == 3:
            break
        await asyncio.sleep(0.05)

    assert usage["month"] == datetime.now(UTC).strftime("%Y-%m")
    assert usage["cost_usd"] == pytest.approx(3 * COST)
    by_task = {t["task"]: t for t in usage["by_task"]}
    assert (by_task["chat"]["requests"], by_task["session_summary"]["requests"]) == (2, 1)
    assert by_task["chat"]["cost_usd"] == pytest.approx(2 * COST)
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    budget = usage["budget"]
    assert (budget["limit_usd"], budget["resets_at"]) == (0.005, next_month_start())
    assert budget["left_usd"] == pytest.approx(0.005 - 3 * COST)


class Rows:
    """The router's usage sink, kept in memory (what the writer would store)."""

    def __init__(self) -> None:
        self.rows: list[UsageRecord] = []

    def record(self, usage: UsageRecord) -> None:
        self.rows.append(usage)


async def test_a_cancelled_stream_without_usage_is_charged_its_estimate(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    fake_openrouter.default = Reply(cost=COST, chunks=10, token_delay=0.2)
    user = new_user()
    rows = Rows()
    router = LLMRouter(budget_settings(test_env, budget_reserve_usd=0.002), rows)
    assert router.budgets is not None
    try:
        events = await router.open_stream("chat", input="hi", owner=user)
        async with contextlib.aclosing(events):
            first = await anext(events)
            assert type(first) is Delta
        await asyncio.sleep(0.1)  # the charge is written in the background
        status = await router.budgets.status(user)
    finally:
        await router.aclose()

    [row] = rows.rows
    assert (row.status, row.cost_usd) == ("cancelled", None)
    assert row.generation_id is not None
    assert row.generation_id.startswith("gen-")
    assert row.budget_charged_usd == pytest.approx(0.002)
    assert status.spent_usd == pytest.approx(0.002)
    assert status.held_usd == 0


async def test_a_cancelled_streams_cost_is_looked_up_later_and_the_budget_corrected(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter, database_url: str
) -> None:
    fake_openrouter.reset()
    fake_openrouter.default = Reply(cost=COST, chunks=10, token_delay=0.2)
    user = new_user()
    settings = budget_settings(test_env, budget_reserve_usd=0.003)
    pool = await open_pool(settings)
    writer = UsageWriter(pool, settings)
    router = LLMRouter(settings, writer)
    assert router.budgets is not None
    try:
        reconciler = Reconciler(pool, router, interval=0)
        await reconciler.run_once(min_age=0)  # earlier tests' unpriced rows in this session's database
        events = await router.open_stream("chat", input="hi", owner=user)
        async with contextlib.aclosing(events):
            await anext(events)
        await writer.flush()
        priced = await reconciler.run_once(min_age=0)
        again = await reconciler.run_once(min_age=0)
        await asyncio.sleep(0.1)  # charges are written in the background
        status = await router.budgets.status(user)
        async with pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT cost_usd::float8 AS cost, budget_charged_usd::float8 AS charged"
                    " FROM ai_backend.llm_requests WHERE owner = %s",
                    (user,),
                )
            ).fetchone()
    finally:
        await router.aclose()
        await writer.aclose()
        await pool.close()

    assert (priced, again) == (1, 0)  # priced once
    assert row is not None
    assert row["cost"] == pytest.approx(COST)  # what the fake says the whole generation cost
    assert row["charged"] == pytest.approx(COST)
    assert status.spent_usd == pytest.approx(COST)  # 0.003 estimated, 0.002 given back


async def test_an_analysis_job_is_admitted_and_charged_to_its_owner(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.reset()
    fake_openrouter.default = Reply(cost=0.004)
    user = new_user()
    router = LLMRouter(budget_settings(test_env))
    assert router.budgets is not None
    job = AnalysisInput(task="session_summary", text="Coach: hi. Client: my week went well.")
    try:
        await run_analysis(analysis_context(router, user), job)
        await run_analysis(analysis_context(router, user), job)  # fits: nothing else held (0.008 spent)
        await asyncio.sleep(0.1)  # charges are written in the background
        with pytest.raises(RateLimited) as refused:
            await run_analysis(analysis_context(router, user), job)
        status = await router.budgets.status(user)
    finally:
        await router.aclose()

    assert refused.value.code == "budget_exceeded"
    assert status.spent_usd == pytest.approx(0.008)
    assert status.task_spent == {"session_summary": pytest.approx(0.008)}
    assert len(fake_openrouter.requests) == 2


async def test_a_month_redis_lost_is_counted_again_from_the_usage_rows(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> None:
    """Redis loses the owner's month (a restart without persistence, an eviction): the next process goes
    on from what PostgreSQL's usage rows say was spent, not from zero."""
    fake_openrouter.reset()
    fake_openrouter.default = Reply(cost=COST)
    user = new_user()
    settings = budget_settings(test_env)
    async with AsyncTestClient(create_app(settings)) as client:
        for _ in range(3):
            assert (await complete(client, user)).status_code == 200
        await settled_usage(client, user)
    # The app's shutdown wrote its usage rows. Now Redis loses the month.
    with redis.Redis.from_url(test_env["REDIS_URL"]) as store:
        key = f"{test_env['REDIS_NAMESPACE']}:budget:{month_of(time.time())[0]}:{user}"
        assert store.delete(key) == 1

    async with AsyncTestClient(create_app(settings)) as client:  # another process: nothing cached
        before = await settled_usage(client, user)
        statuses = [(await complete(client, user)).status_code for _ in range(4)]
        after = await settled_usage(client, user)

    assert before["budget"]["spent_usd"] == pytest.approx(3 * COST)
    assert statuses == [200, 200, 429, 429]  # 0.003 spent + two calls = the 0.005 budget
    assert after["budget"]["spent_usd"] == pytest.approx(5 * COST)
    assert len(fake_openrouter.requests) == 5


async def test_a_month_is_not_seeded_twice_and_settles_after_a_loss_count_once(
    test_env: dict[str, str], fake_openrouter: FakeOpenRouter
) -> None:
    """Charges written after the loss (they re-create the hash) are in the usage rows too: seeding takes
    the larger of the two counts, never their sum; a seeded month is not seeded again."""
    fake_openrouter.reset()
    fake_openrouter.default = Reply(cost=COST)
    user = new_user()
    settings = budget_settings(test_env, budget_usd_per_user_month=1.0)
    key = f"{test_env['REDIS_NAMESPACE']}:budget:{month_of(time.time())[0]}:{user}"
    async with AsyncTestClient(create_app(settings)) as client:
        for _ in range(2):
            assert (await complete(client, user)).status_code == 200
        await settled_usage(client, user)
        with redis.Redis.from_url(test_env["REDIS_URL"]) as store:
            store.delete(key)
            one = round(COST * NANO)
            store.hset(key, mapping={"spent": one, "spent:chat": one})  # a charge written after the loss
    async with AsyncTestClient(create_app(settings)) as client:
        first = await settled_usage(client, user)
        with redis.Redis.from_url(test_env["REDIS_URL"]) as store:
            store.hset(key, "spent", round(4 * COST * NANO))  # a seeded month is Redis' alone
        second = await settled_usage(client, user)

    assert first["budget"]["spent_usd"] == pytest.approx(2 * COST)
    assert first["task_budgets"] == {}
    assert second["budget"]["spent_usd"] == pytest.approx(4 * COST)


async def test_calls_go_on_when_the_usage_rows_cannot_be_read(test_env: dict[str, str]) -> None:
    """Seeding a month needs PostgreSQL; while it is away calls are admitted on what Redis holds."""
    asked: list[str] = []

    async def unreachable(owner: str, start: float, end: float) -> dict[str, float]:
        asked.append(owner)
        raise psycopg.OperationalError("the database is away")

    budgets = Budgets(budget_settings(test_env), history=unreachable)
    user = new_user()
    try:
        hold = await budgets.admit(user, "chat")
        status = await budgets.status(user)  # within the pause: not asked again
    finally:
        await budgets.aclose()

    assert hold is not None
    assert hold.redis
    assert status.held_usd == pytest.approx(COST)
    assert asked == [user]
