"""GET /api/v1/usage: the caller's LLM usage this month (UTC), by task, and what is left of their budget."""

from __future__ import annotations

import time

import msgspec
from litestar import get

from xenios_ai.api.auth import require_user
from xenios_ai.api.deps import PrincipalDep, ServicesDep
from xenios_ai.llm.budgets import month_of
from xenios_ai.llm.usage import TaskUsage, usage_by_task


class BudgetLeft(msgspec.Struct, kw_only=True):
    limit_usd: float
    spent_usd: float
    """As charged to the budget (also calls whose usage rows are still being written)."""
    left_usd: float
    held_usd: float
    """Estimates held by calls in flight (settled when they end)."""
    resets_at: str


class UsageResponse(msgspec.Struct, kw_only=True):
    month: str
    """``YYYY-MM``, UTC."""
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    by_task: list[TaskUsage]
    budget: BudgetLeft | None
    """The monthly budget (None: no BUDGET_USD_PER_USER_MONTH)."""
    task_budgets: dict[str, BudgetLeft]
    """The tasks with a budget of their own (BUDGET_USD_PER_TASK_MONTH)."""


def _left(limit: float, spent: float, held: float, resets_at: str) -> BudgetLeft:
    return BudgetLeft(
        limit_usd=limit,
        spent_usd=round(spent, 8),
        left_usd=round(max(0.0, limit - spent), 8),
        held_usd=round(held, 8),
        resets_at=resets_at,
    )


@get(
    "/usage",
    guards=[require_user],
    security=[{"apiKey": [], "supabaseJWT": []}],
    tags=["llm"],
    summary="The caller's LLM usage this month: cost, tokens, requests by task, budget left",
)
async def usage(services: ServicesDep, principal: PrincipalDep) -> UsageResponse:
    owner = principal.user_id
    month, start, end = month_of(time.time())
    tasks = await usage_by_task(services.db, owner, start, end)
    budget: BudgetLeft | None = None
    task_budgets: dict[str, BudgetLeft] = {}
    budgets = services.llm.budgets
    if budgets is not None:
        status = await budgets.status(owner)
        if status.limit_usd is not None:
            budget = _left(status.limit_usd, status.spent_usd, status.held_usd, status.resets_at)
        task_budgets = {
            task: _left(
                limit, status.task_spent.get(task, 0.0), status.task_held.get(task, 0.0), status.resets_at
            )
            for task, limit in status.task_limits.items()
        }
    return UsageResponse(
        month=month,
        requests=sum(t.requests for t in tasks),
        prompt_tokens=sum(t.prompt_tokens for t in tasks),
        completion_tokens=sum(t.completion_tokens for t in tasks),
        cached_tokens=sum(t.cached_tokens for t in tasks),
        cost_usd=round(sum(t.cost_usd for t in tasks), 8),
        by_task=tasks,
        budget=budget,
        task_budgets=task_budgets,
    )
