"""Metrics across real processes: two Granian API workers and a worker group merged by /metrics, the
worker's own metrics port, and what a job leaves behind (metrics, log context, its log lines)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis
from litestar.testing import AsyncTestClient

from tests.integration.test_metrics import value
from tests.support import tokens
from tests.support.config import make_settings
from tests.support.processes import ApiServer, free_port, start_worker
from xenios_ai.api.app import create_app
from xenios_ai.observability.joblog import log_key

KEY = {"X-API-Key": tokens.API_KEY}


def _record_in(directory: Path, code: str) -> None:
    """Run ``code`` in a separate process writing its metrics to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run(
        [sys.executable, "-c", f"from xenios_ai.observability import metrics\n{code}"], env=env, check=True
    )


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_api_workers_and_the_host_s_worker_groups_are_merged(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "metrics"
    dead = root / f"worker-{_dead_pid()}"
    live = root / f"worker-{os.getpid()}"  # this test process stands in for a running worker command
    _record_in(dead, 'metrics.WORKER_MESSAGES.labels("llm", "job_analysis", "ok").inc(100)')
    _record_in(live, 'metrics.WORKER_MESSAGES.labels("llm", "job_analysis", "ok").inc(3)')
    server = ApiServer({**test_env, "METRICS_DIR": str(root)}, workers=2)
    server.start()
    try:
        assert server.process is not None
        group = root / f"api-{server.process.pid}"
        assert group.is_dir()
        assert not dead.exists(), "a stopped command's group is removed at start"
        assert live.is_dir()

        def scrape() -> str:
            response = httpx.get(f"{server.url}/metrics", headers=KEY, timeout=10)
            assert response.status_code == 200, response.text
            return response.text

        before = scrape()
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # until both Granian workers have served requests (each writes files named by its pid)
            while len({p.name.rsplit("_", 1)[1] for p in group.glob("histogram_*.db")}) < 2 and sent < 2000:
                statuses = list(
                    pool.map(lambda _: httpx.get(f"{server.url}/health/live").status_code, range(40))
                )
                assert statuses == [200] * 40
                sent += 40
        assert len({p.name.rsplit("_", 1)[1] for p in group.glob("histogram_*.db")}) == 2
        after = scrape()
    finally:
        server.stop()

    labels = {"method": "GET", "route": "/health/live", "status": "200"}
    served = value(after, "xenios_http_requests_total", **labels) - value(
        before, "xenios_http_requests_total", **labels
    )
    assert served == sent
    assert value(after, "xenios_worker_messages_total", queue="llm", actor="job_analysis", outcome="ok") == 3


async def test_a_job_s_worker_metrics_log_context_and_log_lines(
    fresh_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    port = free_port()
    env = fresh_env(
        WORKER_METRICS_PORT=str(port), METRICS_DIR=str(tmp_path / "metrics"), WEBHOOK_ALLOW_PRIVATE="true"
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, queues="llm,default")
    try:
        async with AsyncTestClient(create_app(make_settings(env))) as client:
            submitted = await client.post(
                "/api/v1/jobs/analysis",
                json={"task": "session_summary", "text": f"A session {uuid.uuid4()}."},
                headers=tokens.headers(),
            )
            assert submitted.status_code == 202
            job_id = submitted.json()["job_id"]
            job: dict[str, Any] = {}
            for _ in range(400):
                job = (await client.get(f"/api/v1/jobs/{job_id}", headers=tokens.headers())).json()
                if job["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
            assert job["status"] == "succeeded", job
        url = f"http://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient() as http:
            assert (await http.get(url)).status_code == 401
            assert (await http.get(url, headers={"Authorization": "Bearer wrong"})).status_code == 401
            text = ""
            for _ in range(100):  # the message's own bookkeeping ends just after the job's row does
                text = (await http.get(url, headers=KEY)).text
                if value(
                    text, "xenios_worker_messages_total", queue="llm", actor="job_analysis", outcome="ok"
                ):
                    break
                await asyncio.sleep(0.05)
        lines = await _wait_for_job_log(env, job_id)
    finally:
        worker.stop()

    assert value(text, "xenios_worker_messages_total", queue="llm", actor="job_analysis", outcome="ok") == 1
    assert value(text, "xenios_worker_message_duration_seconds_count", queue="llm", actor="job_analysis") == 1
    assert value(text, "xenios_worker_messages_in_progress", queue="llm", actor="job_analysis") == 0
    assert value(text, "xenios_job_attempts_total", kind="analysis", queue="llm", outcome="succeeded") == 1
    assert value(text, "xenios_job_attempt_duration_seconds_count", kind="analysis", queue="llm") == 1
    assert value(text, "xenios_job_queue_wait_seconds_count", kind="analysis", queue="llm") == 1
    opus = {"task": "session_summary", "model": "anthropic/claude-opus-4.5"}
    assert value(text, "xenios_llm_requests_total", outcome="succeeded", **opus) == 1
    assert "xenios_http_requests_total{" not in text, "a worker serves its own processes' metrics only"
    assert "xenios_jobs{" not in text

    assert "imported before its multi-process directory" not in log.read_text()

    # every line a job actor wrote carries the job's id, kind and queue
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    actor_lines = [r for r in records if str(r.get("actor", "")).startswith("job_")]
    assert actor_lines, "the worker logged nothing while running the job"
    assert [r for r in actor_lines if not (r.get("job_id") and r.get("kind") and r.get("queue"))] == []
    mine = [r for r in actor_lines if r["job_id"] == job_id]
    assert {(r["kind"], r["queue"]) for r in mine} == {("analysis", "llm")}
    assert any("succeeded" in r["msg"] for r in mine)
    assert all(r.get("job_id") == job_id for r in records if job_id in r["msg"] and r.get("actor"))

    # ... and its lines at INFO and up are kept for the dashboard, without secrets
    assert any("succeeded" in line["msg"] for line in lines)
    assert all(line["level"] in ("INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL") for line in lines)
    assert tokens.API_KEY not in json.dumps(lines)

    # ... and `xenios-ai logs --job` finds them in the stream
    shown = subprocess.run(
        [sys.executable, "-m", "xenios_ai", "logs", "--job", job_id[:8], str(log)],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert shown
    assert all(f"job={job_id}" in line for line in shown)
    assert any("kind=analysis queue=llm" in line and "succeeded" in line for line in shown)


async def _wait_for_job_log(env: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        for _ in range(100):
            raw = client.lrange(log_key(env["REDIS_NAMESPACE"], job_id), 0, -1)
            if any(b"succeeded" in line for line in raw):
                return [json.loads(line) for line in raw]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no log lines of job {job_id} in Redis")
    finally:
        client.close()
