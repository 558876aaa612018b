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
``BUDGET_RESERVE_USD`` before it has seen any). Far from the edge the script holds more than the call
needs, a *lease* (a fiftieth of the budget, at most a quarter of what is left): the process admits the
owner's next calls from it without a round trip and gives back what it did not use after
`LEASE_SECONDS`; a lease is part of ``held``, so the guarantee is the same, and near the edge leases
shrink to single calls. Tasks with a budget of their own are admitted one call at a time. A refused call
is 429 ``budget_exceeded`` with ``resets_at`` (the next month, UTC) and Retry-After (until then; 5 s when
only calls in flight fill it).

After the call (succeeded, failed, cancelled: whatever the provider reported) the hold is *settled*:
the hold released and the provider's cost charged, off the request path (written in batches every
`FLUSH_SECONDS`, one script call per owner; `aclose` writes the last ones and gives the leases back).
When a cancelled stream's usage never came, the estimate is charged and the usage row keeps OpenRouter's
generation id; `reconcile.Reconciler` later looks the real cost up and charges the
difference. A hold left by a process that died mid-call is dropped once the owner's holds have not changed
for ``BUDGET_HOLD_SECONDS``. An owner's month is first *seeded* from PostgreSQL's usage rows
(`budget_seeding`): a month Redis lost (a restart without persistence, an eviction) goes on from what was
spent, not from zero. Redis never decides alone: when it does not answer within `TIMEOUT_SECONDS`
calls go through (a warning at most once a minute) and their charges are logged as lost. The Lua
scripts are `xenios_ai.llm.budget_scripts`.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import contextlib
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.db.redis import open_fail_open_redis
from xenios_ai.errors import RateLimited
from xenios_ai.llm.budget_scripts import ADMIT, NANO, SETTLE
from xenios_ai.llm.budget_seeding import History, MonthSeeder
from xenios_ai.settings import Settings
from xenios_ai.throttle import OncePer

TIMEOUT_SECONDS = 0.5
PAUSE_SECONDS = 2.0
BUSY_RETRY_AFTER_SECONDS = 5
"""Retry-After when only the calls in flight fill the budget (they may leave some when they end)."""
RECENT_COSTS = 16
"""The estimate of a task's next call: the most one of its last RECENT_COSTS calls cost (this process)."""
EXHAUSTED_CACHE_SECONDS = 30.0
"""A budget found used up is refused locally (no Redis call) for this long."""
LEASE_SHARE = 50
"""A process takes a fiftieth of a user's budget at a time (at most a quarter of what is left) ..."""
LEASE_SECONDS = 1.0
"""... and gives back what it did not use after this long."""
FLUSH_SECONDS = 0.05
"""Charges and releases are written in batches this often."""
EXPIRE_AFTER_MONTH_SECONDS = 7 * 86_400
"""A month's hash is kept this long after the month ends."""


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
    task_held: bool = False
    """The task has a budget of its own: its hold is on the task too."""
    settled: bool = False


@dataclass(slots=True)
class _Lease:
    """Budget this process holds in Redis for one owner and spends locally (no round trip per call)."""

    key: str
    left: int
    """Nano-USD not yet given to a call."""
    expires: float
    """`time.monotonic()` after which the rest goes back."""


