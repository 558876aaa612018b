"""The README's promise: `xenios-ai dev` on a machine with no services configured serves /health/ready 200."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.processes import free_port, stop_process, wait_until


def test_dev_mode_starts_embedded_services_and_is_ready(tmp_path: Path) -> None:
    port = free_port()
    unset = {"DATABASE_URL", "REDIS_URL", "XENIOS_BACKEND_API_KEY", "SUPABASE_URL", "SUPABASE_JWT_SECRET"}
    env = {k: v for k, v in os.environ.items() if k not in unset} | {
        "ENVIRONMENT": "dev",
        "DATA_DIR": str(tmp_path / "data"),
        "LOG_FORMAT": "json",
    }
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "xenios_ai", "dev", "--no-worker", "--port", str(port)],
            env=env, stdout=out, stderr=out, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 90, "dev mode to be ready", interval=0.25)
        body = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).json()
        assert body["checks"]["postgres"]["status"] == "ok"
        assert body["checks"]["redis"]["status"] == "ok"
        status = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/status", headers={"X-API-Key": "dev-api-key"}, timeout=2
        )
        assert status.status_code == 200
        text = log.read_text()
        assert "DATABASE_URL=" in text
        assert "REDIS_URL=" in text
        assert (tmp_path / "data" / "postgres" / "pgdata" / "PG_VERSION").exists()
    finally:
        stop_process(process, group=True)
