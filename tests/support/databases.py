"""PostgreSQL and Redis for tests and benchmarks: the machine's servers (XENIOS_TEST_DATABASE_URL /
XENIOS_TEST_REDIS_URL, as CI sets them) or embedded ones, and fresh databases on them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import redis
from psycopg.conninfo import make_conninfo

from xenios_ai.db.migrate import migrate
from xenios_ai.embedded import Embedded, start_postgres, start_redis

_EMBEDDED: list[Embedded] = []
"""The embedded servers started here: they run until this process exits."""


def postgres_server_url(folder: Path) -> str:
    """XENIOS_TEST_DATABASE_URL, else the URL of an embedded server with its data in ``folder``."""
    return os.environ.get("XENIOS_TEST_DATABASE_URL") or _started(start_postgres, folder)


def redis_server_url(folder: Path) -> str:
    """XENIOS_TEST_REDIS_URL, else the URL of an embedded server with its data in ``folder``."""
    return os.environ.get("XENIOS_TEST_REDIS_URL") or _started(start_redis, folder)


def _started(start: Callable[[Path], Embedded], folder: Path) -> str:
    _EMBEDDED.append(server := start(folder))
    return server.url


def create_database(server_url: str, name: str, *, migrated: bool = True) -> str:
    """Create database ``name`` on the server (and migrate it); its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(server_url, dbname=name)
    if migrated:
        migrate(url)
    return url


def drop_databases(server_url: str, *names: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(server_url: str, name: str, *, migrated: bool = True) -> Iterator[str]:
    """A new database's URL (migrated unless told otherwise), dropped afterwards."""
    url = create_database(server_url, name, migrated=migrated)
    try:
        yield url
    finally:
        drop_databases(server_url, name)


def delete_redis_keys(redis_url: str, pattern: str) -> None:
    """Delete every key matching ``pattern`` (e.g. a namespace's ``prefix:*``)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