@dataclass(slots=True)
class _Pending:
    """What is to be written to one owner's month at the next flush."""

    release: int = 0
    tasks: dict[str, list[int]] = field(default_factory=dict)
    """Task -> [cost charged, task hold released]."""


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

    def __init__(self, settings: Settings, history: History | None = None) -> None:
        self.user_cap = _nano(settings.budget_usd_per_user_month)
        self.task_caps = {task: _nano(usd) for task, usd in settings.budget_usd_per_task_month.items()}
        self._reserve = max(1, _nano(settings.budget_reserve_usd))
        self._lease_size = self.user_cap // LEASE_SHARE
        self._stale_ms = int(settings.budget_hold_seconds * 1000)
        self._prefix = f"{settings.redis_namespace}:budget:"
        self._recent: dict[str, collections.deque[int]] = {}
        self._exhausted: dict[tuple[str, str], tuple[float, RateLimited]] = {}
        self._leases: dict[str, _Lease] = {}
        self._pending: dict[str, _Pending] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._paused_until = 0.0
        self._warnings = OncePer(60.0)
        self._month = month_of(time.time())
        self._redis = open_fail_open_redis(settings, connect_timeout=TIMEOUT_SECONDS)
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)
        self._seeder = MonthSeeder(self._redis, history) if history is not None else None
        """Counts a month Redis does not have from the usage rows (None: such a month starts from zero)."""

    @staticmethod
    def from_settings(settings: Settings, history: History | None = None) -> Budgets | None:
        """The process's budgets, or None when no cap is set."""
        if settings.budget_usd_per_user_month <= 0 and not any(
            usd > 0 for usd in settings.budget_usd_per_task_month.values()
        ):
            return None
        return Budgets(settings, history)

    async def aclose(self) -> None:
        """Write what is pending and give the leases back."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        for lease in self._leases.values():
            self._pending_of(lease.key).release += lease.left
        self._leases.clear()
        await self.flush()
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

    async def admit(self, owner: str, task: str) -> Hold | None:
        """Hold the call's estimated cost on ``owner``'s month, or raise 429 ``budget_exceeded``; None when
        no budget applies to the call (no user budget, and none for the task)."""
        task_cap = self.task_caps.get(task, 0)
        if not (self.user_cap or task_cap):
            return None
        month, starts, ends = self._current()
        refused = self._exhausted.get((owner, task))
        if refused is not None:
            if time.monotonic() < refused[0]:
                raise refused[1]
            del self._exhausted[(owner, task)]
        key = f"{self._prefix}{month}:{owner}"
        estimate = self.estimate(task)
        if not task_cap:
            lease = self._leases.get(owner)
            fits = lease is not None and lease.key == key and lease.left >= estimate
            if fits and lease is not None and time.monotonic() < lease.expires:
                lease.left -= estimate
                return Hold(key, task, estimate)
        hold = Hold(key, task, estimate, task_held=bool(task_cap))
        if self._paused_until and time.monotonic() < self._paused_until:
            hold.redis = False
            return hold
        want = max(estimate, self._lease_size) if not task_cap else estimate
        now_ms, expire = int(time.time() * 1000), int(ends) + EXPIRE_AFTER_MONTH_SECONDS
        args = (now_ms, self._stale_ms, estimate, self.user_cap, task, task_cap, expire, want)
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                admitted, spent, which, used_up, granted = await self._admit(
                    keys=(key,), args=(*args, self._check_seeded())
                )
            if int(admitted) < 0 and self._seeder is not None:
                await self._seeder.seed(key, owner, starts, ends, expire)
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    admitted, spent, which, used_up, granted = await self._admit(
                        keys=(key,), args=(*args, "0")
                    )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            hold.redis = False
            return hold
        if int(admitted):
            if int(granted) > estimate:
                self._lease(owner, _Lease(key, int(granted) - estimate, time.monotonic() + LEASE_SECONDS))
            return hold
        error = self._refusal(task, which.decode() if isinstance(which, bytes) else str(which), int(spent))
        if int(used_up):
            self._exhausted[(owner, task)] = (time.monotonic() + EXHAUSTED_CACHE_SECONDS, error)
        else:
            error.retry_after = BUSY_RETRY_AFTER_SECONDS
            error.headers["Retry-After"] = str(BUSY_RETRY_AFTER_SECONDS)
            error.extra["retry_after"] = BUSY_RETRY_AFTER_SECONDS
        raise error

    def _lease(self, owner: str, lease: _Lease) -> None:
        old = self._leases.get(owner)
        if old is not None:
            self._pending_of(old.key).release += old.left
        self._leases[owner] = lease
        self._wake()

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
        returns the USD charged. Written with the next flush; never raises."""
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
        pending = self._pending_of(hold.key)
        release = hold.estimate if hold.redis else 0
        pending.release += release
        entry = pending.tasks.setdefault(hold.task, [0, 0])
        entry[0] += charged
        entry[1] += release if hold.task_held else 0
        self._wake()
        return charged / NANO

    def charge(self, owner: str, task: str, cost_usd: float, created_at: float) -> None:
        """Charge ``cost_usd`` (may be negative: a refund) to ``owner``'s month of ``created_at``."""
        key = f"{self._prefix}{month_of(created_at)[0]}:{owner}"
        self._pending_of(key).tasks.setdefault(task, [0, 0])[0] += round(cost_usd * NANO)
        self._wake()

    def _pending_of(self, key: str) -> _Pending:
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        return pending

    # -- writing -------------------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="llm-budgets")

    async def _flush_loop(self) -> None:
        """Every `FLUSH_SECONDS` while there is something to write or a lease to give back."""
        while self._pending or self._leases:
            await asyncio.sleep(FLUSH_SECONDS)
            now = time.monotonic()
            for owner, lease in list(self._leases.items()):
                if now >= lease.expires:
                    del self._leases[owner]
                    if lease.left:
                        self._pending_of(lease.key).release += lease.left
            await self.flush()

    async def flush(self) -> None:
        """Write every pending charge and release now (one script call per owner's month)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        now_ms, expire = int(time.time() * 1000), int(self._current()[2]) + EXPIRE_AFTER_MONTH_SECONDS
        for key, what in pending.items():
            args: list[int | str] = [what.release, now_ms, expire]
            for task, (charged, released) in what.tasks.items():
                args += [task, charged, released]
            try:
                async with asyncio.timeout(TIMEOUT_SECONDS * 4):
                    await self._settle(keys=(key,), args=args)
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
                logger.bind(budget_key=key, budget_args=args).error(
                    "LLM budget charges were not recorded (Redis: {})", type(exc).__name__
                )

    def _check_seeded(self) -> str:
        """ADMIT's last argument: '1' to be told of a month not yet seeded."""
        return "1" if self._seeder is not None and self._seeder.active else "0"

    def _failed(self, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + PAUSE_SECONDS
        if self._warnings.ready():
            logger.warning(
                "LLM budgets are not enforced: Redis did not answer ({}); calls go through",
                type(exc).__name__,
            )

    # -- reading -------------------------------------------------------------------------------------

    async def status(self, owner: str) -> BudgetStatus:
        month, starts, ends = self._current()
        key = f"{self._prefix}{month}:{owner}"
        raw: dict[Any, Any] = await self._redis.hgetall(key)
        if self._seeder is not None and self._seeder.active and b"seeded" not in raw and "seeded" not in raw:
            await self._seeder.seed(key, owner, starts, ends, int(ends) + EXPIRE_AFTER_MONTH_SECONDS)
            raw = await self._redis.hgetall(key)
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
