"""Seeding an owner's budget month from PostgreSQL's usage rows (`xenios_ai.llm.budgets`).

A month Redis does not have (lost in a restart without persistence, evicted, or not seen yet) is counted
from the owner's stored usage rows before calls are admitted on it: `SEED` raises the spend to the larger
of Redis' and the rows' counts (never their sum: charges written after a loss are in both) and marks the
month. One query per owner and month in a process, however many of its calls wait for it. When the rows
cannot be read, calls go on with what Redis holds and seeding is tried again after `PAUSE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import psycopg
import redis.asyncio as aioredis
from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.llm.budget_scripts import NANO, SEED
from xenios_ai.throttle import OncePer

TIMEOUT_SECONDS = 2.0
"""How long seeding a month may take (the usage rows' query and the script) before calls go on without."""
PAUSE_SECONDS = 2.0

History = Callable[[str, float, float], Awaitable[Mapping[str, float]]]
"""USD spent per task by an owner between two Unix times, from the stored usage rows (PostgreSQL)."""


class MonthSeeder:
    """Seeds budget months from ``history`` (see the module docstring). Use it on one event loop."""

    def __init__(self, redis: aioredis.Redis, history: History) -> None:
        self._history = history
        self._script = redis.register_script(SEED)
        self._seeding: dict[str, asyncio.Future[None]] = {}
        self._paused_until = 0.0
        self._warnings = OncePer(60.0)

    @property
    def active(self) -> bool:
        """False for a while after the usage rows could not be read: months are then not checked."""
        return time.monotonic() >= self._paused_until

    async def seed(self, key: str, owner: str, starts: float, ends: float, expire_at: int) -> None:
        """Seed the month ``key`` (``owner``'s, from ``starts`` to ``ends``) once; never raises."""
        seeding = self._seeding.get(key)
        if seeding is None:
            seeding = asyncio.ensure_future(self._seed_once(key, owner, starts, ends, expire_at))
            self._seeding[key] = seeding
            seeding.add_done_callback(lambda _: self._seeding.pop(key, None))
        await asyncio.shield(seeding)

    async def _seed_once(self, key: str, owner: str, starts: float, ends: float, expire_at: int) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                spent = await self._history(owner, starts, ends)
                args: list[int | str] = [expire_at]
                for task, usd in spent.items():
                    args += [task, max(0, round(usd * NANO))]
                await self._script(keys=(key,), args=args)
        except (RedisError, OSError, TimeoutError, psycopg.Error) as exc:
            self._paused_until = time.monotonic() + PAUSE_SECONDS
            if self._warnings.ready():
                logger.warning(
                    "LLM budgets: a month's spend was not counted from the usage rows ({}); "
                    "calls go on with what Redis holds",
                    type(exc).__name__,
                )
