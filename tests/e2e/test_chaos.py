"""Chaos: jobs in flight against a slow fake LLM while a worker process is killed, a private PostgreSQL
is stopped for longer than STALE_JOB_SECONDS and started again, and the service's Redis is killed and
restarted. Every job ends ``succeeded`` exactly once, none is stuck, /health/ready says 503 during each
outage and 200 after, the LLM was asked once per job plus once more only for the jobs the killed
worker process had in flight, and the merged metrics show no message still in progress afterwards (the
killed process's gauge is dropped when the supervisor replaces it).

Everything here is private to the test (its own PostgreSQL via initdb, its own Redis, API and
`xenios-ai worker --processes 2`), so the outages touch nothing else. Counts and recovery times are printed
(``-s``).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.fakes.openrouter import FakeOpenRouter
from tests.support import tokens
from tests.support.jobs import submit_analysis
from tests.support.pgserver import PrivatePostgres
from tests.support.processes import ApiServer, RedisServer, WorkerProcess, wait_until, worker_pids
from xenios_ai.db.migrate import migrate

JOBS = 24
LLM_SECONDS = 2.0
"""Each LLM call hangs this long: the jobs are in flight during the outages."""
STALE = 2.0
PG_OUTAGE = STALE + 2.0


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    directory = Path(tempfile.mkdtemp(prefix="xenios-chaos-"))
    directory.chmod(0o755)  # the server may run as the postgres user
    server = PrivatePostgres(directory / "pg")
    server.init()
    server.start()
    yield server
    server.close()


def _ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/health/ready", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _timed(what: Callable[[], bool], timeout: float, name: str) -> float:
    started = time.monotonic()
    wait_until(what, timeout, name, interval=0.1)
    return time.monotonic() - started


def _in_progress(url: str) -> float:
    """The host's xenios_worker_messages_in_progress, summed (the API merges every process's files)."""
    text = httpx.get(f"{url}/metrics", headers={"X-API-Key": tokens.API_KEY}, timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("xenios_worker_messages_in_progress{")
    )


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_jobs_survive_a_killed_worker_a_database_outage_and_a_redis_restart(
    test_env: dict[str, str],
    private_postgres: PrivatePostgres,
    fake_openrouter: FakeOpenRouter,
    tmp_path: Path,
) -> None:
    database = private_postgres.url
    migrate(database)
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    env = test_env | {
        "DATABASE_URL": database,
        "REDIS_URL": redis_server.url,
        "REDIS_NAMESPACE": f"chaos{uuid.uuid4().hex[:8]}",
        "STALE_JOB_SECONDS": str(STALE),
        "DB_POOL_TIMEOUT_SECONDS": "1",
        "READY_TIMEOUT_SECONDS": "1",
        "METRICS_DIR": str(tmp_path / "metrics"),
    }
    worker = WorkerProcess(
        env, queues="llm,default", processes=2, threads=4, log_path=tmp_path / "worker.log"
    )
    worker.start()
    api = ApiServer(env, log_path=tmp_path / "api.log")
    try:
        launched = time.monotonic()
        api.start()
        first_pids = worker_pids(worker.process, 2, timeout=120)
        wait_until(lambda: _ready(api.url) == 200, 30, "ready")
        started = time.monotonic() - launched
        fake_openrouter.clear()
        markers = [f"chaos-{n}-{uuid.uuid4().hex[:6]}" for n in range(JOBS)]
        trigger = f" [[fake:{json.dumps({'hang': LLM_SECONDS})}]]"
        ids = {}
        for marker in markers:
            response = submit_analysis(
                api.url, {"task": "session_summary", "text": f"Client: {marker}{trigger}"}
            )
            assert response.status_code == 202, response.text
            ids[response.json()["job_id"]] = marker

        # 1. a worker process killed mid-call
        wait_until(lambda: len(fake_openrouter.requests) >= 6, 60, "LLM calls in flight", interval=0.05)
        victim = first_pids[0]
        host = os.uname().nodename
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        in_flight = {
            str(row[0])
            for row in _rows(
                database,
                f"SELECT id FROM ai_backend.jobs WHERE status = 'running' AND worker_id = '{host}:{victim}'",
            )
        }
        restarted = _timed(
            lambda: len(set(worker_pids(worker.process, 2)) - set(first_pids)) >= 1,
            120,
            "a new worker process",
        )

        # 2. PostgreSQL away for longer than STALE_JOB_SECONDS, while results wait to be written
        private_postgres.stop()
        pg_down = _timed(lambda: _ready(api.url) == 503, 30, "ready to say 503 (PostgreSQL)")
        time.sleep(max(0.0, PG_OUTAGE - pg_down))
        private_postgres.start()
        pg_back = _timed(lambda: _ready(api.url) == 200, 60, "ready to say 200 again (PostgreSQL)")

        # 3. the Redis the service uses killed and restarted (its append-only file kept)
        assert redis_server.process is not None
        redis_server.process.kill()
        redis_server.process.wait(10)
        redis_down = _timed(lambda: _ready(api.url) == 503, 30, "ready to say 503 (Redis)")
        redis_server.start()
        redis_back = _timed(lambda: _ready(api.url) == 200, 60, "ready to say 200 again (Redis)")

        def all_done() -> bool:
            rows = _rows(
                database, "SELECT count(*) FROM ai_backend.jobs WHERE status IN ('queued', 'running')"
            )
            return rows[0][0] == 0

        drained = _timed(all_done, 120, "every job to end")
        # no ghost work in progress: the killed process's gauge was dropped when it was replaced
        wait_until(lambda: _in_progress(api.url) == 0, 10, "no message in progress", interval=0.2)
    finally:
        api.stop()
        worker.stop()
        redis_server.stop()

    jobs = {
        str(row[0]): (str(row[1]), int(row[2]))  # type: ignore[call-overload]
        for row in _rows(database, "SELECT id, status, attempts FROM ai_backend.jobs")
    }
    assert set(jobs) == set(ids)
    assert {status for status, _ in jobs.values()} == {"succeeded"}
    rerun = {job_id for job_id, (_, attempts) in jobs.items() if attempts > 1}
    assert rerun <= in_flight  # only the killed process's jobs ran twice: no outage made work run again

    calls = Counter(
        marker
        for request in fake_openrouter.requests
        for marker in markers
        if marker in json.dumps(request.body)
    )
    usage = Counter(
        str(row[0])
        for row in _rows(database, "SELECT job_id FROM ai_backend.llm_requests WHERE status = 'succeeded'")
    )
    for job_id, marker in ids.items():
        if job_id in in_flight:
            assert 1 <= calls[marker] <= 2, (job_id, calls[marker])
            assert 1 <= usage[job_id] <= calls[marker], (job_id, usage[job_id])
        else:
            assert (calls[marker], usage[job_id]) == (1, 1), (job_id, marker)
    extra = sum(calls.values()) - JOBS
    assert extra == sum(1 for job_id in in_flight if calls[ids[job_id]] == 2)
    assert extra <= len(in_flight)
    print(
        f"\nchaos (API and 2 worker processes ready after {started:.1f} s): {JOBS} jobs, {sum(calls.values())} LLM calls ({extra} again after the kill; {len(in_flight)} "
        f"in flight on the killed process), outages: worker kill (new process after {restarted:.1f} s), "
        f"PostgreSQL {PG_OUTAGE:.0f} s (503 after {pg_down:.1f} s, 200 {pg_back:.1f} s after restart), Redis "
        f"kill (503 after {redis_down:.1f} s, 200 {redis_back:.1f} s after restart); all ended "
        f"{time.monotonic() - killed_at:.1f} s after the kill ({drained:.1f} s after the last outage)"
    )
