"""Per-user monthly LLM budgets, shared by every API process and worker through Redis.

``BUDGET_USD_PER_USER_MONTH`` caps what one owner (the JWT's ``sub``; a job's owner) spends on LLM calls
in a calendar month (UTC); ``BUDGET_USD_PER_TASK_MONTH`` (JSON, ``{"chat": 5}``) caps one task's share too.
0 / unset: no cap, and no Redis call at all.

Before a call the router *admits* it: one Lua script (EVALSHA, one round trip) reads the owner's month
(``<ns>:budget:<YYYY-MM>:<owner>``, a hash of nano-USD integers: ``spent``, ``held``, and per task) and, if
it fits, *holds* the call's estimated cost. A call fits when nothing is spent past the cap and either
nothing else is held or what is spent, held and estimated together stays within the cap. So, however many
requests race at the edge of a budget, at most one of them (one admitted while nothing else was held)
can take the spend past the cap: the overspend is at most one request's cost (as long as requests cost
no more than their estimate: the most this process saw the task cost among its last 16 calls, or
``BUDGET_RESERVE_USD`` before it has seen any). A refused call is 429 ``budget_exceeded`` with
``resets_at`` (the next month, UTC) and Retry-After (until then; 5 s when only calls in flight fill it).

After the call (succeeded, failed, cancelled: whatever the provider reported) the hold is *settled*:
the hold released and the provider's cost charged, off the request path (a task; `aclose` waits for the
last ones). When a cancelled stream's usage never came, the estimate is charged and the usage row keeps
OpenRouter's generation id; `reconcile.Reconciler` later looks the real cost up and charges the
difference. A hold left by a process that died mid-call is dropped once the owner's holds have not changed
for ``BUDGET_HOLD_SECONDS``. Redis never decides alone: when it does not answer within `TIMEOUT_SECONDS`
calls go through (a warning at most once a minute) and their charges are logged as lost.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from loguru import logger
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from xenios_ai.db.redis import redis_url
from xenios_ai.errors import RateLimited
from xenios_ai.settings import Settings
from xenios_ai.throttle import OncePer

NANO = 1_000_000_000
"""Budgets are counted in nano-USD integers (Redis HINCRBY is exact; floats would drift)."""
TIMEOUT_SECONDS = 0.5
PAUSE_SECONDS = 2.0
BUSY_RETRY_AFTER_SECONDS = 5
"""Retry-After when only the calls in flight fill the budget (they may leave some when they end)."""
RECENT_COSTS = 16
"""The estimate of a task's next call: the most one of its last RECENT_COSTS calls cost (this process)."""
EXHAUSTED_CACHE_SECONDS = 30.0
"""A budget found used up is refused locally (no Redis call) for this long."""

_ADMIT = """
-- KEYS[1]: the owner's month. ARGV: now ms, stale ms, estimate, user cap, task, task cap, expire-at s.
-- Returns {admitted 1/0, spent, which cap refused ('user'/'task'/''), used up 1/0}.
local k = KEYS[1]
local now, stale, est = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ucap, task, tcap = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local v = redis.call('HMGET', k, 'spent', 'held', 'held_at', 'spent:' .. task, 'held:' .. task)
local spent, held, at = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
local tspent, theld = tonumber(v[4]) or 0, tonumber(v[5]) or 0
if held > 0 and now - at > stale then
  for _, f in ipairs(redis.call('HKEYS', k)) do
    if string.sub(f, 1, 4) == 'held' and f ~= 'held_at' then redis.call('HSET', k, f, 0) end
  end
  held, theld = 0, 0
end
if ucap > 0 then
  if spent >= ucap then return {0, spent, 'user', 1} end
  if held > 0 and spent + held + est > ucap then return {0, spent, 'user', 0} end
end
if tcap > 0 then
  if tspent >= tcap then return {0, tspent, 'task', 1} end
  if theld > 0 and tspent + theld + est > tcap then return {0, tspent, 'task', 0} end
end
redis.call('HINCRBY', k, 'held', est)
redis.call('HINCRBY', k, 'held:' .. task, est)
redis.call('HSET', k, 'held_at', now)
redis.call('EXPIREAT', k, tonumber(ARGV[7]))
return {1, spent, '', 0}
"""

