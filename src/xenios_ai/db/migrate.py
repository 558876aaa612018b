"""Forward-only SQL migrations: ``db/migrations/NNNN_name.sql``, applied in order, each once.

Safe to run twice and from several processes at once: a session-level advisory lock serialises
runners, and each file is applied in its own transaction together with its bookkeeping row. A file
that changed after it was applied is an error (write a new migration instead).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from xenios_ai.errors import XeniosError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x78656E696F73  # "xenios": one lock for every migrator of this schema
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise XeniosError(f"migration file name must look like 0001_name.sql: {path.name}")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise XeniosError("two migration files share a version number")
    return migrations


def migrate(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS ai_backend")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS ai_backend.schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row[0]: row[1]
                for row in conn.execute("SELECT version, checksum FROM ai_backend.schema_migrations")
            }
            for migration in load_migrations(directory):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise XeniosError(
                            f"migration {migration.version:04d}_{migration.name} changed after it was "
                            "applied; migrations are forward-only, add a new file instead",
                            code="migration_changed",
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO ai_backend.schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(f"{migration.version:04d}_{migration.name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
