"""Per-user rate limits: 429 with Retry-After past them.

A user (the JWT's ``sub``) may start RATE_LIMIT_LLM_PER_MINUTE LLM requests and make
RATE_LIMIT_JOBS_PER_MINUTE job submits per minute, shared by every API process through Redis, and hold
RATE_LIMIT_LLM_STREAMS LLM streams open at once in each API process. A limit of 0 is off, and so is its
check: no Redis call at all.

Per-minute limits: fixed windows per user in Redis. A process takes permits in batches (one Lua script,
EVALSHA, one round trip: INCRBY the user's ``<ns>:ratelimit:<llm|jobs>:<user>`` counter, which expires with
its window, and grant what is left under the limit) and spends them locally until the window ends: a
batch is a twentieth of the limit (one permit for limits under 40, at most 50). A user's first request
of a window in a process does not wait for Redis: it is served while its batch is fetched (an EVALSHA
through redis-py costs ~130 us of CPU and ~200 us of latency here, a tenth of a whole relayed LLM
request). So requests wait for Redis only when a busy user's batch runs out. Redis never grants more than the limit; a user can
get one request more per process and window (a first request in a process after other processes used
the window up) and up to a batch less one per process fewer (permits taken but unused by the window's
end). A refusal is kept locally until the window ends.

Open streams are counted per process, in memory (a stream holds its slot until it ends, however it ends):
it bounds what one user can hold of a process's connections without a round trip on the stream's way to
its first token.

Redis never decides whether a request is served: when it does not answer within `TIMEOUT_SECONDS` the
request goes through unlimited (fail open), a warning is logged at most every `WARN_EVERY_SECONDS`, and the
limiter leaves Redis alone for `PAUSE_SECONDS`, so a dead Redis adds nothing per request. The limiter has
its own connection pool: blocking (a burst larger than the pool waits for a connection; failing would let
it through), without redis-py's per-command socket timeout (which, on Python 3.11, runs every send as a
task) and without retries; one ``asyncio.timeout`` bounds the whole call instead.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from loguru import logger
from redis.exceptions import RedisError

from xenios_ai.db.redis import open_fail_open_redis
from xenios_ai.errors import RateLimited
from xenios_ai.settings import Settings
from xenios_ai.throttle import OncePer

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from xenios_ai.api.auth import Principal

WINDOW_MS = 60_000
"""Length of a rate-limit window."""
BATCH_SHARE = 20
"""A process takes a limit's permits from Redis in batches of limit // BATCH_SHARE (at least one) ..."""
MAX_BATCH = 50
"""... and at most MAX_BATCH: what a process took but did not use (it restarted, the user moved to another
process) is lost for the window."""
TIMEOUT_SECONDS = 0.5
"""Longest a request waits for the limiter's Redis before it is let through."""
PAUSE_SECONDS = 2.0
"""After Redis failed to answer, the limiter lets requests through without asking it for this long."""
WARN_EVERY_SECONDS = 60.0
"""At most one warning per process this often while Redis cannot be reached."""
STREAM_RETRY_AFTER_SECONDS = 5
"""Retry-After of a stream refused because the user's streams are all busy (when one ends is unknown)."""
_PRUNE_AT = 4096
"""Windows kept in memory before the ended ones are dropped."""

_SCRIPT = """
-- KEYS[1]: the user's counter for this window. ARGV: limit, window ms, permits wanted.
-- Returns {permits granted (0: the limit is reached), ms left in the window}.
local wanted = tonumber(ARGV[3])
local count = redis.call('INCRBY', KEYS[1], wanted)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  ttl = tonumber(ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local granted = tonumber(ARGV[1]) - (count - wanted)
if granted > wanted then granted = wanted end
if granted < 0 then granted = 0 end
return {granted, ttl}
"""


@dataclass(slots=True)
class _Window:
    """What this process holds of one user's window: permits left, and when the window ends."""

    left: int
    ends: float  # time.monotonic()


class StreamSlot:
    """One open stream's place among its user's; `release` it when the stream ends (idempotent)."""

    __slots__ = ("_limiter", "_released", "_user")

    def __init__(self, limiter: RateLimiter, user: str) -> None:
        self._limiter = limiter
        self._user = user
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._close_stream(self._user)


