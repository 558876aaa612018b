"""The PostgreSQL connection pool (psycopg 3, async)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from xenios_ai.errors import XeniosError
from xenios_ai.settings import Settings

Pool = AsyncConnectionPool[AsyncConnection[dict[str, object]]]


def database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise XeniosError("DATABASE_URL is not set", code="database_not_configured")
    return settings.database_url.get()


async def open_pool(settings: Settings, *, wait: bool = False) -> Pool:
    """Open the pool. ``wait=False`` lets the API start while PostgreSQL is still down (ready says 503)."""
    pool: Pool = AsyncConnectionPool(
        database_url(settings),
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        kwargs={"autocommit": True, "row_factory": dict_row, "application_name": "xenios-ai"},
        connection_class=AsyncConnection[dict[str, object]],
        open=False,
        timeout=settings.db_pool_timeout_seconds,
        reconnect_timeout=0,
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=wait)
    return pool