_SETTLE = """
-- KEYS[1]: the owner's month. ARGV: held estimate, cost charged, task, now ms, expire-at s.
local k = KEYS[1]
local est, cost, task = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
if est > 0 then
  if redis.call('HINCRBY', k, 'held', -est) < 0 then redis.call('HSET', k, 'held', 0) end
  if redis.call('HINCRBY', k, 'held:' .. task, -est) < 0 then redis.call('HSET', k, 'held:' .. task, 0) end
  redis.call('HSET', k, 'held_at', tonumber(ARGV[4]))
end
redis.call('HINCRBY', k, 'spent', cost)
redis.call('HINCRBY', k, 'spent:' .. task, cost)
redis.call('EXPIREAT', k, tonumber(ARGV[5]))
return 1
"""


def month_of(now: float) -> tuple[str, float, float]:
    """(``YYYY-MM``, the month's start and its end as Unix times), UTC."""
    t = time.gmtime(now)
    start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    end = calendar.timegm((year, month, 1, 0, 0, 0))
    return f"{t.tm_year:04d}-{t.tm_mon:02d}", float(start), float(end)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Hold:
    """An admitted call's hold on its owner's budget, settled once when the call ends."""

    key: str
    task: str
    estimate: int
    """Nano-USD held."""
    redis: bool = True
    """False: admitted without Redis (it did not answer); the charge is still attempted."""
    settled: bool = False


@dataclass(slots=True)
class BudgetStatus:
    """An owner's month as the budgets count it (USD)."""

    month: str
    resets_at: str
    limit_usd: float | None
    spent_usd: float
    held_usd: float
    task_limits: dict[str, float]
    task_spent: dict[str, float]
    task_held: dict[str, float]


