"""Costs that came late: requests whose usage the provider never sent (a stream cancelled by its client
ends before the usage chunk) keep OpenRouter's generation id in their usage row; `Reconciler` asks
OpenRouter what each cost (``GET /generation?id=``), stores it in the row and charges the owner's budget
the difference from what was charged at the time (the call's estimate).

Each API process runs one every ``LLM_RECONCILE_SECONDS``. Rows are taken once they are `MIN_AGE_SECONDS`
old (OpenRouter reports a generation shortly after it ends) and for `MAX_AGE` (after that they stay
unpriced); several processes may look the same row up, but only the one whose UPDATE finds it still
unpriced charges the difference.
"""

from __future__ import annotations

import asyncio
import contextlib

from loguru import logger

from xenios_ai.db.pool import Pool
from xenios_ai.llm.router import LLMRouter

MIN_AGE_SECONDS = 5.0
MAX_AGE = "2 days"
BATCH = 100

_UNPRICED = f"""
SELECT id, generation_id, owner, task, extract(epoch FROM created_at)::float8 AS created
FROM ai_backend.llm_requests
WHERE cost_usd IS NULL AND generation_id IS NOT NULL
  AND created_at > now() - interval '{MAX_AGE}' AND created_at <= now() - make_interval(secs => %s)
ORDER BY created_at LIMIT {BATCH}
"""  # noqa: S608 - constants
_PRICE = """
UPDATE ai_backend.llm_requests AS r
SET cost_usd = %(cost)s,
    budget_charged_usd = CASE WHEN o.charged IS NULL THEN NULL ELSE %(cost)s END
FROM (SELECT id, budget_charged_usd::float8 AS charged FROM ai_backend.llm_requests
      WHERE id = %(id)s AND cost_usd IS NULL FOR UPDATE) AS o
WHERE r.id = o.id
RETURNING o.charged
"""


class Reconciler:
    """Prices the unpriced usage rows (see the module docstring). ``start()`` on the serving loop."""

    def __init__(self, pool: Pool, router: LLMRouter, interval: float) -> None:
        self._pool = pool
        self._router = router
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0 and self._router.configured and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="llm-reconcile")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.run_once()
            except Exception as exc:
                logger.warning(
                    "pricing unpriced LLM requests failed ({}); trying again later", type(exc).__name__
                )

    async def run_once(self, min_age: float = MIN_AGE_SECONDS) -> int:
        """Price what can be priced now; returns how many rows were."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(_UNPRICED, (min_age,))).fetchall()
        priced = 0
        for row in rows:
            cost = await self._router.generation_cost(str(row["generation_id"]))
            if cost is None:
                continue
            async with self._pool.connection() as conn:
                done = await (await conn.execute(_PRICE, {"cost": cost, "id": row["id"]})).fetchone()
            if done is None:
                continue  # priced meanwhile (another process)
            priced += 1
            budgets = self._router.budgets
            charged, owner = done["charged"], row["owner"]
            if isinstance(charged, float) and budgets is not None and isinstance(owner, str):
                budgets.charge(owner, str(row["task"]), cost - charged, float(str(row["created"])))
        return priced
