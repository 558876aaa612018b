"""The Redis client: one connection pool per process, short timeouts so a dead Redis fails fast."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from xenios_ai.errors import XeniosError
from xenios_ai.settings import Settings

Redis = aioredis.Redis


def redis_url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise XeniosError("REDIS_URL is not set", code="redis_not_configured")
    return settings.redis_url.get()


def open_redis(settings: Settings, *, max_connections: int = 64) -> Redis:
    pool = aioredis.ConnectionPool.from_url(
        redis_url(settings),
        max_connections=max_connections,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return aioredis.Redis(connection_pool=pool)


def open_fail_open_redis(settings: Settings, *, connect_timeout: float) -> Redis:
    """A client for checks that must never wait on Redis (rate limits, budgets): no retries, no socket
    timeout (the caller bounds each call with its own deadline), and callers queue for one of 64
    connections instead of failing when all are busy."""
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url(settings),
        max_connections=64,
        timeout=None,
        socket_connect_timeout=connect_timeout,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)