class RateLimiter:
    """The per-user limits of one API process (see the module docstring); raises `RateLimited`."""

    def __init__(self, settings: Settings) -> None:
        self.llm_per_minute = settings.rate_limit_llm_per_minute
        self.llm_streams = settings.rate_limit_llm_streams
        self.jobs_per_minute = settings.rate_limit_jobs_per_minute
        prefix = f"{settings.redis_namespace}:ratelimit"
        self._llm_prefix = f"{prefix}:llm:"
        self._jobs_prefix = f"{prefix}:jobs:"
        self._windows: dict[str, _Window] = {}
        self._pending: dict[str, asyncio.Task[int | None]] = {}
        self._streams: dict[str, int] = {}
        self._paused_until = 0.0
        self._warnings = OncePer(WARN_EVERY_SECONDS)
        self._redis: aioredis.Redis | None = None
        if max(self.llm_per_minute, self.jobs_per_minute) > 0:
            self._redis = open_fail_open_redis(settings, connect_timeout=TIMEOUT_SECONDS)
            self._script = self._redis.register_script(_SCRIPT)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def keys_of(self, user: str) -> list[str]:
        """The Redis keys counting ``user``'s requests (deleted when the user's data is erased)."""
        return [self._llm_prefix + user, self._jobs_prefix + user]

    async def check_llm(self, user: str) -> None:
        """Count one LLM request of ``user``."""
        if self.llm_per_minute > 0:
            await self._take(self._llm_prefix + user, self.llm_per_minute, "LLM requests")

    async def check_job_submit(self, user: str) -> None:
        """Count one job submit of ``user``."""
        if self.jobs_per_minute > 0:
            await self._take(self._jobs_prefix + user, self.jobs_per_minute, "job submits")

    def open_stream(self, user: str) -> StreamSlot | None:
        """Take one of ``user``'s stream slots in this process (None when streams are not limited)."""
        if self.llm_streams <= 0:
            return None
        open_now = self._streams.get(user, 0)
        if open_now >= self.llm_streams:
            raise RateLimited(
                f"{self.llm_streams} LLM streams are open already; one must end before the next starts",
                code="too_many_streams",
                retry_after=STREAM_RETRY_AFTER_SECONDS,
                extra={"limit": self.llm_streams, "retry_after": STREAM_RETRY_AFTER_SECONDS},
            )
        self._streams[user] = open_now + 1
        return StreamSlot(self, user)

    def _close_stream(self, user: str) -> None:
        open_now = self._streams.get(user, 0) - 1
        if open_now > 0:
            self._streams[user] = open_now
        else:
            self._streams.pop(user, None)

    async def _take(self, key: str, limit: int, what: str) -> None:
        """One permit of ``key``'s window: from what this process holds, else a batch from Redis.

        The first request of a window in this process is served at once and its permit taken in the
        background (the typical user makes a few requests a minute: none of them waits for Redis); when
        Redis then says the window was used up elsewhere, that one request was over the limit, and the
        next ones are refused.
        """
        # A batch on its way: wait for it. A finished one may still be listed (its done callback runs in a
        # later turn of the loop), and awaiting a finished task does not yield: looping on it would spin
        # forever, freezing the process (seen in the LLM benchmark).
        while (pending := self._pending.get(key)) is not None and not pending.done():
            await asyncio.shield(pending)
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now >= window.ends:
            task = asyncio.get_running_loop().create_task(self._fetch(key, limit))
            self._pending[key] = task
            task.add_done_callback(functools.partial(self._forget_fetch, key))
            return
        if window.left > 0:
            window.left -= 1
            return
        if window.left == 0 and await self._fetch(key, limit) != 0:
            return
        window = self._windows[key]
        raise _limited(what, limit, (window.ends - time.monotonic()) * 1000)

    def _forget_fetch(self, key: str, task: asyncio.Task[int | None]) -> None:
        if self._pending.get(key) is task:  # not a newer fetch of the same key
            del self._pending[key]

    async def _fetch(self, key: str, limit: int) -> int | None:
        """A batch of permits from Redis into ``key``'s window, one of them spent by the caller: the permits
        granted (0: the window is used up, and is marked refused), None when Redis did not answer."""
        reply = await self._run(key, limit, max(1, min(limit // BATCH_SHARE, MAX_BATCH)))
        if reply is None:
            return None
        granted, ttl_ms = reply
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now >= window.ends:
            if len(self._windows) >= _PRUNE_AT:
                self._prune(now)
            window = self._windows[key] = _Window(0, now + ttl_ms / 1000)
        if granted == 0:
            window.left = -1
        else:  # batches taken at once by concurrent requests add up
            window.left = max(window.left, 0) + granted - 1
        return granted

    def _prune(self, now: float) -> None:
        self._windows = {key: w for key, w in self._windows.items() if w.ends > now}

    async def _run(self, key: str, limit: int, wanted: int) -> tuple[int, int] | None:
        """The script's {granted, ms left}, or None when Redis is not asked or does not answer."""
        if self._redis is None or (self._paused_until and self._paused()):
            return None
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                granted, ttl_ms = await self._script(keys=(key,), args=(limit, WINDOW_MS, wanted))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        return int(granted), int(ttl_ms)

    def _paused(self) -> bool:
        if time.monotonic() < self._paused_until:
            return True
        self._paused_until = 0.0
        return False

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._paused_until = now + PAUSE_SECONDS
        if self._warnings.ready():
            # The type only: a Redis error's message names the host.
            logger.warning(
                "rate limits are not enforced: Redis did not answer ({}); requests go through unlimited",
                type(exc).__name__,
            )


def _limited(what: str, limit: int, ms_left: float) -> RateLimited:
    retry_after = max(1, math.ceil(ms_left / 1000))
    return RateLimited(
        f"more than {limit} {what} in a minute; retry after {retry_after} s",
        retry_after=retry_after,
        extra={"limit": limit, "window_seconds": WINDOW_MS // 1000, "retry_after": retry_after},
    )


async def limit_job_submits(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the job submit routes, after ``require_user``: runs before the body (an upload) is read."""
    principal: Principal = connection.scope["state"]["principal"]
    limiter: RateLimiter = connection.app.state.services.limiter
    await limiter.check_job_submit(principal.user_id)
