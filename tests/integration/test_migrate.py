"""Migrations: forward-only, idempotent, safe from two processes at once."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.databases import fresh_database
from xenios_ai.db.migrate import load_migrations, migrate
from xenios_ai.errors import XeniosError


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    with fresh_database(postgres_server_url, f"xenios_mig_{uuid.uuid4().hex[:8]}", migrated=False) as url:
        yield url


def applied(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM ai_backend.schema_migrations ORDER BY 1")]


def test_migrate_applies_everything_once(empty_database: str) -> None:
    names = migrate(empty_database)
    assert names == [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    assert migrate(empty_database) == []
    assert applied(empty_database) == [m.version for m in load_migrations()]


def test_two_processes_at_once(empty_database: str) -> None:
    code = "import sys; from xenios_ai.db.migrate import migrate; print(len(migrate(sys.argv[1])))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, empty_database], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    counts = sorted(int(p.communicate(timeout=60)[0].strip()) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert counts == [0, len(load_migrations())]  # one did the work, the other found nothing to do
    assert applied(empty_database) == [m.version for m in load_migrations()]


def test_a_changed_migration_is_refused(empty_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE ai_backend.t1 (id int);")
    migrate(empty_database, tmp_path)
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE ai_backend.t1 (id bigint);")
    with pytest.raises(XeniosError, match="forward-only"):
        migrate(empty_database, tmp_path)


def test_a_failing_migration_leaves_nothing_half_done(empty_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ai_backend.ok (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE ai_backend.half (id int); SELECT * FROM nowhere;")
    with pytest.raises(psycopg.errors.UndefinedTable):
        migrate(empty_database, tmp_path)
    with psycopg.connect(empty_database) as conn:
        tables = {
            r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'ai_backend'")
        }
    assert "ok" in tables
    assert "half" not in tables
    assert applied(empty_database) == [1]
