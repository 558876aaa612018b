"""Per-user rate limits, shared by every API process through Redis: 429 with Retry-After past them.

A user (the JWT's ``sub``) may start RATE_LIMIT_LLM_PER_MINUTE LLM requests and make
RATE_LIMIT_JOBS_PER_MINUTE job submits per minute, and hold RATE_LIMIT_LLM_STREAMS LLM streams open at
once. A limit of 0 is off, and so is its check: no Redis call at all.

Windows are fixed minutes per user: one Lua script (EVALSHA, one round trip) INCRements
``<ns>:ratelimit:<llm|jobs>:<user>``, gives the key its expiry on the first hit (PTTL/PEXPIRE: Redis 6.2
has no EXPIRE NX) and returns the verdict with the milliseconds left in the window (Retry-After). Open
streams are leases in the sorted set ``<ns>:ratelimit:streams:<user>`` (score: when the lease ends),
taken in the same script call as the stream's LLM count and given back when the stream ends; a process
that dies mid-stream holds its lease for at most `STREAM_LEASE_SECONDS`.

Redis never decides whether a request is served: when it does not answer within `TIMEOUT_SECONDS` the
request goes through unlimited (fail open), a warning is logged at most every `WARN_EVERY_SECONDS`, and the
limiter leaves Redis alone for `PAUSE_SECONDS`, so a dead Redis adds nothing per request. The limiter has
its own connection pool: blocking (a burst larger than the pool waits for a connection; failing would let
it through), without redis-py's per-command socket timeout (which, on Python 3.11, runs every send as a
task) and without retries; one ``asyncio.timeout`` bounds the whole call instead.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from loguru import logger
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from xenios_ai.db.redis import redis_url
from xenios_ai.errors import RateLimited
from xenios_ai.settings import Settings

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from xenios_ai.api.auth import Principal

WINDOW_MS = 60_000
"""Length of a rate-limit window."""
TIMEOUT_SECONDS = 0.5
"""Longest a request waits for the limiter's Redis before it is let through."""
PAUSE_SECONDS = 2.0
"""After Redis failed to answer, the limiter lets requests through without asking it for this long."""
WARN_EVERY_SECONDS = 60.0
"""At most one warning per process this often while Redis cannot be reached."""
STREAM_LEASE_SECONDS = 600
"""A stream's slot is held at most this long (a longer stream frees it early; a crashed process's slot
comes back after it)."""
STREAM_RETRY_AFTER_SECONDS = 5
"""Retry-After of a stream refused because the user's streams are all busy (when one ends is unknown)."""

_OVER_LIMIT, _NO_STREAM_SLOT = 0, -1

_SCRIPT = """
-- KEYS[1]: the user's counter for this minute; KEYS[2] (streams only): the user's open stream leases.
-- ARGV: limit (0: not counted), window ms, then for streams: max streams, now ms, lease ms, stream id.
-- Returns {1 allowed | 0 over the limit | -1 no free stream slot, ms left in the window}.
local ttl = 0
local limit = tonumber(ARGV[1])
if limit > 0 then
  local count = redis.call('INCR', KEYS[1])
  ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    ttl = tonumber(ARGV[2])
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  if count > limit then
    return {0, ttl}
  end
end
if #KEYS > 1 then
  local now = tonumber(ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
    return {-1, ttl}
  end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return {1, ttl}
"""


class StreamSlot:
    """One open stream's lease; `release` it when the stream ends (it expires on its own otherwise)."""

    __slots__ = ("_key", "_limiter", "_member")

    def __init__(self, limiter: RateLimiter, key: str, member: str) -> None:
        self._limiter = limiter
        self._key = key
        self._member = member

    async def release(self) -> None:
        await self._limiter._release(self._key, self._member)


class RateLimiter:
    """The per-user limits of one API process (see the module docstring); raises `RateLimited`."""

    def __init__(self, settings: Settings) -> None:
        self.llm_per_minute = settings.rate_limit_llm_per_minute
        self.llm_streams = settings.rate_limit_llm_streams
        self.jobs_per_minute = settings.rate_limit_jobs_per_minute
        prefix = f"{settings.redis_namespace}:ratelimit"
        self._llm_prefix = f"{prefix}:llm:"
        self._jobs_prefix = f"{prefix}:jobs:"
        self._streams_prefix = f"{prefix}:streams:"
        self._paused_until = 0.0
        self._warned_at = -math.inf
        self._redis: aioredis.Redis | None = None
        if max(self.llm_per_minute, self.llm_streams, self.jobs_per_minute) > 0:
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
            self._script = self._redis.register_script(_SCRIPT)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def check_llm(self, user: str) -> None:
        """Count one LLM request of ``user``."""
        if self.llm_per_minute > 0:
            await self._count(self._llm_prefix + user, self.llm_per_minute, "LLM requests")

    async def check_job_submit(self, user: str) -> None:
        """Count one job submit of ``user``."""
        if self.jobs_per_minute > 0:
            await self._count(self._jobs_prefix + user, self.jobs_per_minute, "job submits")

    async def open_stream(self, user: str) -> StreamSlot | None:
        """Count one LLM request of ``user`` and take one of their stream slots, in one round trip.

        None when streams are not limited (or Redis did not answer): there is nothing to release.
        """
        if self.llm_streams <= 0:
            await self.check_llm(user)
            return None
        key, member = self._streams_prefix + user, os.urandom(8).hex()
        lease = (self.llm_streams, int(time.time() * 1000), STREAM_LEASE_SECONDS * 1000, member)
        reply = await self._run(
            (self._llm_prefix + user, key), (max(self.llm_per_minute, 0), WINDOW_MS, *lease)
        )
        if reply is None:
            return None
        verdict, ttl_ms = reply
        if verdict == _OVER_LIMIT:
            raise _limited("LLM requests", self.llm_per_minute, ttl_ms)
        if verdict == _NO_STREAM_SLOT:
            raise RateLimited(
                f"{self.llm_streams} LLM streams are open already; one must end before the next starts",
                code="too_many_streams",
                retry_after=STREAM_RETRY_AFTER_SECONDS,
                extra={"limit": self.llm_streams, "retry_after": STREAM_RETRY_AFTER_SECONDS},
            )
        return StreamSlot(self, key, member)

    async def _count(self, key: str, limit: int, what: str) -> None:
        reply = await self._run((key,), (limit, WINDOW_MS))
        if reply is not None and reply[0] == _OVER_LIMIT:
            raise _limited(what, limit, reply[1])

    async def _run(self, keys: tuple[str, ...], args: tuple[int | str, ...]) -> tuple[int, int] | None:
        """The script's {verdict, ms left}, or None when Redis is not asked or does not answer."""
        if self._redis is None or (self._paused_until and self._paused()):
            return None
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                verdict, ttl_ms = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        return int(verdict), int(ttl_ms)

    async def _release(self, key: str, member: str) -> None:
        if self._redis is None or (self._paused_until and self._paused()):
            return
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await self._redis.zrem(key, member)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    def _paused(self) -> bool:
        if time.monotonic() < self._paused_until:
            return True
        self._paused_until = 0.0
        return False

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._paused_until = now + PAUSE_SECONDS
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            # The type only: a Redis error's message names the host.
            logger.warning(
                "rate limits are not enforced: Redis did not answer ({}); requests go through unlimited",
                type(exc).__name__,
            )


def _limited(what: str, limit: int, ttl_ms: int) -> RateLimited:
    retry_after = max(1, math.ceil(ttl_ms / 1000))
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