class Budgets:
    """The budgets of one process (see the module docstring). Create and use it on one event loop."""

    def __init__(self, settings: Settings) -> None:
        self.user_cap = _nano(settings.budget_usd_per_user_month)
        self.task_caps = {task: _nano(usd) for task, usd in settings.budget_usd_per_task_month.items()}
        self._reserve = max(1, _nano(settings.budget_reserve_usd))
        self._stale_ms = int(settings.budget_hold_seconds * 1000)
        self._prefix = f"{settings.redis_namespace}:budget:"
        self._recent: dict[str, collections.deque[int]] = {}
        self._exhausted: dict[tuple[str, str], tuple[float, RateLimited]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused_until = 0.0
        self._warnings = OncePer(60.0)
        self._month = month_of(time.time())
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url(settings),
            max_connections=64,
            timeout=None,
            socket_connect_timeout=TIMEOUT_SECONDS,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)

    @staticmethod
    def from_settings(settings: Settings) -> Budgets | None:
        """The process's budgets, or None when no cap is set."""
        if settings.budget_usd_per_user_month <= 0 and not any(
            usd > 0 for usd in settings.budget_usd_per_task_month.values()
        ):
            return None
        return Budgets(settings)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        await self._redis.aclose()

    # -- the month -----------------------------------------------------------------------------------

    def _current(self) -> tuple[str, float, float]:
        now = time.time()
        if now >= self._month[2]:
            self._month = month_of(now)
            self._exhausted.clear()
        return self._month

    def key(self, owner: str) -> str:
        return f"{self._prefix}{self._current()[0]}:{owner}"

    # -- admit and settle ----------------------------------------------------------------------------

    def estimate(self, task: str) -> int:
        recent = self._recent.get(task)
        return max(recent) if recent else self._reserve

    async def admit(self, owner: str, task: str) -> Hold:
        """Hold the call's estimated cost on ``owner``'s month, or raise 429 ``budget_exceeded``."""
        month, _, ends = self._current()
        refused = self._exhausted.get((owner, task))
        if refused is not None:
            if time.monotonic() < refused[0]:
                raise refused[1]
            del self._exhausted[(owner, task)]
        key = f"{self._prefix}{month}:{owner}"
        estimate = self.estimate(task)
        hold = Hold(key, task, estimate)
        if self._paused_until and time.monotonic() < self._paused_until:
            hold.redis = False
            return hold
        args = (
            int(time.time() * 1000),
            self._stale_ms,
            estimate,
            self.user_cap,
            task,
            self.task_caps.get(task, 0),
            int(ends) + 7 * 86_400,
        )
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                admitted, spent, which, used_up = await self._admit(keys=(key,), args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            hold.redis = False
            return hold
        if int(admitted):
            return hold
        error = self._refusal(task, which.decode() if isinstance(which, bytes) else str(which), int(spent))
        if int(used_up):
            self._exhausted[(owner, task)] = (time.monotonic() + EXHAUSTED_CACHE_SECONDS, error)
        else:
            error.retry_after = BUSY_RETRY_AFTER_SECONDS
            error.headers["Retry-After"] = str(BUSY_RETRY_AFTER_SECONDS)
            error.extra["retry_after"] = BUSY_RETRY_AFTER_SECONDS
        raise error

    def _refusal(self, task: str, which: str, spent: int) -> RateLimited:
        _, _, ends = self._current()
        cap = self.user_cap if which == "user" else self.task_caps.get(task, 0)
        scope = "the monthly LLM budget" if which == "user" else f"the monthly LLM budget of {task}"
        retry_after = max(1, math.ceil(ends - time.time()))
        return RateLimited(
            f"{scope} ({cap / NANO:g} USD) is used up; it resets at {_iso(ends)}",
            code="budget_exceeded",
            retry_after=retry_after,
            extra={
                "budget": which,
                "limit_usd": cap / NANO,
                "spent_usd": spent / NANO,
                "resets_at": _iso(ends),
                "retry_after": retry_after,
            },
        )

    def settle(self, hold: Hold, cost_usd: float | None) -> float:
        """Release ``hold`` and charge the call's cost (the estimate when the provider reported none);
        returns the USD charged. Runs in the background; never raises."""
        if hold.settled:
            return 0.0
        hold.settled = True
        if cost_usd is not None:
            charged = max(0, round(cost_usd * NANO))
            recent = self._recent.get(hold.task)
            if recent is None:
                recent = self._recent[hold.task] = collections.deque(maxlen=RECENT_COSTS)
            recent.append(charged)
        else:
            charged = hold.estimate
        self._spawn(hold.key, hold.estimate if hold.redis else 0, charged, hold.task)
        return charged / NANO

    def charge(self, owner: str, task: str, cost_usd: float, created_at: float) -> None:
        """Charge ``cost_usd`` (may be negative: a refund) to ``owner``'s month of ``created_at``."""
        key = f"{self._prefix}{month_of(created_at)[0]}:{owner}"
        self._spawn(key, 0, round(cost_usd * NANO), task)

    def _spawn(self, key: str, estimate: int, charged: int, task: str) -> None:
        task_ = asyncio.get_running_loop().create_task(self._write(key, estimate, charged, task))
        self._tasks.add(task_)
        task_.add_done_callback(self._tasks.discard)

    async def _write(self, key: str, estimate: int, charged: int, task: str) -> None:
        ends = self._current()[2]
        args = (estimate, charged, task, int(time.time() * 1000), int(ends) + 7 * 86_400)
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS * 4):
                await self._settle(keys=(key,), args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            logger.bind(budget_key=key, charged_usd=charged / NANO).error(
                "an LLM budget charge was not recorded (Redis: {})", type(exc).__name__
            )

    def _failed(self, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + PAUSE_SECONDS
        if self._warnings.ready():
            logger.warning(
                "LLM budgets are not enforced: Redis did not answer ({}); calls go through",
                type(exc).__name__,
            )

    # -- reading -------------------------------------------------------------------------------------

    async def status(self, owner: str) -> BudgetStatus:
        month, _, ends = self._current()
        raw: dict[Any, Any] = await self._redis.hgetall(f"{self._prefix}{month}:{owner}")
        fields = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        return BudgetStatus(
            month=month,
            resets_at=_iso(ends),
            limit_usd=self.user_cap / NANO if self.user_cap else None,
            spent_usd=fields.get("spent", 0) / NANO,
            held_usd=fields.get("held", 0) / NANO,
            task_limits={t: c / NANO for t, c in self.task_caps.items() if c},
            task_spent={f[6:]: v / NANO for f, v in fields.items() if f.startswith("spent:")},
            task_held={f[5:]: v / NANO for f, v in fields.items() if f.startswith("held:")},
        )


def _nano(usd: float) -> int:
    return max(0, round(usd * NANO))
